"""Running real processes in sandboxes over real JSON-RPC, and reading what they did."""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core import sandbox
from tests.service import RawPeer, connected


@dataclass
class Outcome:
    started: dict[str, Any]  # the start response (result or error)
    output: str
    exit_code: int | None
    sandbox_denied: bool | None

    @property
    def sandbox_type(self) -> str:
        return str(self.started["result"]["sandboxType"])


async def run(peer: RawPeer, argv: list[str], timeout: float = 30, **params: Any) -> Outcome:
    """Start, then collect output until `process/closed` (an error answer returns at once)."""
    process_id = f"sbx-{uuid.uuid4().hex[:8]}"
    started = await peer.call("process/start", {"processId": process_id, "argv": argv, **params})
    if "error" in started:
        return Outcome(started, "", None, None)
    chunks: list[bytes] = []
    exited: dict[str, Any] = {}
    pending = [m for m in peer.seen if m.get("params", {}).get("processId") == process_id]
    peer.seen = [m for m in peer.seen if m not in pending]
    while True:
        msg = pending.pop(0) if pending else await peer.recv(timeout)
        if msg.get("params", {}).get("processId") != process_id:
            continue
        if msg["method"] == "process/output":
            chunks.append(base64.b64decode(msg["params"]["chunk"]))
        elif msg["method"] == "process/exited":
            exited = msg["params"]
        elif msg["method"] == "process/closed":
            break
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return Outcome(started, text, exited.get("exitCode"), exited.get("sandboxDenied"))


def needs_sandbox() -> None:
    reason = sandbox.unavailable()
    if reason is not None:
        pytest.skip(f"no sandbox on this machine: {reason}")


@contextlib.contextmanager
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp (writable in workspace-write) and outside any test cwd."""
    path = Path(tempfile.mkdtemp(prefix="jupyter-exec-sbx-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def session(tmp_path: Path, **config: Any) -> AsyncIterator[RawPeer]:
    """An embedded service and a raw peer that has done the handshake (SPEC 2)."""
    needs_sandbox()
    async with connected(tmp_path, **config) as peer:
        yield peer
