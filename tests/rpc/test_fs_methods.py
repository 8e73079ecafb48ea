"""Unit tests of the fs/* methods Codex calls (jupyter_exec.rpc.fs_methods)."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core.tasks import TaskOwner
from jupyter_exec.rpc import fs_methods
from jupyter_exec.rpc.context import CallContext
from jupyter_exec.rpc.service import build_registry
from jupyter_exec.rpc.sessions import Session, Sessions
from jupyter_exec.wire.errors import ErrorCode, ExecError
from jupyter_exec.wire.rules import FrontRules

METHODS = {name: method.handler for name, method in fs_methods.FS_METHODS.items()}


@dataclass
class FakeConnection:
    """Stands in for context.Outlet (a ServerConnection): collects notifications and close hooks."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)

    def notify(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def on_close(self, callback: Any) -> None:
        self.closers.append(callback)

    async def aclose(self) -> None:
        for callback in self.closers:
            await callback()

    __hash__ = object.__hash__


class FakeContext(CallContext):
    """A real CallContext (a real registry, its front's rules) with a fake connection."""

    connection: FakeConnection

    def __init__(self, root_dir: Path, confine_to_root: bool = False, **rules: Any) -> None:
        super().__init__(
            registry=build_registry(),
            sessions=Sessions(60, lambda session: None),
            session=Session("test-session"),
            connection=FakeConnection(),
            rules=FrontRules("the test front", root_dir, confine_to_root, **rules),
            tasks=TaskOwner("the test context"),
        )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = (tmp_path / "root").resolve()
    root.mkdir()
    return root


@pytest.fixture
def ctx(root: Path) -> FakeContext:
    return FakeContext(root)


@pytest.fixture
def confined(root: Path) -> FakeContext:
    return FakeContext(root, confine_to_root=True)


def call(ctx: FakeContext, method: str, params: Any) -> Any:
    return asyncio.run(METHODS[method](ctx, params))


def call_error(ctx: FakeContext, method: str, params: Any) -> ExecError:
    with pytest.raises(ExecError) as info:
        call(ctx, method, params)
    return info.value


def uri(path: Path) -> str:
    return path.as_uri()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_write_read_metadata_roundtrip(ctx: FakeContext, root: Path) -> None:
    target = root / "a file.txt"
    assert call(ctx, "fs/writeFile", {"path": uri(target), "dataBase64": b64(b"hi\n")}) == {}
    assert target.read_bytes() == b"hi\n"
    result = call(ctx, "fs/readFile", {"path": uri(target), "sandbox": None})
    assert base64.b64decode(result["dataBase64"]) == b"hi\n"
    meta = call(ctx, "fs/getMetadata", {"path": str(target), "sandbox": None})
    assert meta["isFile"] and not meta["isDirectory"] and not meta["isSymlink"]
    assert meta["size"] == 3
    assert abs(meta["modifiedAtMs"] - target.stat().st_mtime * 1000) < 2
    assert set(meta) == {
        "isDirectory",
        "isFile",
        "isSymlink",
        "size",
        "createdAtMs",
        "modifiedAtMs",
    }


def test_missing_path_is_not_found(ctx: FakeContext, root: Path) -> None:
    err = call_error(ctx, "fs/getMetadata", {"path": uri(root / "nope"), "sandbox": None})
    assert err.code == ErrorCode.FS_ERROR
    assert "No such file or directory" in err.message and "nope" in err.message
    err = call_error(ctx, "fs/readFile", {"path": uri(root / "nope")})
    assert err.code == ErrorCode.FS_ERROR


def test_write_into_missing_directory_is_not_found(ctx: FakeContext, root: Path) -> None:
    """Codex answers -32004 here and the client then creates the parent and retries."""
    params = {"path": uri(root / "sub" / "f"), "dataBase64": b64(b"x")}
    assert call_error(ctx, "fs/writeFile", params).code == ErrorCode.FS_ERROR
    call(ctx, "fs/createDirectory", {"path": uri(root / "sub"), "recursive": True})
    call(ctx, "fs/writeFile", params)
    assert (root / "sub" / "f").read_bytes() == b"x"


def test_paths_outside_root_are_served_by_default(ctx: FakeContext, root: Path) -> None:
    """SPEC 4: file access agrees with process access, which is not confined by default."""
    outside = root.parent / "outside" / "f.txt"
    call(ctx, "fs/createDirectory", {"path": uri(outside.parent)})
    call(ctx, "fs/writeFile", {"path": str(outside), "dataBase64": b64(b"out")})
    assert outside.read_bytes() == b"out"
    dotdot = f"{uri(root)}/../outside/f.txt"
    assert base64.b64decode(call(ctx, "fs/readFile", {"path": dotdot})["dataBase64"]) == b"out"
    (root / "link").symlink_to(outside.parent)
    assert call(ctx, "fs/getMetadata", {"path": uri(root / "link" / "f.txt")})["size"] == 3
    call(ctx, "fs/remove", {"path": uri(outside)})
    assert not outside.exists()


def test_paths_outside_root_are_refused_when_confined(confined: FakeContext, root: Path) -> None:
    outside = root.parent / "outside.txt"
    outside.write_text("secret")
    err = call_error(confined, "fs/readFile", {"path": uri(outside)})
    assert err.code == ErrorCode.FS_ERROR
    assert err.message == (
        f"path {outside} is outside the root {root} of the test front (confine_to_root is on)"
    )
    dotdot = f"{uri(root)}/../outside.txt"
    err = call_error(confined, "fs/getMetadata", {"path": dotdot})
    assert err.code == ErrorCode.FS_ERROR and "confine_to_root" in err.message
    err = call_error(confined, "fs/writeFile", {"path": uri(outside), "dataBase64": b64(b"x")})
    assert err.code == ErrorCode.INVALID_REQUEST and "confine_to_root" in err.message
    assert outside.read_text() == "secret"
    err = call_error(confined, "fs/remove", {"path": uri(outside)})
    assert err.code == ErrorCode.INVALID_REQUEST
    assert outside.exists()
    copy = {"sourcePath": uri(outside), "destinationPath": uri(root / "stolen")}
    assert "confine_to_root" in call_error(confined, "fs/copy", copy).message
    assert not (root / "stolen").exists()
    # inside the root everything still works
    call(confined, "fs/writeFile", {"path": uri(root / "in.txt"), "dataBase64": b64(b"in")})
    assert (root / "in.txt").read_bytes() == b"in"


def test_symlink_out_of_root_is_not_followed_when_confined(
    confined: FakeContext, root: Path
) -> None:
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (root / "link").symlink_to(outside)
    err = call_error(confined, "fs/readFile", {"path": uri(root / "link" / "secret")})
    assert err.code == ErrorCode.FS_ERROR and "confine_to_root" in err.message
    err = call_error(
        confined, "fs/writeFile", {"path": uri(root / "link" / "new"), "dataBase64": b64(b"x")}
    )
    assert err.code == ErrorCode.INVALID_REQUEST and "confine_to_root" in err.message
    assert not (outside / "new").exists()
    # the link itself lives inside the root: removing it removes the link only
    call(confined, "fs/remove", {"path": uri(root / "link"), "recursive": True, "force": False})
    assert not (root / "link").exists() and (outside / "secret").exists()


def test_symlink_inside_root(ctx: FakeContext, root: Path) -> None:
    (root / "target.txt").write_text("abc")
    (root / "link.txt").symlink_to(root / "target.txt")
    meta = call(ctx, "fs/getMetadata", {"path": uri(root / "link.txt")})
    assert meta["isSymlink"] and meta["isFile"] and meta["size"] == 3
    data = call(ctx, "fs/readFile", {"path": uri(root / "link.txt")})["dataBase64"]
    assert base64.b64decode(data) == b"abc"


def test_bad_params(ctx: FakeContext, root: Path) -> None:
    for params in (
        {},
        None,
        {"path": "relative/x"},
        {"path": 5},
        {"path": "http://example.com/x"},
        {"path": "file://otherhost/x"},
    ):
        err = call_error(ctx, "fs/getMetadata", params)
        assert err.code == ErrorCode.INVALID_PARAMS, params
    err = call_error(ctx, "fs/writeFile", {"path": uri(root / "f"), "dataBase64": "!!!"})
    assert err.code == ErrorCode.INVALID_PARAMS and "dataBase64" in err.message


def test_percent_encoded_uri(ctx: FakeContext, root: Path) -> None:
    (root / "with space").write_text("ok")
    meta = call(ctx, "fs/getMetadata", {"path": f"{uri(root)}/with%20space"})
    assert meta["size"] == 2


def test_read_directory_and_not_a_file(ctx: FakeContext, root: Path) -> None:
    (root / "d").mkdir()
    (root / "f").write_text("")
    entries = call(ctx, "fs/readDirectory", {"path": uri(root)})["entries"]
    assert sorted(entries, key=lambda e: e["fileName"]) == [
        {"fileName": "d", "isDirectory": True, "isFile": False},
        {"fileName": "f", "isDirectory": False, "isFile": True},
    ]
    err = call_error(ctx, "fs/readFile", {"path": uri(root / "d")})
    assert err.code == ErrorCode.INVALID_REQUEST
    err = call_error(ctx, "fs/readDirectory", {"path": uri(root / "f")})
    assert err.code == ErrorCode.FS_ERROR  # ENOTDIR reads as "not found"


def test_read_fifo_does_not_block(ctx: FakeContext, root: Path) -> None:
    os.mkfifo(root / "pipe")
    err = call_error(ctx, "fs/readFile", {"path": uri(root / "pipe")})
    assert "not a file" in err.message


def test_create_directory(ctx: FakeContext, root: Path) -> None:
    deep = root / "a" / "b" / "c"
    err = call_error(ctx, "fs/createDirectory", {"path": uri(deep), "recursive": False})
    assert err.code == ErrorCode.FS_ERROR
    call(ctx, "fs/createDirectory", {"path": uri(deep)})  # recursive by default
    assert deep.is_dir()
    call(ctx, "fs/createDirectory", {"path": uri(deep), "recursive": True})  # exists: fine


def test_remove(ctx: FakeContext, root: Path) -> None:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f").write_text("")
    err = call_error(ctx, "fs/remove", {"path": uri(root / "d"), "recursive": False})
    assert err.code == ErrorCode.INVALID_REQUEST and "not empty" in err.message
    call(ctx, "fs/remove", {"path": uri(root / "d")})
    assert not (root / "d").exists()
    call(ctx, "fs/remove", {"path": uri(root / "gone")})  # force by default
    err = call_error(ctx, "fs/remove", {"path": uri(root / "gone"), "force": False})
    assert err.code == ErrorCode.FS_ERROR
    err = call_error(ctx, "fs/remove", {"path": uri(root)})
    assert "root" in err.message and root.exists()


def test_copy(ctx: FakeContext, root: Path) -> None:
    (root / "src").mkdir()
    (root / "src" / "f").write_text("1")
    (root / "src" / "l").symlink_to("f")
    src, dst = uri(root / "src"), uri(root / "dst")
    err = call_error(ctx, "fs/copy", {"sourcePath": src, "destinationPath": dst})
    assert err.code == ErrorCode.INVALID_REQUEST and "recursive" in err.message
    call(ctx, "fs/copy", {"sourcePath": src, "destinationPath": dst, "recursive": True})
    assert (root / "dst" / "f").read_text() == "1"
    assert (root / "dst" / "l").is_symlink()
    call(
        ctx,
        "fs/copy",
        {"sourcePath": uri(root / "src" / "f"), "destinationPath": uri(root / "g")},
    )
    assert (root / "g").read_text() == "1"
    err = call_error(
        ctx,
        "fs/copy",
        {"sourcePath": src, "destinationPath": uri(root / "src" / "in"), "recursive": True},
    )
    assert "into itself" in err.message


def test_canonicalize(ctx: FakeContext, root: Path) -> None:
    (root / "d").mkdir()
    result = call(ctx, "fs/canonicalize", {"path": f"{uri(root)}/d/../d"})
    assert result == {"path": uri(root / "d")}


# -- fs/watchMissing --------------------------------------------------------------


@pytest.fixture
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_methods, "WATCH_POLL_SECONDS", 0.05)


async def _settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


def test_watch_missing_notifies_once_when_path_appears(
    ctx: FakeContext, root: Path, fast_poll: None
) -> None:
    async def scenario() -> None:
        handler = METHODS["fs/watchMissing"]
        params = {
            "watchId": 1,
            "missing": [uri(root / "a" / "b"), uri(root.parent / ".git"), "file:///.git"],
            "present": None,
        }
        assert await handler(ctx, params) == {"watching": True}
        await _settle()
        assert ctx.connection.sent == []
        (root / "a").mkdir()  # a directory on the way appears: that is a change
        await _settle()
        assert ctx.connection.sent == [
            {"jsonrpc": "2.0", "method": "fs/missingChanged", "params": {"watchId": 1}}
        ]
        (root / "a" / "b").mkdir()
        await _settle()
        assert len(ctx.connection.sent) == 1  # one-shot
        await ctx.connection.aclose()

    asyncio.run(scenario())


def test_watch_missing_rules(ctx: FakeContext, root: Path, fast_poll: None) -> None:
    async def scenario() -> None:
        handler = METHODS["fs/watchMissing"]
        (root / "here").mkdir()
        # a missing path that exists already: look again now
        first = {"watchId": 1, "missing": [uri(root / "here")]}
        assert await handler(ctx, first) == {"watching": False}
        ok = {"watchId": 5, "missing": [uri(root / "x")], "present": uri(root / "here")}
        assert await handler(ctx, ok) == {"watching": True}
        # an older id does not replace the current watch
        stale = {"watchId": 4, "missing": [uri(root / "y")]}
        assert await handler(ctx, stale) == {"watching": False}
        (root / "here").rmdir()  # the present path disappears
        await _settle()
        assert [m["params"] for m in ctx.connection.sent] == [{"watchId": 5}]
        # a newer watch replaces the old one, which never fires
        assert await handler(ctx, {"watchId": 6, "missing": [uri(root / "p")]}) == {
            "watching": True
        }
        assert await handler(ctx, {"watchId": 7, "missing": [uri(root / "q")]}) == {
            "watching": True
        }
        (root / "p").mkdir()
        await _settle()
        assert [m["params"] for m in ctx.connection.sent] == [{"watchId": 5}]
        await ctx.connection.aclose()
        (root / "q").mkdir()
        await _settle()
        assert [m["params"] for m in ctx.connection.sent] == [{"watchId": 5}]

    asyncio.run(scenario())


def test_watch_missing_outside_root(ctx: FakeContext, root: Path, fast_poll: None) -> None:
    """Codex watches `.git` up to `/`: served paths outside the root are watched too."""

    async def scenario() -> None:
        outside = root.parent / "outside-git"
        params = {"watchId": 1, "missing": [uri(outside)], "present": None}
        assert await METHODS["fs/watchMissing"](ctx, params) == {"watching": True}
        outside.mkdir()
        await _settle()
        assert [m["params"] for m in ctx.connection.sent] == [{"watchId": 1}]
        await ctx.connection.aclose()

    asyncio.run(scenario())


def test_watch_missing_outside_root_only_when_confined(
    confined: FakeContext, fast_poll: None
) -> None:
    """A confined server never serves paths outside the root, so it does not watch them."""

    async def scenario() -> None:
        params = {"watchId": 1, "missing": ["file:///.git"], "present": None}
        assert await METHODS["fs/watchMissing"](confined, params) == {"watching": True}
        await _settle()
        assert confined.connection.sent == []
        await confined.connection.aclose()

    asyncio.run(scenario())


def test_watch_missing_bad_params(ctx: FakeContext) -> None:
    for params in ({"watchId": "abc", "missing": []}, {"watchId": -1}, {"missing": []}):
        assert call_error(ctx, "fs/watchMissing", params).code == ErrorCode.INVALID_PARAMS


def test_capabilities_name_what_is_implemented() -> None:
    assert fs_methods.CAPABILITIES == {"fsWatchMissing": True}
    assert "fs/watchMissing" in METHODS
