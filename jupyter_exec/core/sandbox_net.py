"""The network of a sandbox that has one: its own network namespace, out only through a proxy.

A sandboxed process with the network on still gets a network namespace of its
own, holding nothing but a loopback interface; so no listener of the host
(the Jupyter server, a standalone server, the MCP face, kernels, other
users' services) is reachable from it, whatever token it found. Its one way
out is a managed proxy (core/network_proxy.py) that refuses loopback,
link-local and private addresses unless a policy allows them:

1. in the forked child, inside the new namespace and before the program
   starts, `open_listeners` brings ``lo`` up and listens on 127.0.0.1 at the
   proxy ports its environment names, then hands the listening sockets to the
   daemon over a socketpair (`Bridge`) and keeps its end open while it lives;
2. the daemon accepts on those sockets (they stay in the sandbox's namespace;
   accepting needs none) and serves each connection with the proxy that owns
   the port: the one a Codex ``networkProxy`` launched for this start (its
   policy, its decisions reported to that client), else our default one
   (`network_proxy.SANDBOX_PORTS`), which lets through public addresses only;
3. when the child ends, its end of the socketpair closes, and the daemon
   stops serving and closes the sockets (so the namespace goes too).

Programs that ignore the proxy variables reach nothing but their own
loopback. DNS is the proxy's (HTTP CONNECT and ``socks5h`` pass names); UDP
does not leave the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import socket
import struct

from . import network_proxy

__all__ = ["Bridge", "proxy_ports"]

log = logging.getLogger(__name__)

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_LOCAL_URL = re.compile(r"(?:https?|socks5h?)://127\.0\.0\.1:(\d+)/?$")
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_HELD: set[Bridge] = set()


def proxy_ports(env: dict[str, str]) -> tuple[int, ...]:
    """The ports the sandbox's proxy listens on, `env` pointed at them.

    When `env` already names a proxy this daemon runs (a Codex ``networkProxy``
    for this start), those ports; else our default proxy's, and its variables.
    """
    ours = []
    for name in _PROXY_VARS:
        match = _LOCAL_URL.match(env.get(name, ""))
        if match and network_proxy.serving(int(match.group(1))) is not None:
            ours.append(int(match.group(1)))
    if ours:
        return tuple(dict.fromkeys(ours))
    env.update(network_proxy.default_proxy().env())
    return network_proxy.SANDBOX_PORTS


class Bridge:
    """One sandbox's proxy listeners: made in the child (`open_listeners`), served by the
    daemon (`serve`, after the spawn) until the child's end of the socketpair closes."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self._ours, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._servers: list[asyncio.Server] = []
        self._listeners: list[socket.socket] = []

    # -- in the child --------------------------------------------------------------

    def open_listeners(self) -> None:
        """Inside the new network namespace (full capabilities there, before exec)."""
        _loopback_up()
        fds = []
        for port in self.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            fds.append(sock.detach())
        socket.send_fds(self.child_end, [b"L"], fds)
        for fd in fds:
            os.close(fd)

    # -- in the daemon -------------------------------------------------------------

    def serve(self) -> None:
        """After the spawn: take the listeners and serve them in the running loop until the
        child ends; without a loop (a helper run to completion) or listeners, just close."""
        self.child_end.close()
        try:
            self._ours.setblocking(False)
            _, fds, _, _ = socket.recv_fds(self._ours, 1, len(self.ports))
        except OSError:  # the child failed before it sent them
            fds = []
        self._listeners = [socket.socket(fileno=fd) for fd in fds]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self._listeners:
            self.close()
            return
        _HELD.add(self)
        loop.add_reader(self._ours.fileno(), self._on_control)
        for sock in self._listeners:
            task = loop.create_task(self._start(sock))
            task.add_done_callback(_log_failure)

    async def _start(self, sock: socket.socket) -> None:
        port = sock.getsockname()[1]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handler = network_proxy.serving(port) or network_proxy.default_handler(port)
            if handler is None:  # that proxy stopped
                writer.close()
                return
            await handler(reader, writer)

        if self._ours.fileno() < 0:
            return  # already closed
        self._servers.append(await asyncio.start_server(handle, sock=sock))

    def _on_control(self) -> None:
        with contextlib.suppress(BlockingIOError):
            if self._ours.recv(1):
                return
        self.close()

    def close(self) -> None:
        """Stop serving and let the sockets go (the namespace then ends with its process)."""
        if self._ours.fileno() >= 0:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._ours.fileno())
            self._ours.close()
        self.child_end.close()
        for server in self._servers:
            server.close()
        for sock in self._listeners:
            sock.close()
        _HELD.discard(self)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a sandbox's proxy listener failed", exc_info=task.exception())


def _loopback_up() -> None:
    """``ip link set lo up`` (a new network namespace's ``lo`` is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        (flags,) = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 16)
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
