"""The service's method table: every method carries the permission it needs (SPEC 4)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc.context import EXECUTE, READ, Method
from jupyter_exec.rpc.dispatch import ExecService
from tests.wire import RawPeer, make_service


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
