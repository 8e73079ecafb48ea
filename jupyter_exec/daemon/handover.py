"""Jupyter websockets handed to the daemon, so their frames skip the relay.

The Jupyter extension authenticates and authorizes the upgrade request as
before, then passes the client's socket (SCM_RIGHTS) with the request head and
the allowed actions over `jupyter-exec-dN.handover.sock` (0600, same uid);
the daemon answers the websocket handshake and serves the client itself. A
frame then costs one hop instead of two processes' worth (docs/benchmarks.md).

A handed-over websocket still belongs to the server that authorized it: when
that process exits, the daemon closes its websockets (1001), as the relay
would have, and clients resume their sessions as after any restart.

The handover message, one line with the socket attached:

    -> {"jupyterExecDaemon": N, "allowedActions": [...], "front": {FrontRules},
        "request": "GET ... \\r\\n\\r\\n"}
    <- {"ok": true} | {"error": "..."}

`front` carries the handing server's rules (wire/rules.py, SPEC 3): the
websocket is served under them, as if that server served it itself. Without
it (an older server) the daemon's `fallback_rules` apply.

After "ok" the sender closes its descriptor of the socket, then the channel;
the daemon answers the client's handshake only then, so no byte of the
client's can reach the sender's copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.tasks import TaskOwner
from ..rpc.dispatch import ExecService
from ..transports.ws_front import WebSocketClient, WebSocketClients
from ..wire.rules import FrontRules
from . import sockets

__all__ = ["CLOSE_TIMEOUT", "HANDOVER_TIMEOUT", "HELLO_MAX", "Handovers"]


log = logging.getLogger("jupyter_exec.daemon")

#: Largest handover line (the request head with its headers, the front's environment).
HELLO_MAX = 1 << 20
#: How long the handing server may take to send its line.
HANDOVER_TIMEOUT = 10.0
#: How long closing waits for the client's close frame before dropping the connection.
CLOSE_TIMEOUT = 1.0


class Handovers:
    """Accepts handed-over sockets and serves them as websocket clients of `service`."""

    def __init__(
        self,
        service: ExecService,
        protocol: int,
        max_message_bytes: int,
        fallback: Callable[[int], FrontRules],
    ) -> None:
        self.protocol = protocol
        self.fallback = fallback
        # Origin was checked by Jupyter, with its own settings: none is checked here.
        # When its server dies, a client that stopped reading must not hold the
        # session attached: the daemon lets go of it after CLOSE_TIMEOUT.
        self._clients = WebSocketClients(service, max_message_bytes, close_timeout=CLOSE_TIMEOUT)
        self._listener: socket.socket | None = None
        self._tasks = TaskOwner("the handover listener")
        self._owners: dict[int, _Owner] = {}

    @property
    def count(self) -> int:
        """Open websockets (the daemon counts them as clients for its idle exit)."""
        return self._clients.count

    def listen(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._listener = sockets.bind_private(path)
        self._tasks.start(self._accept(self._listener))

    async def aclose(self) -> None:
        """Stop accepting; close every handed-over websocket (1001) and wait for them."""
        if self._listener is not None:
            self._listener.close()
        await self._tasks.aclose()
        for owner in list(self._owners.values()):
            owner.stop()
        await self._clients.aclose("the exec daemon is stopping")

    # -- receiving a socket -----------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._tasks.start(self._take(conn))

    async def _take(self, conn: socket.socket) -> None:
        with conn:
            uid, pid = sockets.peer(conn)
            if uid != os.getuid():
                log.warning("refused a handover from another user")
                return
            conn.setblocking(True)
            conn.settimeout(HANDOVER_TIMEOUT)
            try:
                line, fds = await asyncio.to_thread(_receive, conn)
            except OSError:
                return
            try:
                head, allowed, rules = self._parse(line)
                client = _one_stream_socket(fds)
            except ValueError as exc:
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(_answer, conn, {"error": str(exc)})
                return
            try:
                owner = self._owner(pid)
                # The sender closes its descriptor, then the channel: only then is
                # the socket ours alone, and the handshake may begin.
                await asyncio.to_thread(_answer, conn, {"ok": True})
                await asyncio.to_thread(conn.recv, 1)
                await self._adopt(client, head, allowed, rules or self.fallback(pid), owner)
            except OSError as exc:
                log.warning("a handover failed: %s", exc)
                client.close()

    def _parse(self, line: bytes) -> tuple[bytes, frozenset[str] | None, FrontRules | None]:
        try:
            hello = json.loads(line)
            theirs, head, actions = (
                hello["jupyterExecDaemon"],
                hello["request"],
                hello["allowedActions"],
            )
        except (ValueError, TypeError, KeyError):
            raise ValueError(
                "a handover is one JSON line with jupyterExecDaemon, request, allowedActions"
            ) from None
        if theirs != self.protocol:
            raise ValueError(f"this exec daemon speaks protocol {self.protocol}, not {theirs}")
        if not isinstance(head, str) or not isinstance(actions, (list, type(None))):
            raise ValueError("request must be a string and allowedActions a list or null")
        rules = FrontRules.from_wire(hello["front"]) if "front" in hello else None
        try:
            allowed = None if actions is None else frozenset(map(str, actions))
            return head.encode("latin-1"), allowed, rules
        except UnicodeEncodeError:
            raise ValueError("request must be an HTTP head (latin-1)") from None

    def _owner(self, pid: int) -> _Owner:
        """The handing process, watched through a pidfd (opened while it is connected)."""
        owner = self._owners.get(pid)
        if owner is None:
            owner = self._owners[pid] = _Owner(pid, os.pidfd_open(pid), self._owners)
        return owner

    async def _adopt(
        self,
        client: socket.socket,
        head: bytes,
        allowed: frozenset[str] | None,
        rules: FrontRules,
        owner: _Owner,
    ) -> None:
        if client.family in (socket.AF_INET, socket.AF_INET6):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        websocket = self._clients.adopt(allowed, rules, head)  # the request Jupyter read
        owner.add(websocket)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: websocket, sock=client)


class _Owner:
    """A Jupyter server that handed sockets over: its websockets close when it exits."""

    def __init__(self, pid: int, pidfd: int, owners: dict[int, _Owner]) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.websockets: set[WebSocketClient] = set()
        self._owners = owners
        asyncio.get_running_loop().add_reader(pidfd, self.close, "the Jupyter server went away")

    def add(self, websocket: WebSocketClient) -> None:
        self.websockets.add(websocket)
        websocket.closed.add_done_callback(lambda _: self.websockets.discard(websocket))

    def close(self, reason: str) -> None:
        """Its server is gone: close its websockets (1001, clients resume elsewhere)."""
        if self.stop():
            for websocket in list(self.websockets):
                websocket.close(1001, reason)

    def stop(self) -> bool:
        """Stop watching; False if already stopped."""
        if self._owners.pop(self.pid, None) is None:
            return False
        asyncio.get_running_loop().remove_reader(self.pidfd)
        os.close(self.pidfd)
        return True


def _one_stream_socket(fds: list[int]) -> socket.socket:
    """The one descriptor a handover carries, as a socket; ValueError if it is not one."""
    if len(fds) != 1 or not stat.S_ISSOCK(os.fstat(fds[0]).st_mode):
        raise ValueError("a handover carries exactly one stream socket")
    client = socket.socket(fileno=fds[0])
    if client.type != socket.SOCK_STREAM:
        client.detach()
        raise ValueError("a handover carries exactly one stream socket")
    return client


def _answer(conn: socket.socket, answer: dict[str, Any]) -> None:
    conn.sendall(json.dumps(answer).encode() + b"\n")


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One handover line and the descriptors that came with it (blocking, in a thread)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, HELLO_MAX, 4)
    while data and not data.endswith(b"\n") and len(data) < HELLO_MAX:
        more = conn.recv(HELLO_MAX - len(data))
        if not more:
            break
        data += more
    return data, fds
