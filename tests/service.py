"""Test helpers: an embedded service, a raw JSON-RPC peer, a standalone server process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec.client import ExecClient
from jupyter_exec.config import DaemonSettings
from jupyter_exec.core.proctree import ProcessRef, descendant_processes, identify
from jupyter_exec.embedded import connect_service
from jupyter_exec.rpc.dispatch import ExecService
from jupyter_exec.rpc.service import build_service
from jupyter_exec.wire.rules import FrontRules

PY = sys.executable


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all held open until all are picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """One loopback port free right now (for a server a test starts)."""
    return free_ports(1)[0]


def py(code: str) -> list[str]:
    """argv for a Python child running `code`."""
    return [PY, "-c", code]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


#: `make_service` overrides that are the front's rules (SPEC 3), not the registry's.
RULE_FIELDS = (
    "root_dir", "confine_to_root", "max_processes", "default_lifetime", "env",
    "default_sandbox", "agent_sandbox",
)  # fmt: skip


def make_service(tmp_path: Path | None = None, **overrides: Any) -> ExecService:
    """A service built as production builds it (`build_service`, defaults from config.py),
    with `overrides` of daemon settings; its connections get `FrontRules` named "the
    test front" (root tmp_path)."""
    rules = {k: overrides.pop(k) for k in RULE_FIELDS if k in overrides}
    durable = overrides.pop("durable_logs", False)  # logs that outlive a crash, as the daemon's
    if tmp_path is not None:
        rules.setdefault("root_dir", tmp_path)
        overrides.setdefault("log_dir", tmp_path / "logs")
    rules.setdefault("root_dir", Path.cwd())
    settings = DaemonSettings(**overrides)
    rules_ = FrontRules(name="the test front", **rules)
    return build_service(settings, rules_, durable_log_dir=settings.log_dir if durable else None)


@contextlib.asynccontextmanager
async def embedded(
    tmp_path: Path | None = None, **overrides: Any
) -> AsyncIterator[tuple[ExecService, ExecClient]]:
    service = make_service(tmp_path, **overrides)
    client = await connect_service(service)
    try:
        yield service, client
    finally:
        await client.close()
        await service.aclose()


@contextlib.asynccontextmanager
async def connected(tmp_path: Path | None = None, **overrides: Any) -> AsyncIterator[RawPeer]:
    """A fresh service (`make_service`) and a raw peer that has done the handshake."""
    service = make_service(tmp_path, **overrides)
    peer = RawPeer(service)
    await peer.handshake()
    try:
        yield peer
    finally:
        await peer.close()
        await service.aclose()


class RawPeer:
    """A JSON-RPC peer over an in-process connection, to see exact wire messages."""

    def __init__(self, service: ExecService, allowed_actions: frozenset[str] | None = None) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def write(text: str) -> None:
            self.inbox.put_nowait(json.loads(text))

        self.conn = service.connect(write, allowed_actions)
        self._ids = 0
        self.seen: list[dict[str, Any]] = []

    def send_raw(self, frame: str | bytes) -> None:
        self.conn.receive(frame)

    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if notify:
            self.send_raw(json.dumps(msg))
            return None
        self._ids += 1
        msg["id"] = self._ids
        self.send_raw(json.dumps(msg))
        return self._ids

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def response(self, req_id: int | None, timeout: float = 10) -> dict[str, Any]:
        """The response with this id; notifications before it are kept in `self.seen`."""
        while True:
            msg = await self.recv(timeout)
            if "method" not in msg and msg.get("id") == req_id:
                return msg
            self.seen.append(msg)

    async def notification(self, method: str, timeout: float = 10) -> dict[str, Any]:
        """The next notification ``method``, seen already or still to come."""
        for i, msg in enumerate(self.seen):
            if msg.get("method") == method:
                return self.seen.pop(i)
        while True:
            msg = await self.recv(timeout)
            if msg.get("method") == method:
                return msg
            self.seen.append(msg)

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return await self.response(self.send(method, params))

    async def handshake(self) -> dict[str, Any]:
        self.seen = []
        result = await self.call("initialize", {"clientName": "test"})
        self.send("initialized", notify=True)
        return result

    async def close(self) -> None:
        await self.conn.aclose()


@dataclass
class Standalone:
    proc: subprocess.Popen[str]
    url: str
    token: str

    @property
    def bare_url(self) -> str:
        return self.url.split("?", 1)[0]


@contextlib.contextmanager
def standalone(*args: str, cwd: Path | None = None) -> Iterator[Standalone]:
    """`jupyter-exec serve` as a real subprocess; stopped by its pid afterwards."""
    proc = subprocess.Popen(
        [PY, "-m", "jupyter_exec.transports.serve", "--listen", "ws://127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        token = url.split("token=", 1)[1] if "token=" in url else ""
        yield Standalone(proc, url, token)
    finally:
        stop_process(proc)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after `timeout`: only the process we started, by its pid."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lines_until(proc: subprocess.Popen[str], until_id: int) -> list[dict[str, Any]]:
    """The JSON lines ``proc`` writes, up to the reply with id ``until_id``."""
    out: list[dict[str, Any]] = []
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "server closed stdout"
        msg = json.loads(line)
        out.append(msg)
        if msg.get("id") == until_id and "method" not in msg:
            return out


def pid_alive(pid: int | ProcessRef) -> bool:
    """Running, not a zombie; for a `ProcessRef`, also still that process (not a reused pid)."""
    number = pid.pid if isinstance(pid, ProcessRef) else pid
    try:
        with open(f"/proc/{number}/stat") as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
    return alive and (not isinstance(pid, ProcessRef) or identify(number) == pid)


def tree_of(pid: int) -> set[ProcessRef]:
    """`pid` and its descendants, each with its start time so a reused pid is not mistaken."""
    root = identify(pid)
    return set() if root is None else {root, *descendant_processes(root)}


#: More than 2 MiB of numbered lines: a reader crosses several 1-MiB pages (SPEC 4).
NUMBERED_LINES = 400_000
NUMBERED = py(f"for i in range({NUMBERED_LINES}): print(i)")


def assert_numbered(text: str, first: int = 0) -> None:
    """`text` is `NUMBERED`'s lines from `first` on, each once, in order."""
    if text == "".join(f"{i}\n" for i in range(first, NUMBERED_LINES)):
        return
    lines = text.splitlines()
    seen = set(lines)
    missing = [i for i in range(first, NUMBERED_LINES) if str(i) not in seen]
    repeated = len(lines) - len(seen)
    raise AssertionError(
        f"{len(lines)} lines for {NUMBERED_LINES - first}: {len(missing)} missing "
        f"(first {missing[:5]}), {repeated} repeated, or out of order"
    )
