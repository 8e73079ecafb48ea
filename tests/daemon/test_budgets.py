"""The daemon's budgets for retained output (core/retention.py), with real processes.

Disk: five `yes` on a small filesystem keep their logs within `logs_max_use`,
the newest output of each stays readable, `firstSeq` says exactly where it
starts, a file written beside the logs still fits, and `logs_keep_free` is
kept once that file took the room. Memory: 600 finished processes cost the
daemon no more than its budget, and every byte of each is still readable
(bench/retention.py runs 2,000, which takes a minute).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.client import ExecClient
from jupyter_exec.client.unix_transport import connect_daemon, daemon_front
from jupyter_exec.config import DaemonSettingsError, load_daemon_settings
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import DaemonStartError, ensure_daemon
from tests.daemon.harness import daemon_pid, daemon_settings, kill_daemon
from tests.reliability.test_faults import tiny_tmpfs

MiB = 1 << 20


async def connect(runtime: Path) -> ExecClient:
    ensure_daemon(runtime)
    return await connect_daemon(paths.socket_path(runtime), front=daemon_front("budget tests"))


def used(path: Path) -> int:
    """Bytes allocated under `path` (a hole counts for nothing)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1]) / 1024


def test_budget_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.json"
    good = {"logs_max_use": "5%", "logs_keep_free": 1 << 30, "retained_bytes_total": 1 << 20}
    path.write_text(json.dumps(good))
    settings, sources = load_daemon_settings([path])
    assert (settings.logs_max_use, settings.logs_keep_free) == ("5%", 1 << 30)
    assert sources["retained_bytes_total"] == str(path)
    for bad in ("lots", "120%", -1, True, 1.5):
        path.write_text(json.dumps({"logs_max_use": bad}))
        with pytest.raises(DaemonSettingsError, match="logs_max_use must be a number of bytes"):
            load_daemon_settings([path])
    # A daemon does not start on it, and says why.
    daemon_settings(monkeypatch, tmp_path / "config", logs_keep_free="all of it")
    with pytest.raises(DaemonStartError, match="logs_keep_free must be a number of bytes"):
        ensure_daemon(tmp_path / "runtime")


async def test_logs_stay_within_their_budget_and_leave_room(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 50 * MiB
    with tiny_tmpfs("160m") as disk:
        settings = {"log_dir": str(disk), "logs_max_use": budget, "logs_keep_free": "15%"}
        daemon_settings(monkeypatch, runtime.parent / f"{runtime.name}-config", **settings)
        c = await connect(runtime)
        follower = await connect(runtime)
        try:
            await _fill_and_check(c, follower, disk, budget)
        finally:
            await follower.close()
            await c.close()
        # The next daemon finds where each cut log starts (the record at offset 0).
        kill_daemon(runtime)
        c = await connect(runtime)
        try:
            for info in await c.list():
                assert info.state == "running" and info.first_seq > 1, info
                first = await c.read(info.process_id, 0, max_bytes=1)
                assert first.chunks[0].seq == first.first_seq
                assert set(first.chunks[0].data.split(b"\n")[:-1]) == {b"y"}
                await c.terminate(info.process_id, 0)
        finally:
            await c.close()


async def _fill_and_check(c: ExecClient, follower: ExecClient, disk: Path, budget: int) -> None:
    seen: list[tuple[int, bytes]] = []  # what a lagging subscriber of yes0 receives

    def listen(method: str, params: dict[str, Any]) -> None:
        if method == "process/output" and params["processId"] == "yes0":
            seen.append((params["seq"], base64.b64decode(params["chunk"])))

    follower.listeners.append(listen)
    ids = [f"yes{i}" for i in range(5)]
    for process_id in ids:
        await c.start(process_id, ["yes"])
        await c.request("process/unsubscribe", {"processId": process_id})
    await follower.request("process/subscribe", {"processId": "yes0", "afterSeq": 0})
    peak, deadline = 0, time.monotonic() + 8
    while time.monotonic() < deadline:
        peak = max(peak, used(disk))
        await asyncio.sleep(0.1)
    # Within the budget (give or take the blocks a cut leaves: the first, the last).
    assert peak <= budget + MiB, peak
    infos = {p.process_id: p for p in await c.list()}
    for process_id in ids:
        info = infos[process_id]
        assert info.state == "running" and info.failure is None, info
        assert info.first_seq > 1  # a cut: the client knows exactly what went
        first = await c.read(process_id, 0, max_bytes=1)
        assert first.chunks[0].seq == first.first_seq >= info.first_seq  # the rest is there
        newest = await c.read(process_id, info.next_seq - 3)
        assert newest.chunks and newest.chunks[0].seq > info.next_seq - 3
        for chunk in first.chunks + newest.chunks:
            assert set(chunk.data.split(b"\n")[:-1]) == {b"y"}
    # A file beside the logs still fits: without the budget, five `yes` fill 160 MiB
    # in about a second, and the user's notebooks could no longer be saved.
    beside = disk / "notebook.ipynb"
    fd = os.open(beside, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(90):
            assert os.write(fd, bytes(MiB)) == MiB
    finally:
        os.close(fd)
    # Now the filesystem has less than `logs_keep_free` free: the logs give it back.
    st = os.statvfs(disk)
    keep_free = st.f_blocks * st.f_frsize * 15 // 100
    await asyncio.sleep(2)
    st = os.statvfs(disk)
    assert st.f_bavail * st.f_frsize >= keep_free - 4 * MiB
    # The lagging subscriber got chunks in seq order, each real output, never a hole.
    assert seen and all(a[0] < b[0] for a, b in itertools.pairwise(seen))
    assert all(set(data.split(b"\n")[:-1]) == {b"y"} for _, data in seen)


def lines(first: int, last: int) -> bytes:
    """What `seq -f %015g FIRST LAST` prints: 16 bytes a line."""
    return b"".join(b"%015d\n" % n for n in range(first, last + 1))


async def everything_from_the_start(c: ExecClient, process_id: str) -> tuple[int, bytes]:
    """`firstSeq` and all readable output, paged from seq 0; no chunk below `firstSeq`."""
    data, after, first_seq = b"", 0, 0
    while page := await c.read(process_id, after, max_bytes=64 << 10):
        if not page.chunks:
            break
        first_seq = first_seq or page.first_seq
        assert page.first_seq == first_seq  # nothing more went meanwhile (the process sleeps)
        if after == 0:
            assert page.chunks[0].seq == first_seq > 1, (page.chunks[0].seq, first_seq)
        assert all(ch.seq >= first_seq for ch in page.chunks)
        data += b"".join(ch.data for ch in page.chunks)
        after = page.chunks[-1].seq
    return first_seq, data


async def test_a_flood_past_its_log_cap_keeps_its_newest_output_across_a_kill(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-process cap cuts the log's head, as the disk budget does, instead of
    stopping the log: the newest output stays on disk, where a SIGKILL cannot take it
    (before: a stopped log kept later output in memory only; the next daemon reported
    one `firstSeq` and returned chunks below it)."""
    cap = 256 << 10
    config = runtime.parent / f"{runtime.name}-config"
    daemon_settings(
        monkeypatch, config, log_bytes_per_process=cap, retained_bytes_per_process=32 << 10
    )
    burst = "seq -f %015g {} {}"
    script = f"{burst.format(1, 60000)}; read x; {burst.format(60001, 120000)}; exec sleep 60"
    c = await connect(runtime)
    try:
        await c.start("flood", ["sh", "-c", script], pipe_stdin=True)
        await _wait_output(c, "flood", 60000)
        first_seq, data = await everything_from_the_start(c, "flood")
        assert cap // 2 <= len(data) <= cap and lines(1, 60000).endswith(data)
        assert (await c.list())[0].failure is None  # nothing went that firstSeq does not say
    finally:
        await c.close()
    kill_daemon(runtime)
    c = await connect(runtime)
    try:  # the next daemon serves the same, and cuts on as the process floods again
        assert await everything_from_the_start(c, "flood") == (first_seq, data)
        await c.write("flood", b"go\n")
        await _wait_output(c, "flood", 120000)
        first_seq, data = await everything_from_the_start(c, "flood")
        assert cap // 2 <= len(data) <= cap and lines(60001, 120000).endswith(data)
        await c.terminate("flood", 0)
    finally:
        await c.close()


async def _wait_output(c: ExecClient, process_id: str, last: int) -> None:
    """Until line `last` came (output_bytes counts only the log's bytes after a restart)."""
    deadline = time.monotonic() + 30
    while True:
        info = (await c.list())[0]
        newest = await c.read(process_id, max(0, info.next_seq - 2))
        if newest.data.endswith(lines(last, last)):
            return
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.05)


#: Lines of `seq -f PREFIX-%010g`: 17 bytes each, 200,005 bytes in all.
LINES = 11765
FINISHED = 600


def expected(i: int) -> bytes:
    return b"".join(b"%05d-%010d\n" % (i, n) for n in range(1, LINES + 1))


async def test_finished_processes_cost_no_more_than_the_memory_budget(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 16 * MiB  # a quarter of the default: 600 processes' bookkeeping is 7 MiB of it
    config = runtime.parent / f"{runtime.name}-config"
    daemon_settings(monkeypatch, config, retained_bytes_total=budget)
    c = await connect(runtime)
    try:
        pid = daemon_pid(runtime)
        assert pid is not None
        await _finish(c, range(32))  # every code path has run once
        baseline = rss_mib(pid)
        await _finish(c, range(32, FINISHED))
        after = rss_mib(pid)
        # Before the budget: about 140 MiB more (bench/retention.py).
        assert after <= baseline + budget / MiB, (baseline, after)
        infos = await c.list()
        assert len(infos) == FINISHED
        assert all(p.output_bytes == len(expected(0)) and p.first_seq == 1 for p in infos)
        for i in range(0, FINISHED, 29):  # a sample, every byte from seq 1
            data, after_seq = b"", 0
            while chunks := (await c.read(f"p{i}", after_seq)).chunks:
                data += b"".join(ch.data for ch in chunks)
                after_seq = chunks[-1].seq
            assert data == expected(i), i
        assert rss_mib(pid) <= baseline + budget / MiB
    finally:
        await c.close()


async def _finish(c: ExecClient, numbers: range) -> None:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            argv = ["seq", "-f", f"{i:05d}-%010g", "1", str(LINES)]
            await c.start(f"p{i}", argv)
            await c.request("process/unsubscribe", {"processId": f"p{i}"})
            assert (await c.wait(f"p{i}", 120)).exit_code == 0

    await asyncio.gather(*(one(i) for i in numbers))
