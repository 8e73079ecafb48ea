"""File streaming: ``fs/open``, ``fs/readBlock``, ``fs/writeBlock``, ``fs/close``.

Codex (0.171, capabilities ``sandboxedFileStreaming`` and
``fileWriteStreaming``) reads and writes large files in blocks of at most
1 MiB through a handle it names, instead of one ``fs/readFile`` of the whole
file. Recorded from Codex's own ``exec-server`` (docs/codex.md, "File
streaming"), and done the same way here:

- ``fs/open {handleId, path, mode: "read" | "replace" (default "read"),
  sandbox?}`` → ``{handleId}``. The id is the client's (any string up to 32
  UTF-8 bytes, even empty); one already open is -32600. At most
  `MAX_HANDLES` are open per connection (-32600 beyond). ``read`` opens a
  regular file (a directory is -32600 "not a file"); ``replace`` creates or
  truncates the file at once and writes in place: not an atomic swap, the
  file holds what was written so far, and ``fs/close`` adds nothing.
- ``fs/readBlock {handleId, offset, len}`` → ``{chunk, eof}``: up to `len`
  bytes (1 to 1 MiB, else -32600) from `offset`; ``eof`` when fewer came back.
  A failed read (an offset past 2^63, a handle opened for ``replace``) closes
  the handle.
- ``fs/writeBlock {handleId, offset, chunk}`` → ``{}``: writes the decoded
  chunk (1 B to 1 MiB, else -32600) at `offset`; a gap reads as zeros. A
  failed write leaves the handle open.
- ``fs/close {handleId}`` → ``{}``, also for a handle that is not open.
- an unknown handle is -32004; OS failures keep Codex's words
  (``Bad file descriptor (os error 9)``) and code: -32004 for a missing path,
  -32600 for an invalid argument, else -32603.

Handles belong to the connection: they are closed when it closes, and one
connection cannot use another's. Access is decided once, at ``fs/open``,
by the same `Access` object as the other ``fs/*`` methods (sandbox, root
confinement); a replace the sandbox refuses is -32603 as for ``fs/writeFile``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import os
import stat
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import Field

from ..wire.errors import (
    ExecError,
    FsError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
)
from ..wire.protocol import Params, parse_params
from .context import EXECUTE, Method
from .fs_methods import Access, FsParams, parse_path
from .fs_walk import os_message

if TYPE_CHECKING:
    from .context import CallContext, Outlet

__all__ = [
    "CAPABILITIES",
    "MAX_BLOCK_BYTES",
    "MAX_HANDLES",
    "MAX_HANDLE_ID_BYTES",
    "MAX_OFFSET",
    "STREAM_METHODS",
    "FileHandle",
    "FileHandles",
    "HandleParams",
    "Offset",
    "OpenParams",
    "ReadBlockParams",
    "WriteBlockParams",
    "close_file",
    "handles_of",
    "open_file",
    "read_block",
    "stream_error",
    "write_block",
]


T = TypeVar("T")

#: Open handles per connection.
MAX_HANDLES = 128
#: Largest block read or written at once.
MAX_BLOCK_BYTES = 1 << 20
MAX_HANDLE_ID_BYTES = 32
#: Largest file offset the OS takes (a signed 64-bit number).
MAX_OFFSET = 2**63 - 1

Offset = Annotated[int, Field(strict=True, ge=0, le=2**64 - 1)]

#: Merged into the advertised capabilities (environment/info).
CAPABILITIES: dict[str, Any] = {"sandboxedFileStreaming": True, "fileWriteStreaming": True}


class OpenParams(FsParams):
    handle_id: str
    path: str
    mode: Literal["read", "replace"] = "read"


class HandleParams(Params):
    handle_id: str


class ReadBlockParams(HandleParams):
    offset: Offset
    len: Offset


class WriteBlockParams(HandleParams):
    offset: Offset
    chunk: str

    def data(self) -> bytes:
        try:
            return base64.b64decode(self.chunk, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParamsError("chunk is not valid base64") from None


def stream_error(exc: OSError) -> ExecError:
    """An OS failure with the code and words of Codex's server."""
    message = os_message(exc)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return FsError(message)
    if exc.errno == errno.EINVAL:
        return InvalidRequestError(message)
    return InternalError(message)


@dataclass
class FileHandle:
    """An open file; its descriptor is closed once closed and no block is in flight."""

    fd: int
    busy: int = 0
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        if self.busy == 0 and self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    async def run(self, func: Callable[[int], T]) -> T:
        """`func(fd)` in a worker thread, the descriptor kept open meanwhile."""
        self.busy += 1
        try:
            return await asyncio.to_thread(func, self.fd)
        finally:
            self.busy -= 1
            if self.closed:
                self.close()


@dataclass
class FileHandles:
    """One connection's open files, by the client's handle id."""

    handles: dict[str, FileHandle] = field(default_factory=dict)

    def get(self, handle_id: str) -> FileHandle:
        handle = self.handles.get(handle_id)
        if handle is None:
            raise FsError(f"unknown file handle `{handle_id}`")
        return handle

    def check_free(self, handle_id: str) -> None:
        if len(handle_id.encode("utf-8", "surrogatepass")) > MAX_HANDLE_ID_BYTES:
            raise InvalidRequestError(f"file handle ID must not exceed {MAX_HANDLE_ID_BYTES} bytes")
        if handle_id in self.handles:
            raise InvalidRequestError(f"file handle `{handle_id}` already exists")
        if len(self.handles) >= MAX_HANDLES:
            raise InvalidRequestError(
                f"at most {MAX_HANDLES} file handles may be open per connection"
            )

    def add(self, handle_id: str, fd: int) -> None:
        """Keep `fd` under `handle_id`, unless a concurrent open took the id or the last slot."""
        try:
            self.check_free(handle_id)
        except ExecError:
            os.close(fd)
            raise
        self.handles[handle_id] = FileHandle(fd)

    def close(self, handle_id: str) -> None:
        handle = self.handles.pop(handle_id, None)
        if handle is not None:
            handle.close()

    def close_all(self) -> None:
        for handle_id in list(self.handles):
            self.close(handle_id)


_HANDLES: weakref.WeakKeyDictionary[Outlet, FileHandles] = weakref.WeakKeyDictionary()


def handles_of(connection: Outlet) -> FileHandles:
    """The connection's handles; created on first use, closed when the connection closes."""
    handles = _HANDLES.get(connection)
    if handles is None:
        handles = _HANDLES[connection] = FileHandles()

        async def close_all() -> None:
            _HANDLES.pop(connection, None)
            handles.close_all()

        connection.on_close(close_all)
    return handles


# -- methods ----------------------------------------------------------------


def _open_read(real: Path, shown: Path) -> int:
    # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on files).
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidRequestError(f"path `{shown}` is not a file")
    os.set_blocking(fd, True)
    return fd


def _open_replace(access: Access, real: Path, shown: Path) -> int:
    if real.parent.is_dir():  # else the OS's ENOENT comes first, as in a sandbox
        access.check_write(real, shown)
    return os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)


async def open_file(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(OpenParams, params)
    path = parse_path(p.path)
    handles = handles_of(ctx.connection)
    handles.check_free(p.handle_id)
    access = Access.of(ctx, p)
    if p.mode == "read":
        real = access.real(path)
        opener = lambda: _open_read(real, path)  # noqa: E731
    else:
        real = access.real(path, writing=True)
        opener = lambda: _open_replace(access, real, path)  # noqa: E731
    try:
        fd = await asyncio.to_thread(opener)
    except OSError as exc:
        raise stream_error(exc) from None
    handles.add(p.handle_id, fd)
    return {"handleId": p.handle_id}


def _read_at(fd: int, offset: int, length: int) -> bytes:
    if offset > MAX_OFFSET:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    parts: list[bytes] = []
    got = 0
    while got < length:
        part = os.pread(fd, length - got, offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


async def read_block(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ReadBlockParams, params)
    if not 1 <= p.len <= MAX_BLOCK_BYTES:
        raise InvalidRequestError(f"file read block length must be between 1 and {MAX_BLOCK_BYTES}")
    handles = handles_of(ctx.connection)
    handle = handles.get(p.handle_id)
    try:
        data = await handle.run(lambda fd: _read_at(fd, p.offset, p.len))
    except OSError as exc:
        if handles.handles.get(p.handle_id) is handle:
            handles.close(p.handle_id)
        raise stream_error(exc) from None
    return {"chunk": base64.b64encode(data).decode("ascii"), "eof": len(data) < p.len}


def _write_at(fd: int, offset: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


async def write_block(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(WriteBlockParams, params)
    data = p.data()
    if not 1 <= len(data) <= MAX_BLOCK_BYTES:
        raise InvalidRequestError(
            f"file write block length must be between 1 and {MAX_BLOCK_BYTES}"
        )
    if p.offset + len(data) > MAX_OFFSET:
        raise InvalidRequestError("file write range exceeds the signed 64-bit file offset limit")
    handle = handles_of(ctx.connection).get(p.handle_id)
    try:
        await handle.run(lambda fd: _write_at(fd, p.offset, data))
    except OSError as exc:
        raise stream_error(exc) from None
    return {}


async def close_file(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(HandleParams, params)
    handles_of(ctx.connection).close(p.handle_id)
    return {}


STREAM_METHODS: dict[str, Method] = {
    "fs/open": Method(open_file, EXECUTE),
    "fs/readBlock": Method(read_block, EXECUTE),
    "fs/writeBlock": Method(write_block, EXECUTE),
    "fs/close": Method(close_file, EXECUTE),
}
