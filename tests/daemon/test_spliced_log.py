"""The daemon's output log: spliced from the pipe, and reopened by the next daemon.

A daemon killed while it logs leaves either a header whose bytes are still in
the pipe (dropped) or a record cut short (kept, its header fixed); the next
daemon's seqs go on after the last record (core/output.py).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from jupyter_exec.core.output import STREAM_CODES, OutputStore
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
