"""fs/* and environment methods plugged into the real dispatcher, as Codex calls them;
the permission each method declares, as dispatch enforces it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import fs_methods
from jupyter_exec.rpc.context import EXECUTE, READ, Method
from jupyter_exec.rpc.dispatch import ExecService
from jupyter_exec.rpc.service import build_service
from jupyter_exec.wire.rules import FrontRules
from tests.service import RawPeer, make_service


def test_codex_file_calls_through_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_methods, "WATCH_POLL_SECONDS", 0.05)
    root = tmp_path.resolve()

    async def scenario() -> None:
        service = build_service(rules=FrontRules("the test front", root))
        wire = RawPeer(service)
        try:
            init = await wire.call(
                "initialize", {"clientName": "codex-environment", "resumeSessionId": None}
            )
            assert "result" in init, init
            wire.send("initialized", {}, notify=True)

            info = (await wire.call("environment/info", None))["result"]
            assert info["cwd"] == root.as_uri()
            assert info["capabilities"]["fsWatchMissing"] is True
            assert info["capabilities"]["environmentConfigRead"] is True

            missing = await wire.call(
                "fs/getMetadata", {"path": (root / ".git").as_uri(), "sandbox": None}
            )
            assert missing["error"]["code"] == -32004
            outside = await wire.call("fs/getMetadata", {"path": "file:///.git", "sandbox": None})
            assert outside["error"]["code"] == -32004  # served, and absent: not refused
            assert outside["error"]["message"] == "No such file or directory: /.git"

            target = (root / "added.txt").as_uri()
            data = base64.b64encode(b"hello\n").decode()
            written = await wire.call(
                "fs/writeFile", {"path": target, "dataBase64": data, "sandbox": None}
            )
            assert written == {"jsonrpc": "2.0", "id": written["id"], "result": {}}
            read = await wire.call("fs/readFile", {"path": target, "sandbox": None})
            assert read["result"] == {"dataBase64": data}

            watch = {
                "watchId": 1,
                "missing": [(root / ".agents" / "skills").as_uri(), "file:///.git"],
                "present": None,
            }
            assert (await wire.call("fs/watchMissing", watch))["result"] == {"watching": True}
            (root / ".agents").mkdir()
            changed = await wire.notification("fs/missingChanged", timeout=5)
            assert changed["params"] == {"watchId": 1}

            config = await wire.call(
                "environmentConfig/read",
                {"cwd": root.as_uri(), "configPaths": [["mcp_servers"]], "requirementsPaths": []},
            )
            assert config["result"]["config"] == {"layers": [], "cloudInsertionIndex": 0}
        finally:
            await wire.close()
            await service.aclose()

    asyncio.run(scenario())


# -- permissions: every method carries the action it needs (SPEC 4) -----------------


@contextlib.asynccontextmanager
async def read_only(tmp_path: Path) -> AsyncIterator[tuple[ExecService, RawPeer]]:
    """A service and a handshaken peer whose user holds only the `read` action."""
    service = make_service(tmp_path)
    peer = RawPeer(service, frozenset({READ}))
    await peer.handshake()
    try:
        yield service, peer
    finally:
        await peer.close()
        await service.aclose()


def test_a_read_only_connection_may_look_but_not_change(tmp_path: Path) -> None:
    """fs/canonicalize only looks, like fs/getMetadata: a read-only client may call both."""
    (tmp_path / "f.txt").write_text("abc")
    path = (tmp_path / "f.txt").as_uri()

    async def check() -> None:
        async with read_only(tmp_path) as (_, peer):
            meta = await peer.call("fs/getMetadata", {"path": path})
            assert meta["result"]["isFile"], meta
            canonical = await peer.call("fs/canonicalize", {"path": path})
            assert canonical["result"] == {"path": path}, canonical
            refused = await peer.call("fs/writeFile", {"path": path, "dataBase64": ""})
            assert "needs the execute permission" in refused["error"]["message"], refused

    asyncio.run(check())
    assert (tmp_path / "f.txt").read_text() == "abc"  # the refused write changed nothing


def test_every_method_is_refused_exactly_when_it_needs_execute(tmp_path: Path) -> None:
    """The declared action is what dispatch enforces, for every method of the table."""

    async def check() -> None:
        async with read_only(tmp_path) as (service, peer):
            assert {m.action for m in service.methods.values()} == {READ, EXECUTE}
            for name, method in service.methods.items():
                answer = await peer.call(name, {})
                refused = "permission denied" in answer.get("error", {}).get("message", "")
                assert refused == (method.action == EXECUTE), (name, answer)
            listed = await peer.call("process/list", {})
            assert listed["result"]["processes"] == [], listed  # the refused start started nothing

    asyncio.run(check())


async def _handler(ctx: Any, params: Any) -> dict[str, Any]:
    return {}


def test_add_methods_refuses_a_taken_name_or_an_unknown_action(tmp_path: Path) -> None:
    """A second family reusing a name would silently swap a handler and its permission."""
    service = make_service(tmp_path)
    start = service.methods["process/start"]
    with pytest.raises(ValueError, match="already defined: process/start"):
        service.add_methods({"process/start": Method(_handler, READ)})
    with pytest.raises(ValueError, match="unknown action 'write'"):
        service.add_methods({"x/y": Method(_handler, "write")})
    assert service.methods["process/start"] is start and "x/y" not in service.methods
    service.add_methods({"x/y": Method(_handler, READ)})
    assert service.methods["x/y"].action == READ
    with pytest.raises(TypeError):
        service.methods["x/z"] = Method(_handler, READ)  # type: ignore[index]
    asyncio.run(service.aclose())
