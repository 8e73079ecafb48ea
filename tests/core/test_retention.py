"""The budgets of all stores together (core/retention.py), on real logs.

Memory: a finished store keeps nothing its log holds, running ones share one
budget, and every chunk stays readable. Disk: finished logs go first, then
the head of the largest running ones becomes a hole; `first_seq` says exactly
what went, also to a successor that scans the log, and a reader that was
reading while the head moved never returns a byte of the hole.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from jupyter_exec.core import output
from jupyter_exec.core.output import OutputStore
from jupyter_exec.core.retention import PROCESS_COST, Retention, size_setting, water_level

KiB, MiB = 1 << 10, 1 << 20


def payload(seq: int, size: int = 32 * KiB) -> bytes:
    """Bytes that say which chunk they are (a chunk from the wrong place shows)."""
    return (b"%08d" % seq) * (size // 8)


def fill(store: OutputStore, first: int, count: int, size: int = 32 * KiB) -> None:
    for seq in range(first, first + count):
        store.append(seq, "stdout", payload(seq, size))


def read_all(store: OutputStore) -> list[int]:
    """Every readable seq, paging as a client does; each chunk checked against its seq."""
    seqs, cursor = [], 0
    while page := store.read(cursor, 256 * KiB):
        for chunk in page:
            assert chunk.data == payload(chunk.seq, len(chunk.data)), chunk.seq
            seqs.append(chunk.seq)
        cursor = page[-1].seq
    return seqs


def on_disk(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_water_level() -> None:
    assert water_level([100, 50, 10], 60) == 45  # 100 -> 45 and 50 -> 45 free 60
    assert water_level([100, 50, 10], 50) == 50
    assert water_level([100, 50, 10], 500) == 0
    assert water_level([], 10) == 0
    assert water_level([7], 0) == 7


def test_sizes_are_bytes_or_a_share_of_the_filesystem() -> None:
    assert size_setting(1234, 10_000) == 1234
    assert size_setting("10%", 10_000) == 1000
    assert size_setting("2.5%", 10_000) == 250
    for bad in ("10", "110%", "ten%"):
        with pytest.raises(ValueError, match="neither a number of bytes nor a percentage"):
            size_setting(bad, 10_000)


def test_a_finished_store_serves_its_output_from_its_log(tmp_path: Path) -> None:
    budget = Retention(memory_bytes=64 * MiB)
    store = OutputStore(tmp_path / "a.log", MiB, 1 << 30, budget=budget)
    fill(store, 1, 20)
    assert budget.memory_used == PROCESS_COST + store.memory_bytes > 640 * KiB
    budget.finish(store)
    assert store.memory_bytes == 0 and budget.memory_used == PROCESS_COST
    assert read_all(store) == list(range(1, 21)) and store.first_seq == 1
    store.close(remove=True)
    assert budget.memory_used == 0 and budget.log_bytes == 0


def test_running_stores_share_the_memory_budget_and_lose_nothing(tmp_path: Path) -> None:
    budget = Retention(memory_bytes=MiB)
    stores = [OutputStore(tmp_path / f"{i}.log", MiB, 1 << 30, budget=budget) for i in range(4)]
    for round_ in range(10):  # 4 x 320 KiB, each store alone within its own 1 MiB
        for store in stores:
            fill(store, round_ * 10 + 1, 10)
            assert budget.memory_used <= MiB + 32 * KiB + 128
    assert budget.memory_used <= MiB
    for store in stores:
        assert 0 < store.memory_bytes < MiB // 2  # the biggest gave first: none has it all
        assert read_all(store) == list(range(1, 101)) and store.first_seq == 1
        store.close(remove=True)


def test_chunks_no_log_holds_go_last_and_first_seq_says_so(tmp_path: Path) -> None:
    budget = Retention(memory_bytes=256 * KiB)
    unlogged = OutputStore(None, MiB, 0, budget=budget)  # no log at all
    fill(unlogged, 1, 10)  # over the budget, but a running process's: kept
    budget.finish(unlogged)
    assert read_all(unlogged) == list(range(1, 11))
    running = OutputStore(tmp_path / "r.log", MiB, 1 << 30, budget=budget)
    fill(running, 1, 30)  # its own chunks go first (its log holds them), then those
    assert budget.memory_used <= 256 * KiB
    assert 1 < unlogged.first_seq <= 10
    assert read_all(unlogged) == list(range(unlogged.first_seq, 11))
    assert read_all(running) == list(range(1, 31))
    for store in (unlogged, running):
        store.close(remove=True)


def test_finished_logs_go_first_then_the_heads_of_running_ones(tmp_path: Path) -> None:
    budget = Retention(logs_max_use=4 * MiB)
    done = OutputStore(tmp_path / "done.log", MiB, 1 << 30, budget=budget)
    fill(done, 1, 40)  # 1.25 MiB
    budget.finish(done)
    running = [OutputStore(tmp_path / f"{i}.log", MiB, 1 << 30, budget=budget) for i in range(2)]
    fill(running[0], 1, 60)  # 1.9 MiB: 3.1 MiB in all, within the budget
    assert done.first_seq == 1 and read_all(done) == list(range(1, 41))
    fill(running[1], 1, 60)  # 5 MiB: the finished log goes, and is enough
    assert read_all(done) == [] and done.first_seq == 41 and done.last_seq == 40
    assert on_disk(tmp_path / "done.log") <= 4 * KiB
    assert [s.first_seq for s in running] == [1, 1]
    fill(running[0], 61, 100)  # then the running ones: the larger first
    assert budget.log_bytes <= 4 * MiB
    assert sum(on_disk(tmp_path / f"{i}.log") for i in range(2)) <= 4 * MiB + 16 * KiB
    big, small = running
    assert big.first_seq > small.first_seq >= 1
    assert read_all(big) == list(range(big.first_seq, 161))  # the newest is all there
    assert read_all(small) == list(range(small.first_seq, 61))
    for store in (done, *running):
        store.close(remove=True)
    assert budget.log_bytes == 0 and budget.memory_used == 0


def test_a_cut_log_reads_the_same_to_a_successor(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    store = OutputStore(path, 64 * KiB, 1 << 30, splice=True)
    fill(store, 1, 100)
    store.cut_head(MiB)
    first = store.first_seq
    assert 60 < first < 75 and on_disk(path) < 1.2 * MiB
    assert read_all(store) == list(range(first, 101))
    store.close(remove=False)
    again = OutputStore.reopen(path, 64 * KiB, 1 << 30)  # the running process, adopted
    assert (again.first_seq, again.last_seq, read_all(again)) == (first, 100, read_all(again))
    assert read_all(again) == list(range(first, 101))
    fill(again, 101, 5)  # and it goes on where it was
    again.cut_head(0)  # the last index entry and what follows stay
    assert again.first_seq > first and read_all(again)[-1] == 105
    assert again.log_bytes <= output.INDEX_SPACING + 6 * (32 * KiB + 13)
    again.close(remove=False)
    recovered = OutputStore.recover(path, 64 * KiB)  # after a restart, finished
    assert recovered.first_seq == again.first_seq
    assert read_all(recovered) == list(range(again.first_seq, 106))
    recovered.drop_log()
    recovered.close(remove=False)
    gone = OutputStore.recover(path, 64 * KiB)
    assert (gone.first_seq, gone.last_seq, read_all(gone)) == (106, 105, [])
    assert path.stat().st_size == 13
    gone.close(remove=True)


def test_a_reader_in_a_thread_never_returns_the_hole(tmp_path: Path) -> None:
    """A `LogRange` is fixed on the loop and read in a thread, maybe after a cut."""
    store = OutputStore(tmp_path / "x.log", 32 * KiB, 1 << 30)
    fill(store, 1, 100)
    span = store.log_range(0, None, 100 * MiB)
    assert span is not None and span.start == 0
    store.cut_head(MiB)
    chunks, cut = span.read()
    assert [c.seq for c in chunks] == list(range(store.first_seq, 100)) and not cut
    assert all(c.data == payload(c.seq) for c in chunks)
    store.drop_log()
    assert span.read() == ([], False)
    store.close(remove=True)


def test_keep_free_cuts_what_the_filesystem_lacks(tmp_path: Path) -> None:
    """`logs_keep_free` of 100 %: no filesystem has that, so everything goes that can."""
    budget = Retention(logs_keep_free="100%")
    assert budget.log_limit(tmp_path) == 0
    done = OutputStore(tmp_path / "done.log", MiB, 1 << 30, budget=budget)
    fill(done, 1, 4)
    budget.finish(done)
    store = OutputStore(tmp_path / "x.log", MiB, 1 << 30, budget=budget)
    fill(store, 1, 200)
    assert done.first_seq == 5 and read_all(done) == []
    assert store.log_bytes <= output.INDEX_SPACING + 2 * (32 * KiB + 13)
    assert read_all(store)[-1] == 200
    for s in (done, store):
        s.close(remove=True)


@pytest.mark.parametrize("seed", range(40))
def test_paging_after_cuts_returns_exactly_what_is_after_first_seq(
    tmp_path: Path, seed: int
) -> None:
    """Random chunk sizes, cuts while appending and after, and memory budgets."""
    rng = random.Random(seed)
    sizes = [rng.choice([1, 100, 5000, 40_000]) for _ in range(rng.randint(1, 80))]
    keeps = [rng.randint(0, 1 << 20) for _ in range(rng.randint(0, 4))]
    output.INDEX_SPACING = 8 * KiB  # many places to cut at
    path = tmp_path / "x.log"
    store = OutputStore(path, rng.choice([0, 4 * KiB, 1 << 20]), 1 << 30)
    try:
        for seq, size in enumerate(sizes, 1):
            store.append(seq, "stdout", payload(seq, max(8, size)))
            if keeps and seq % 20 == 0:
                store.cut_head(keeps.pop())
        for keep in keeps:
            store.cut_head(keep)
        assert read_all(store) == list(range(store.first_seq, len(sizes) + 1))
        assert os.path.getsize(path) == store._log_size  # the tail never moved
    finally:
        output.INDEX_SPACING = 64 * KiB
        store.close(remove=True)


def test_the_standalone_server_takes_the_budgets_as_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from jupyter_exec.rpc.service import build_service
    from jupyter_exec.transports.serve import build_parser, config_from_args

    options = ["--logs-max-use", "5%", "--logs-keep-free", "1000", "--retained-bytes-total", "7"]
    config = config_from_args(build_parser().parse_args(options))
    retention = build_service(config).registry.retention
    assert (retention.logs_max_use, retention.logs_keep_free) == ("5%", 1000)
    assert retention.memory_limit == 7
    defaults = build_service(config_from_args(build_parser().parse_args([]))).registry.retention
    assert (defaults.logs_max_use, defaults.logs_keep_free) == ("10%", "15%")
    assert defaults.memory_limit == 64 * MiB
    for bad in ("lots", "120%", "-5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--logs-max-use", bad])
        assert "neither a number of bytes nor a percentage" in capsys.readouterr().err
