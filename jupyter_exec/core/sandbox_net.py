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

The other way, host to sandbox, only servers the sandbox starts are reached
(SPEC 11 `ports`; `Bridge.expose`): the child also hands over a ``sock_diag``
netlink socket made in the namespace, on which the usage sampler lists the
namespace's listeners (core/usage.py). For each, the daemon listens on the
host's 127.0.0.1 (at a port the kernel picks) and splices every
connection to a socket the outer supervisor makes in the namespace on
request (pidns.py; it answers on its end of the socketpair, and only with
unconnected sockets) and the daemon connects to the listener. Nothing the
sandbox does opens a way out: it cannot reach the supervisor or the pair.

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
import threading
from collections import deque
from typing import Any

from . import network_proxy, usage

__all__ = ["MAX_FORWARDS", "Bridge", "proxy_ports"]

log = logging.getLogger(__name__)

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_LOCAL_URL = re.compile(r"(?:https?|socks5h?)://127\.0\.0\.1:(\d+)/?$")
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_HELD: set[Bridge] = set()
#: How long a connection from the host waits for the supervisor's socket.
_SOCKET_TIMEOUT = 10.0
#: The most listeners of one sandbox reached from the host (each holds a host port).
MAX_FORWARDS = 64


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
    daemon (`serve`, after the spawn) until the child's end of the socketpair closes;
    and its own listeners, found (`listening`) and forwarded from the host (`expose`)."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self._ours, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._servers: list[asyncio.Server] = []
        self._listeners: list[socket.socket] = []
        #: The namespace's ``sock_diag`` socket (read in the sampler's thread, so locked).
        self._diag: socket.socket | None = None
        self._diag_lock = threading.Lock()
        #: Host port forwarders by in-sandbox port; requests awaiting the supervisor's socket.
        self._forwards: dict[int, _Forward] = {}
        self._waiting: deque[asyncio.Future[socket.socket]] = deque()

    # -- in the child --------------------------------------------------------------

    def open_listeners(self) -> None:
        """Inside the new network namespace (full capabilities there, before exec)."""
        _loopback_up()
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        fds = [socket.socket(socket.AF_NETLINK, kind, usage.NETLINK_SOCK_DIAG).detach()]
        for port in self.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            fds.append(sock.detach())
        socket.send_fds(self.child_end, [b"L"], fds)
        for fd in fds:
            os.close(fd)

    def answer(self) -> bool:  # pragma: no cover - the outer supervisor (pidns.py)
        """In the outer supervisor: answer one request of the daemon with a new unconnected
        TCP socket of this namespace (b"4" or b"6"); False once the daemon is gone."""
        try:
            request = self.child_end.recv(1)
        except OSError:
            return False
        if not request:
            return False
        family = socket.AF_INET6 if request == b"6" else socket.AF_INET
        try:
            made = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        except OSError:
            self.child_end.sendall(b"E")
            return True
        with made:
            socket.send_fds(self.child_end, [b"S"], [made.fileno()])
        return True

    # -- in the daemon -------------------------------------------------------------

    def serve(self) -> None:
        """After the spawn: take the listeners and serve them in the running loop until the
        child ends; without a loop (a helper run to completion) or listeners, just close."""
        self.child_end.close()
        try:
            self._ours.setblocking(False)
            _, fds, _, _ = socket.recv_fds(self._ours, 1, len(self.ports) + 1)
        except OSError:  # the child failed before it sent them
            fds = []
        if fds:
            self._diag = socket.socket(fileno=fds.pop(0))
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
        """Serve one listener, unless the bridge closed first (a process that ended at
        once closes it before this runs, or while the server starts): then quietly nothing.
        A real failure (a socket asyncio cannot serve) still raises, for `_log_failure`."""
        if self._ours.fileno() < 0:
            return  # closed before this ran: `sock` is closed too
        port = sock.getsockname()[1]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handler = network_proxy.serving(port) or network_proxy.default_handler(port)
            if handler is None:  # that proxy stopped
                writer.close()
                return
            await handler(reader, writer)

        server = await asyncio.start_server(handle, sock=sock, start_serving=False)
        if self._ours.fileno() < 0:
            return  # closed meanwhile: this server never served, and its socket is gone
        # In `_servers` before it serves: a close during `start_serving` stops it
        # before its socket closes (a server left behind would serve a closed fd).
        self._servers.append(server)
        await server.start_serving()

    def _on_control(self) -> None:
        """The supervisor's answers (one byte each, a socket with b"S"), or its end."""
        while True:
            try:
                reply, fds, _, _ = socket.recv_fds(self._ours, 1, 1)
            except BlockingIOError:
                return
            except OSError:
                reply, fds = b"", []
            if not reply:
                for fd in fds:
                    os.close(fd)
                self.close()
                return
            made = socket.socket(fileno=fds[0]) if fds else None
            waiter = self._waiting.popleft() if self._waiting else None
            if waiter is None or waiter.done():
                if made is not None:
                    made.close()
            elif made is None:
                waiter.set_exception(OSError("the sandbox could not make a socket"))
            else:
                waiter.set_result(made)

    # -- the host to the sandbox's listeners (SPEC 11 ports) -----------------------

    def listening(self) -> dict[int, tuple[str, int]]:
        """The namespace's listening TCP sockets (`usage.listening_sockets`; any thread)."""
        with self._diag_lock:
            if self._diag is None:
                raise OSError("the sandbox's network namespace is gone")
            return usage.listening_sockets(self._diag)

    def expose(self, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The sandbox's listeners as the host reaches them: one forwarder on 127.0.0.1 per
        in-sandbox port (made on the first sight, closed when the listener is gone)."""
        if self._ours.fileno() < 0:
            return []
        wanted: dict[int, dict[str, Any]] = {}
        for entry in ports:  # an IPv4 listener first: 0.0.0.0 and :: often come together
            known = wanted.get(entry["port"])
            if known is None or (":" in known["address"] and ":" not in entry["address"]):
                wanted[entry["port"]] = entry
        for port in set(self._forwards) - set(wanted):
            self._forwards.pop(port).close()
        shown = []
        for port, entry in wanted.items():
            forward = self._forwards.get(port)
            if forward is None and len(self._forwards) >= MAX_FORWARDS:
                continue  # not shown: a sandbox does not get to hold all of the host's ports
            if forward is None:
                try:
                    forward = self._forwards[port] = _Forward(self, entry["address"], port)
                except OSError:  # no host port left: not shown rather than unreachable
                    log.warning("no host port for a sandbox's listener", exc_info=True)
                    continue
            shown.append({"port": forward.host_port, "address": "127.0.0.1", "pid": entry["pid"]})
        return sorted(shown, key=lambda p: p["port"])

    async def socket_inside(self, family: int) -> socket.socket:
        """A new unconnected TCP socket of the sandbox's namespace, from its supervisor."""
        waiter: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            self._ours.send(b"6" if family == socket.AF_INET6 else b"4")
        except OSError:
            self._waiting.remove(waiter)
            raise
        return await asyncio.wait_for(waiter, _SOCKET_TIMEOUT)

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
        for forward in self._forwards.values():
            forward.close()
        self._forwards.clear()
        while self._waiting:
            self._waiting.popleft().cancel()
        with self._diag_lock:
            if self._diag is not None:
                self._diag.close()
                self._diag = None
        _HELD.discard(self)


class _Forward:
    """One sandbox listener reached from the host: 127.0.0.1:`host_port` spliced to it."""

    def __init__(self, bridge: Bridge, address: str, port: int) -> None:
        self._bridge = bridge
        ipv6 = ":" in address
        self._family = socket.AF_INET6 if ipv6 else socket.AF_INET
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
        self._target = (wildcard.get(address, address), port)
        self._sock = _host_listener()
        self.host_port: int = self._sock.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._task = asyncio.get_running_loop().create_task(self._serve())
        self._task.add_done_callback(_log_failure)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            try:
                inside = await self._bridge.socket_inside(self._family)
            except (OSError, asyncio.TimeoutError):
                return
            try:
                inside.setblocking(False)
                await asyncio.get_running_loop().sock_connect(inside, self._target)
                up_reader, up_writer = await asyncio.open_connection(sock=inside)
            except OSError:  # the listener is gone (until the next sample notices)
                inside.close()
                return
            except BaseException:  # cancelled: the bridge closed
                inside.close()
                raise
            self._writers.add(up_writer)
            try:
                await network_proxy.pipe_both(reader, writer, up_reader, up_writer)
            finally:
                up_writer.close()
                self._writers.discard(up_writer)
        finally:
            writer.close()
            self._writers.discard(writer)

    def close(self) -> None:
        """Stop listening and end every connection through it."""
        self._task.cancel()
        if self._server is not None:
            self._server.close()
        self._sock.close()
        for writer in list(self._writers):
            writer.close()


def _host_listener() -> socket.socket:
    """A listening socket on the host's 127.0.0.1 at a port the kernel picks: never the
    sandbox's choice, so that it cannot take a port host clients expect another service at."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a sandbox's proxy listener failed", exc_info=task.exception())


def _loopback_up() -> None:
    """``ip link set lo up`` (a new network namespace's ``lo`` is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        (flags,) = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 16)
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
