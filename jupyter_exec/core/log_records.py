"""The output log's records, and reading them in a thread (core/output.py's format).

A record is ``<seq:u64><code:u8><len:u32><bytes>``; the code's low 4 bits are
the stream, its high 4 bits, when not 0, make the record a run of chunks of
`2**(9 + bits)` bytes each (one spliced read of a child's pipe). `LogRange`
reads records between two offsets without the store, so a thread can serve a
lagging reader while the store goes on appending and cutting.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..wire.schema import Chunk

__all__ = [
    "CUT",
    "GONE",
    "HEADER",
    "RUN_SHIFT",
    "STREAM_BITS",
    "STREAM_CODES",
    "STREAM_NAMES",
    "Head",
    "LogRange",
    "chunk_size",
    "run_code",
    "splice_record",
    "whole_records",
]


HEADER = struct.Struct("<QBI")
STREAM_CODES = {"stdout": 0, "stderr": 1, "pty": 2}
STREAM_NAMES = {code: name for name, code in STREAM_CODES.items()}
#: Record kinds that carry no output. CUT (at offset 0 only): its seq field is
#: the offset of the first record kept. GONE (a log's only record): its seq is
#: the last seq of the output, all of which went.
CUT, GONE = 254, 255
STREAM_BITS, RUN_SHIFT = 0x0F, 4
#: How much log one pread fetches while scanning forward.
READ_WINDOW = 1 << 20


class Head:
    """Where a log's first kept record is: shared with the `LogRange`s read in threads."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0


@dataclass(slots=True, frozen=True)
class LogRange:
    """Records of one log between two offsets, filtered by seq; safe to read in a thread."""

    path: Path
    start: int
    end: int
    after_seq: int
    stop_seq: int | None
    budget: int
    #: The log's head, which a cut moves on: nothing before it is read.
    head: Head

    def read(self) -> tuple[list[Chunk], bool]:
        """Chunks (after_seq, stop_seq) within budget; True if cut short. [] if the log is gone."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # removed with its process
            return [], False
        try:
            return self.read_fd(fd)
        except OSError:  # an I/O error: what it cannot read stays unread, like the log's tail
            return [], False
        finally:
            os.close(fd)

    def read_cached(self) -> tuple[list[Chunk], bool] | None:
        """`read` without blocking: None unless the page cache holds it all (RWF_NOWAIT).

        Recent output usually is still cached, so a lagging client is served
        inline, without a thread hop per MiB; the rest is read in a thread.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return self.read_fd(fd, pread_cached)
        except OSError:  # not cached, not supported here, or an error `read` will meet
            return None
        finally:
            os.close(fd)

    def read_fd(
        self, fd: int, pread: Callable[[int, int, int], bytes | bytearray] = os.pread
    ) -> tuple[list[Chunk], bool]:
        out: list[Chunk] = []
        size = 0
        offset = self.start
        while offset < self.end:
            blob = pread(fd, min(READ_WINDOW, self.end - offset), offset)
            if self.head.offset > offset:  # a cut came: what was read may be a hole
                offset = self.head.offset
                continue
            view = memoryview(blob)  # a chunk is one copy of its record, whatever `blob` is
            pos = 0
            while pos + HEADER.size <= len(blob):
                seq, code, length = HEADER.unpack_from(blob, pos)
                end = pos + HEADER.size + length
                if end > len(blob):
                    if pos > 0:
                        break  # the next window starts with this record
                    blob = pread(fd, end, offset)  # one record larger than the window
                    view = memoryview(blob)
                    if end > len(blob) or self.head.offset > offset:
                        break  # the file is shorter than its index says, or was cut
                    continue
                if code >= CUT:  # the index points past these: a range of a store that
                    return out, False  # went (a successor's scan reads them, not this)
                stream, step = STREAM_NAMES[code & STREAM_BITS], chunk_size(code, length)
                for at in range(pos + HEADER.size, end, step):  # one chunk, or a run's
                    if self.stop_seq is not None and seq >= self.stop_seq:
                        return out, False
                    if seq > self.after_seq:
                        piece = min(step, end - at)
                        if out and size + piece > self.budget:
                            return out, True
                        out.append(Chunk(seq, stream, view[at : at + piece].tobytes()))
                        size += piece
                    seq += 1
                pos = end
            if pos == 0:
                if self.head.offset > offset:
                    continue  # cut under us: on from the new head
                break  # a torn tail: nothing more to read
            offset += pos
        return out, False


def splice_record(
    fd: int, pipe: int, offset: int, seq: int, code: int, length: int
) -> tuple[int, OSError | None]:
    """One record at `offset`: its header, then up to `length` bytes spliced from `pipe`.

    Returns how many bytes moved, and the error that stopped it, if any; a
    record cut short gets a header that says so, one with no bytes is cut off.
    """
    moved, failed = 0, None
    try:
        os.pwrite(fd, HEADER.pack(seq, code, length), offset)
        while moved < length:
            step = os.splice(pipe, fd, length - moved, offset_dst=offset + HEADER.size + moved)
            if step == 0:
                break
            moved += step
    except OSError as exc:
        failed = exc
    if moved < length:
        with contextlib.suppress(OSError):
            if moved:
                os.pwrite(fd, HEADER.pack(seq, code, moved), offset)
            else:
                os.ftruncate(fd, offset)
    return moved, failed


def run_code(code: int, chunk: int) -> int:
    """The code of a record holding a run of `chunk`-byte chunks, or `code` (one chunk a
    record) where `chunk` is no power of two from 1 KiB to 4 MiB."""
    bits = chunk.bit_length() - 10  # chunk == 2 ** (9 + bits)
    if chunk & (chunk - 1) or not 1 <= bits <= 13:
        return code
    return code | bits << RUN_SHIFT


def chunk_size(code: int, length: int) -> int:
    """How many bytes each chunk of a record of `code` holds (`length`: one chunk)."""
    bits = code >> RUN_SHIFT
    return 1 << (9 + bits) if bits else max(length, 1)


def whole_records(pieces: list[bytes], written: int) -> list[bytes]:
    """The pieces whose records a short write of `written` bytes left whole."""
    end = 0
    for count, data in enumerate(pieces):
        end += HEADER.size + len(data)
        if end > written:
            return pieces[:count]
    return pieces


def pread_cached(fd: int, size: int, offset: int) -> bytearray:
    """`os.pread` that raises BlockingIOError unless all of it is in the page cache.

    The buffer itself is returned: its records are copied out once (`read_fd`).
    """
    buf = bytearray(size)
    if os.preadv(fd, [buf], offset, os.RWF_NOWAIT) < size:
        raise BlockingIOError("not all cached")  # or the file is shorter: `read` decides
    return buf
