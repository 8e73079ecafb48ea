"""Unit tests of file streaming (jupyter_exec.rpc.fs_stream): what the differential test
cannot show: sandbox and confinement, handles per connection, a close during a read."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import fs_stream
from jupyter_exec.wire.errors import ErrorCode, ExecError
from tests.rpc.test_fs_methods import FakeContext

METHODS = {name: method.handler for name, method in fs_stream.STREAM_METHODS.items()}


def call(ctx: FakeContext, method: str, params: Any) -> Any:
    async def go() -> Any:
        return await METHODS[method](ctx, params)

    return asyncio.run(go())


def error(ctx: FakeContext, method: str, params: Any) -> ExecError:
    with pytest.raises(ExecError) as info:
        call(ctx, method, params)
    return info.value


def open_params(handle: str, path: Path, mode: str = "read", **extra: Any) -> dict[str, Any]:
    return {"handleId": handle, "path": path.as_uri(), "mode": mode, **extra}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = (tmp_path / "root").resolve()
    root.mkdir()
    (root / "f").write_bytes(b"0123456789")
    return root


def test_replace_is_refused_outside_the_sandbox(root: Path, tmp_path: Path) -> None:
    ctx = FakeContext(root)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    err = error(ctx, "fs/open", open_params("w", outside, "replace", sandbox="read-only"))
    assert err.code == ErrorCode.INTERNAL_ERROR and "Read-only file system" in err.message
    assert outside.read_text() == "keep"  # not truncated
    # reading it is allowed, and so is replacing inside the workspace with workspace-write
    call(ctx, "fs/open", open_params("r", outside, sandbox="read-only"))
    call(ctx, "fs/open", open_params("w", root / "new", "replace", sandbox="workspace-write"))
    assert call(ctx, "fs/writeBlock", {"handleId": "w", "offset": 0, "chunk": "aGk="}) == {}
    assert (root / "new").read_bytes() == b"hi"


def test_confined_to_root(root: Path, tmp_path: Path) -> None:
    ctx = FakeContext(root, confine_to_root=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    assert error(ctx, "fs/open", open_params("r", outside)).code == ErrorCode.FS_ERROR
    assert error(ctx, "fs/open", open_params("w", outside, "replace")).code == (
        ErrorCode.INVALID_REQUEST
    )
    (root / "link").symlink_to(outside)
    assert error(ctx, "fs/open", open_params("r", root / "link")).code == ErrorCode.FS_ERROR


def test_handles_belong_to_their_connection_and_close_with_it(root: Path) -> None:
    mine, theirs = FakeContext(root), FakeContext(root)
    call(mine, "fs/open", open_params("h", root / "f"))
    read = {"handleId": "h", "offset": 0, "len": 3}
    assert error(theirs, "fs/readBlock", read).code == ErrorCode.FS_ERROR
    call(theirs, "fs/open", open_params("h", root / "f"))  # the same id, its own
    handle = fs_stream.handles_of(mine.connection).handles["h"]
    asyncio.run(mine.connection.aclose())
    assert handle.closed and handle.fd == -1
    assert error(mine, "fs/readBlock", read).code == ErrorCode.FS_ERROR
    assert base64.b64decode(call(theirs, "fs/readBlock", read)["chunk"]) == b"012"


def test_close_during_a_read_waits_for_it(root: Path) -> None:
    """The descriptor outlives a close while a block is being read (never reused meanwhile)."""
    ctx = FakeContext(root)

    async def scenario() -> bytes:
        await fs_stream.open_file(ctx, open_params("h", root / "f"))
        handle = fs_stream.handles_of(ctx.connection).handles["h"]
        started = asyncio.Event()

        def slow(fd: int) -> bytes:
            loop.call_soon_threadsafe(started.set)
            time.sleep(0.2)
            return os.pread(fd, 4, 0)

        loop = asyncio.get_running_loop()
        reading = asyncio.create_task(handle.run(slow))
        await started.wait()
        await fs_stream.close_file(ctx, {"handleId": "h"})
        assert handle.closed and handle.fd >= 0  # still open for the read
        data = await reading
        assert handle.fd == -1
        return data

    assert asyncio.run(scenario()) == b"0123"


def test_a_fifo_is_not_a_file(root: Path) -> None:
    os.mkfifo(root / "fifo")
    err = error(FakeContext(root), "fs/open", open_params("r", root / "fifo"))
    assert err.code == ErrorCode.INVALID_REQUEST and "is not a file" in err.message
