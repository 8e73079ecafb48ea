"""Per-process output: recent chunks in memory, every chunk in an append-only log.

SPEC 6: `process/read` serves either transparently. The log is a sequence of
records ``<seq:u64><stream:u8><len:u32><bytes>``; an in-memory index (seq and
offset per chunk, 16 bytes each) finds a cursor with one bisect and one pread.
A log that hits its cap or a full disk stops growing; from then on output
lives only in memory and `failure`/`first_seq` tell the client what is gone.
"""

from __future__ import annotations

import errno
import os
import struct
from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct("<QBI")
STREAM_CODES = {"stdout": 0, "stderr": 1, "pty": 2}
STREAM_NAMES = {code: name for name, code in STREAM_CODES.items()}


@dataclass(slots=True, frozen=True)
class Chunk:
    seq: int
    stream: str
    data: bytes


class OutputStore:
    """Output of one process; synchronous, owned by the registry's event loop."""

    def __init__(self, log_path: Path | None, retained_bytes: int, log_bytes: int) -> None:
        self.retained_bytes = retained_bytes
        self._log_cap = log_bytes
        self._memory: deque[Chunk] = deque()
        self._memory_bytes = 0
        self._log_seqs = array("q")
        self._log_offsets = array("q")
        self._log_size = 0
        self._log_fd: int | None = None
        self._read_fd: int | None = None
        self._log_path = log_path
        self._dropped_upto = 0
        self.total_bytes = 0
        self.failure: str | None = None
        if log_path is not None and log_bytes > 0:
            try:
                self._log_fd = os.open(
                    log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
            except OSError as exc:
                self.failure = f"cannot open output log: {exc.strerror}"

    @property
    def first_seq(self) -> int:
        """Lowest seq not dropped by a retention limit (SPEC 4 `firstSeq`)."""
        return self._dropped_upto + 1

    def append(self, seq: int, stream: str, data: bytes) -> None:
        self.total_bytes += len(data)
        self._log(seq, stream, data)
        chunk = Chunk(seq, stream, data)
        self._memory.append(chunk)
        self._memory_bytes += len(data)
        # The newest chunk always stays, even when it alone exceeds the budget.
        while len(self._memory) > 1 and self._memory_bytes > self.retained_bytes:
            old = self._memory.popleft()
            self._memory_bytes -= len(old.data)
            if not self._is_logged(old.seq):
                self._dropped_upto = max(self._dropped_upto, old.seq)

    def _is_logged(self, seq: int) -> bool:
        # The log holds a prefix of the chunks: it only ever stops, never skips.
        return bool(self._log_seqs) and seq <= self._log_seqs[-1]

    def _log(self, seq: int, stream: str, data: bytes) -> None:
        if self._log_fd is None:
            return
        record = _HEADER.pack(seq, STREAM_CODES[stream], len(data)) + data
        if self._log_size + len(record) > self._log_cap:
            self._stop_log(f"output log reached its limit of {self._log_cap} bytes")
            return
        try:
            os.write(self._log_fd, record)
        except OSError as exc:
            reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror
            self._stop_log(f"output log write failed ({reason})")
            return
        self._log_seqs.append(seq)
        self._log_offsets.append(self._log_size)
        self._log_size += len(record)

    def _stop_log(self, why: str) -> None:
        self.failure = f"{why}; later output is kept only in memory"
        # What was logged stays readable through the same descriptor.
        self._read_fd, self._log_fd = self._log_fd, None

    def _reader_fd(self) -> int | None:
        return self._log_fd if self._log_fd is not None else self._read_fd

    def read(self, after_seq: int, max_bytes: int) -> list[Chunk]:
        """Chunks with seq > after_seq in order, within max_bytes (at least one if any)."""
        out: list[Chunk] = []
        budget = max_bytes
        mem_first = self._memory[0].seq if self._memory else None
        i = bisect_right(self._log_seqs, after_seq)
        j = i
        while j < len(self._log_seqs) and (mem_first is None or self._log_seqs[j] < mem_first):
            j += 1
        if j > i:
            out = self._read_log(i, j, budget)
            budget -= sum(len(c.data) for c in out)
            if len(out) < j - i:
                return out
        for chunk in self._memory:
            if chunk.seq <= after_seq:
                continue
            if out and len(chunk.data) > budget:
                break
            out.append(chunk)
            budget -= len(chunk.data)
        return out

    def _read_log(self, i: int, j: int, budget: int) -> list[Chunk]:
        fd = self._reader_fd()
        if fd is None:
            return []
        # Find how many records fit, then read them with one pread.
        end_index = i
        size = 0
        while end_index < j:
            rec_len = self._record_end(end_index) - self._log_offsets[end_index]
            payload = rec_len - _HEADER.size
            if end_index > i and size + payload > budget:
                break
            size += payload
            end_index += 1
        start = self._log_offsets[i]
        blob = os.pread(fd, self._record_end(end_index - 1) - start, start)
        out: list[Chunk] = []
        pos = 0
        while pos < len(blob):
            seq, code, length = _HEADER.unpack_from(blob, pos)
            pos += _HEADER.size
            out.append(Chunk(seq, STREAM_NAMES[code], blob[pos : pos + length]))
            pos += length
        return out

    def _record_end(self, index: int) -> int:
        if index + 1 < len(self._log_offsets):
            return self._log_offsets[index + 1]
        return self._log_size

    def close(self, remove: bool) -> None:
        for fd in (self._log_fd, self._read_fd):
            if fd is not None:
                os.close(fd)
        self._log_fd = self._read_fd = None
        if remove and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
