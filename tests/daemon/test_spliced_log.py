"""The daemon's output log: spliced from the pipe, and reopened by the next daemon.

A daemon killed while it logs leaves either a header whose bytes are still in
the pipe (dropped) or a record cut short (kept, its header fixed); the next
daemon's seqs go on after the last record (core/output.py).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from jupyter_exec.core.log_records import STREAM_CODES
from jupyter_exec.core.output import OutputStore
from jupyter_exec.core.retention import Retention

HEADER = struct.Struct("<QBI")


def record(seq: int, data: bytes, length: int | None = None) -> bytes:
    return HEADER.pack(seq, STREAM_CODES["stdout"], len(data) if length is None else length) + data


def chunks(store: OutputStore) -> list[tuple[int, bytes]]:
    return [(c.seq, c.data) for c in store.read(0, 1 << 20)]


def test_splice_moves_bytes_from_the_pipe_into_records(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "x.log", 1 << 20, 1 << 30, splice=True)
    r, w = os.pipe()
    os.write(w, b"a" * 10 + b"b" * 5)
    assert store.splice_run(1, "stdout", r, 15, chunk=10) == [b"a" * 10, b"b" * 5]
    os.write(w, b"tail")
    assert store.splice_run(3, "stdout", r, 4, chunk=10) == [b"tail"]
    store.close(remove=False)
    again = OutputStore.reopen(tmp_path / "x.log", 1 << 20, 1 << 30)
    assert chunks(again) == [(1, b"a" * 10), (2, b"b" * 5), (3, b"tail")]
    assert again.last_seq == 3 and again.total_bytes == 19
    os.close(r)
    os.close(w)


def test_a_log_cut_inside_a_record_keeps_its_bytes_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(record(1, b"whole\n") + record(2, b"half", length=10))
    store = OutputStore.reopen(path, 1 << 20, 1 << 30)
    assert chunks(store) == [(1, b"whole\n"), (2, b"half")]
    store.append(3, "stdout", b"next\n")  # the next daemon's seqs go on
    store.close(remove=False)
    assert chunks(OutputStore.recover(path, 1 << 20)) == [
        (1, b"whole\n"),
        (2, b"half"),
        (3, b"next\n"),
    ]


def test_a_header_without_bytes_is_dropped(tmp_path: Path) -> None:
    # Its bytes were still in the pipe when the daemon died: the next one logs them.
    path = tmp_path / "x.log"
    for torn in (record(2, b"", length=7), record(2, b"")[:5]):  # a header, or part of one
        path.write_bytes(record(1, b"one\n") + torn)
        store = OutputStore.reopen(path, 1 << 20, 1 << 30)
        assert (chunks(store), store.last_seq) == ([(1, b"one\n")], 1)
        assert path.stat().st_size == len(record(1, b"one\n"))
        store.close(remove=False)


def test_splice_past_the_log_cap_cuts_the_head(tmp_path: Path) -> None:
    """The newest bytes stay; where holes cannot be made, the log stops instead and
    the next splice is refused (the bytes stay in the pipe for the caller to read)."""
    store = OutputStore(tmp_path / "x.log", 1 << 20, 40, splice=True)
    r, w = os.pipe()
    os.write(w, b"abcdefghij" * 3)
    assert store.splice_run(1, "stdout", r, 30, chunk=10) == [b"abcdefghij"] * 3
    assert store.log_bytes <= 40 and store.first_seq == 3  # 3 headers + 30 > 40
    assert chunks(store) == [(3, b"abcdefghij")]
    store.close(remove=True)
    flat = Retention()
    flat._punch[tmp_path] = False  # as on a filesystem without holes
    store = OutputStore(tmp_path / "y.log", 1 << 20, 40, splice=True, budget=flat)
    os.write(w, b"x" * 30)
    assert store.splice_run(1, "stdout", r, 30, chunk=10) == [b"x" * 10] * 3
    assert store.failure and "limit of 40 bytes" in store.failure and store.first_seq == 1
    os.write(w, b"y" * 5)
    assert store.splice_run(4, "stdout", r, 5, chunk=10) is None
    assert os.read(r, 100) == b"y" * 5  # nothing left the pipe: the caller reads it
    store.close(remove=True)
    os.close(r)
    os.close(w)


def test_a_spliced_run_is_one_record_read_back_as_its_chunks(tmp_path: Path) -> None:
    """A power-of-two chunk size: the run goes pipe -> log as one record (one header, one
    splice); every reader splits it into the same chunks: the store, a `LogRange` from any
    cursor within its budget, and the next daemon, also where the daemon died inside it."""
    path, kib = tmp_path / "x.log", 1 << 10
    store = OutputStore(path, 4 * kib, 1 << 30, splice=True)
    r, w = os.pipe()
    data = bytes(range(256)) * 10  # 2560 bytes: chunks of 1024, 1024, 512
    os.write(w, data)
    pieces = store.splice_run(1, "stderr", r, len(data), chunk=kib)
    assert pieces == [data[:kib], data[kib : 2 * kib], data[2 * kib :]]
    assert path.stat().st_size == HEADER.size + len(data)  # one record
    os.write(w, b"z" * 1500)
    assert store.splice_run(4, "stderr", r, 1500, chunk=kib) == [b"z" * kib, b"z" * 476]
    expected = [(1, data[:kib]), (2, data[kib : 2 * kib]), (3, data[2 * kib :])]
    expected += [(4, b"z" * kib), (5, b"z" * 476)]
    assert chunks(store) == expected and store.last_seq == 5
    for after in range(6):  # from the log (memory holds the newest 4 KiB only)
        span = store.log_range(after, None, kib)
        got = span.read()[0] if span is not None else store.take_memory(after, None, kib)[0]
        assert [(c.seq, c.data) for c in got] == expected[after : after + 1]
        assert {c.stream for c in got} <= {"stderr"}
    store.close(remove=False)
    again = OutputStore.reopen(path, 4 * kib, 1 << 30)
    assert chunks(again) == expected and (again.last_seq, again.total_bytes) == (5, 4060)
    again.close(remove=False)
    # The daemon died inside the second run's splice: 1,100 of its 1,500 bytes logged.
    path.write_bytes(path.read_bytes()[: -1500 + 1100])
    torn = OutputStore.reopen(path, 4 * kib, 1 << 30)
    assert chunks(torn)[3:] == [(4, b"z" * kib), (5, b"z" * 76)] and torn.last_seq == 5
    torn.append(6, "stdout", b"on")  # the next daemon's seqs go on
    assert [c.seq for c in torn.read(5, 1 << 20)] == [6]
    torn.close(remove=True)
    os.close(r)
    os.close(w)


def test_a_cut_and_the_cap_keep_whole_runs(tmp_path: Path) -> None:
    """Cuts fall between records: a run goes whole, and `first_seq` is its first chunk's."""
    kib = 1 << 10
    store = OutputStore(tmp_path / "x.log", 1 << 20, 8 * kib, splice=True)
    r, w = os.pipe()
    for n in range(10):  # runs of 3 chunks: seqs 1-3, 4-6, ...
        os.write(w, bytes([n]) * 2 * kib + bytes([n]) * 100)
        assert len(store.splice_run(3 * n + 1, "stdout", r, 2 * kib + 100, chunk=kib)) == 3
    assert store.log_bytes <= 8 * kib and (store.first_seq - 1) % 3 == 0
    got = chunks(store)
    assert got[0][0] == store.first_seq and got[-1] == (30, b"\x09" * 100)
    assert all(data == bytes([(seq - 1) // 3]) * len(data) for seq, data in got)
    store.close(remove=True)
    os.close(r)
    os.close(w)
