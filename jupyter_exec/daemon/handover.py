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
import inspect
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..rpc.dispatch import ExecService
from ..transports.ws_front import WRITE_LIMIT, serve_websocket
from ..wire.rules import FrontRules
from . import sockets

log = logging.getLogger("jupyter_exec.daemon")

#: Largest handover line (the request head with its headers, the front's environment).
HELLO_MAX = 1 << 20
#: How long the handing server may take to send its line, and the client its handshake.
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
        self.service = service
        self.fallback = fallback
        self.protocol = protocol
        self.max_message_bytes = max_message_bytes
        #: Open websockets (the daemon counts them as clients for its idle exit).
        self.count = 0
        self._server = _adopting_server(self._handshake_and_serve, self._serve)
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._grants: dict[Any, tuple[frozenset[str] | None, int, FrontRules]] = {}
        self._serving: set[asyncio.Task[Any]] = set()
        self._owners: dict[int, _Owner] = {}

    def listen(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._listener = sockets.bind_private(path)
        self._tasks.add(asyncio.create_task(self._accept(self._listener)))

    async def aclose(self) -> None:
        """Stop accepting; close every handed-over websocket (1001) and wait for them."""
        self._server.serving = False
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()
        for owner in list(self._owners.values()):
            owner.close("the exec daemon is stopping")
        if self._serving:
            await asyncio.wait(set(self._serving), timeout=HANDOVER_TIMEOUT)

    # -- receiving a socket -----------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._spawn(self._take(conn))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            owner = self._owners[pid] = _Owner(pid, os.pidfd_open(pid), self._owners, self._spawn)
        return owner

    async def _adopt(
        self,
        client: socket.socket,
        head: bytes,
        allowed: frozenset[str] | None,
        rules: FrontRules,
        owner: _Owner,
    ) -> None:
        from websockets.asyncio.server import ServerConnection
        from websockets.server import ServerProtocol

        if client.family in (socket.AF_INET, socket.AF_INET6):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        # Origin was checked by Jupyter, with its own settings: none is checked here.
        connection = ServerConnection(
            ServerProtocol(max_size=self.max_message_bytes, logger=log),
            self._server,
            write_limit=WRITE_LIMIT,
            # When its server dies, a client that stopped reading must not hold
            # the session attached: the daemon lets go of it after this long.
            close_timeout=CLOSE_TIMEOUT,
        )
        self._grants[connection] = (allowed, owner.pid, rules)
        owner.connections.add(connection)
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: connection, sock=client)
        connection.data_received(head)  # the request Jupyter read, as the client sent it

    # -- serving it ---------------------------------------------------------------------

    async def _handshake_and_serve(self, connection: Any) -> None:
        """websockets >= 17 calls this as its connection handler: as `serve` does it."""
        from websockets.protocol import State

        try:
            await asyncio.wait_for(connection.handshake(), HANDOVER_TIMEOUT)
            if connection.protocol.state is not State.OPEN:
                connection.transport.abort()
                return
            connection.start_keepalive()
            async with connection:
                await self._serve(connection)
        except Exception:
            log.warning("a handed-over websocket failed", exc_info=True)
            connection.transport.abort()
        finally:
            self._grants.pop(connection, None)
            self._server.handler_tasks.discard(asyncio.current_task())

    async def _serve(self, connection: Any) -> None:
        """An open handed-over websocket, until it closes (websockets < 17 calls this)."""
        allowed, pid, rules = self._grants.pop(connection, (frozenset(), 0, self.fallback(0)))
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        self.count += 1
        try:
            await serve_websocket(self.service, connection, allowed, rules)
        finally:
            self.count -= 1
            self._serving.discard(task)
            owner = self._owners.get(pid)
            if owner is not None:
                owner.connections.discard(connection)


class _Owner:
    """A Jupyter server that handed sockets over: its websockets close when it exits."""

    def __init__(
        self,
        pid: int,
        pidfd: int,
        owners: dict[int, _Owner],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.connections: set[Any] = set()
        self._owners = owners
        self._spawn = spawn
        asyncio.get_running_loop().add_reader(pidfd, self.close, "the Jupyter server went away")

    def close(self, reason: str) -> None:
        if self._owners.pop(self.pid, None) is None:
            return
        asyncio.get_running_loop().remove_reader(self.pidfd)
        os.close(self.pidfd)
        for connection in list(self.connections):
            self._spawn(connection.close(1001, reason))


def _adopting_server(
    handshake_and_serve: Callable[[Any], Coroutine[Any, Any, None]],
    serve: Callable[[Any], Coroutine[Any, Any, None]],
) -> Any:
    """websockets' `Server`, as `serve` makes it, minus a listener of its own.

    Its constructor changed in websockets 17: before, the server does the
    handshake and calls `serve` with an open connection; from 17 on, it
    calls its handler, which does the handshake itself. (tests run both:
    Python 3.10 gets websockets 16.)
    """
    from websockets.asyncio.server import Server

    class AdoptingServer(Server):
        serving = True

        def is_serving(self) -> bool:  # Server asks its asyncio listener, which we lack
            return self.serving

    if "create_server" in inspect.signature(Server.__init__).parameters:

        async def no_listener() -> asyncio.Server:
            raise RuntimeError("handed-over websockets have no listener")

        return AdoptingServer(no_listener, handshake_and_serve, log)
    before_17: Any = AdoptingServer  # the older signature, which mypy does not see
    return before_17(serve, logger=log, open_timeout=HANDOVER_TIMEOUT)


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
