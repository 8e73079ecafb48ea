"""Transparent TCP for a sandboxed command: all its TCP through the proxy's SOCKS5 decision.

Codex's ``networkProxy.proxy.transparentTcp`` (docs/codex.md records what
Codex 0.171's server does): the command runs in its own network namespace
whose default route is a TUN device; every TCP connection it opens, to any
address, is completed at once and then opened through the managed SOCKS5
policy; a denied one is reset. Names resolve to synthetic addresses
(``198.18.0.N``) that the relay maps back to the name for the decision.

We keep the kernel's TCP at both ends instead of a userspace stack: the
daemon reads the packets the command sends into the TUN and rewrites their
addresses (`Nat`), so that a connection to ``X:x`` from ``A:p`` arrives as
one from a fake peer ``F:f`` to a listener ``A:R`` that the daemon holds in
the namespace; the listener's replies are rewritten back. The accepted
connection's peer names the original destination.

Set-up happens in the forked child before exec (`Namespace.setup`, while it
holds the capabilities of its new user namespace): the TUN, addresses and
routes (rtnetlink), the listener and a UDP resolver socket on
``127.0.0.53:53``; their descriptors go to the daemon over a socket pair.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from . import landlock, sandbox
from .network_proxy import copy_stream
from .tasks import TaskOwner

__all__ = [
    "FAKE_PEER",
    "LOCAL",
    "RESOLVER",
    "SYNTHETIC",
    "TUN_NAME",
    "Namespace",
    "Nat",
    "Relay",
    "Resolver",
    "prepare",
    "requested",
    "requesting",
    "unavailable",
]

log = logging.getLogger(__name__)

TUN_NAME = b"codextun"
#: The command's address in its namespace (Codex's), and the fake peers' network.
LOCAL = "192.0.2.1"
FAKE_PEER = "169.254.53.1"
#: Synthetic addresses handed out by the resolver (Codex's range).
SYNTHETIC = ipaddress.ip_network("198.18.0.0/15")
RESOLVER = ("127.0.0.53", 53)

_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_SIOCSIFFLAGS, _IFF_UP = 0x8914, 0x1
_RTM_NEWADDR, _RTM_NEWROUTE = 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400


def _checksum(data: bytes) -> bytes:
    """The Internet checksum of `data`, as it goes into the header (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))  # native words: the sum's bytes come out in order
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return struct.pack("=H", ~total & 0xFFFF)


def _netlink(sock: socket.socket, kind: int, body: bytes) -> None:
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_EXCL | _NLM_F_CREATE
    sock.send(struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body)
    answer = sock.recv(4096)
    (error,) = struct.unpack_from("=i", answer, 16)
    if error:
        raise OSError(-error, os.strerror(-error))


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


@dataclass
class Namespace:
    """The descriptors the child makes in its namespace; `setup` runs in the child."""

    #: The proxy's loopback ports, also listened on inside (its variables stay valid).
    bridged: tuple[int, ...]
    #: A file saying ``nameserver 127.0.0.53``, bound over ``/etc/resolv.conf``.
    resolv_conf: str
    #: The child's end sends, the daemon's receives.
    channel: tuple[socket.socket, socket.socket] = field(
        default_factory=lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    )

    def setup(self) -> None:
        """In the child, inside its new user and network namespaces, before exec."""
        tun = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        fcntl.ioctl(tun, _TUNSETIFF, struct.pack("16sH", TUN_NAME, _IFF_TUN | _IFF_NO_PI))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for name in (b"lo", TUN_NAME):
                fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH", name, _IFF_UP))
        index = socket.if_nametoindex(TUN_NAME.decode())
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
            local = socket.inet_aton(LOCAL)
            ifa = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, index)
            _netlink(nl, _RTM_NEWADDR, ifa + _attr(2, local) + _attr(1, local))
            # default dev codextun: main table, boot protocol, link scope, unicast
            rtm = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 253, 1, 0)
            _netlink(nl, _RTM_NEWROUTE, rtm + _attr(4, struct.pack("=i", index)))
        sockets = []
        for address in [(LOCAL, 0)] + [("127.0.0.1", port) for port in self.bridged]:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(128)
            sockets.append(listener)
        resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        resolver.bind(RESOLVER)
        sockets.append(resolver)
        target = os.path.realpath("/etc/resolv.conf").encode()
        landlock.mount(self.resolv_conf.encode(), target, None, landlock.MS_BIND, None)
        fds = [tun, *(s.fileno() for s in sockets)]
        socket.send_fds(self.channel[0], [b"ns"], fds)
        os.close(tun)
        for s in sockets:
            s.close()

    def receive(self) -> tuple[int, socket.socket, list[socket.socket], socket.socket]:
        """In the daemon, once the child has started: the TUN, the NAT's listener, the
        bridges' listeners (as `bridged`), the resolver's socket."""
        self.channel[1].settimeout(5)
        _, fds, _, _ = socket.recv_fds(self.channel[1], 16, 3 + len(self.bridged))
        tun, listener, *bridges, resolver = fds
        return (tun, socket.socket(fileno=listener), [socket.socket(fileno=b) for b in bridges],
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=resolver))  # fmt: skip

    def close(self) -> None:
        for end in self.channel:
            end.close()


@dataclass
class Nat:
    """Rewrites the TUN's IPv4 TCP packets between the command and the daemon's listener."""

    relay_port: int
    #: (command port, destination ip, destination port) -> fake peer port, and back.
    flows: dict[tuple[int, bytes, int], int] = field(default_factory=dict)
    peers: dict[int, tuple[int, bytes, int]] = field(default_factory=dict)
    next_port: int = 1024

    def destination(self, peer_port: int) -> tuple[str, int] | None:
        """The address and port the connection from fake peer port `peer_port` was for."""
        flow = self.peers.get(peer_port)
        return None if flow is None else (socket.inet_ntoa(flow[1]), flow[2])

    def rewrite(self, packet: bytes) -> bytes | None:
        """The packet to write back into the TUN, or None to drop it."""
        if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
            return None
        header = (packet[0] & 0x0F) * 4
        src, dst = packet[12:16], packet[16:20]
        sport, dport = struct.unpack_from("!HH", packet, header)
        local, fake = socket.inet_aton(LOCAL), socket.inet_aton(FAKE_PEER)
        if src == local and sport == self.relay_port and dst == fake:
            flow = self.peers.get(dport)
            if flow is None:
                return None
            port, real, real_port = flow
            return _readdress(packet, header, real, real_port, local, port)
        if src != local:
            return None
        key = (sport, dst, dport)
        peer = self.flows.get(key)
        if peer is None:
            peer = self._allocate()
            self.flows[key] = peer
            self.peers[peer] = key
        return _readdress(packet, header, fake, peer, local, self.relay_port)

    def _allocate(self) -> int:
        for _ in range(64512):
            port, self.next_port = self.next_port, self.next_port + 1
            if self.next_port > 65535:
                self.next_port = 1024
            old = self.peers.pop(port, None)
            if old is not None:
                self.flows.pop(old, None)
            return port
        raise OSError("no fake peer port left")


def _readdress(packet: bytes, header: int, src: bytes, sport: int, dst: bytes, dport: int) -> bytes:
    data = bytearray(packet)
    data[12:16], data[16:20] = src, dst
    data[10:12] = b"\0\0"
    data[10:12] = _checksum(bytes(data[:header]))
    struct.pack_into("!HH", data, header, sport, dport)
    segment = data[header:]
    segment[16:18] = b"\0\0"
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    data[header + 16 : header + 18] = _checksum(pseudo + bytes(segment))
    return bytes(data)


# -- the daemon's side ------------------------------------------------------------------


class Resolver:
    """Hands out a synthetic address per name (A only: the NAT carries IPv4), in order."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self._addresses: dict[str, str] = {}

    def address(self, name: str) -> str | None:
        """`name`'s synthetic address (None: all 131070 are taken)."""
        name = name.lower().rstrip(".")
        if name not in self._addresses:
            if len(self._addresses) + 2 >= SYNTHETIC.num_addresses:
                return None
            address = str(SYNTHETIC[len(self._addresses) + 1])
            self._addresses[name] = address
            self.names[address] = name
        return self._addresses[name]

    def answer(self, query: bytes) -> bytes | None:
        """The reply to a DNS `query` (None: not a query we read)."""
        if len(query) < 12 or query[2] & 0x80:
            return None
        (count,) = struct.unpack_from("!H", query, 4)
        labels, at = [], 12
        while at < len(query) and query[at]:
            length = query[at]
            labels.append(query[at + 1 : at + 1 + length].decode("ascii", "replace"))
            at += 1 + length
        at += 1
        if count != 1 or at + 4 > len(query):
            return None
        kind, klass = struct.unpack_from("!HH", query, at)
        question = query[12 : at + 4]
        answers = b""
        address = self.address(".".join(labels)) if kind == 1 and klass == 1 and labels else None
        if address is not None:
            packed = socket.inet_aton(address)
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + packed
        flags = 0x8180 | (query[2] & 0x01) << 8  # response, recursion available, RD kept
        head = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), flags, 1,
                           1 if answers else 0, 0, 0)  # fmt: skip
        return head + question + answers


class Relay:
    """One command's transparent TCP: the NAT on its TUN, each connection opened through
    the proxy's SOCKS5 listener on ``127.0.0.1:socks_port`` (its policy decides and
    reports), the bridges to the proxy's ports, and the resolver. `aclose` ends it all."""

    def __init__(self, namespace: Namespace, socks_port: int) -> None:
        self.namespace = namespace
        self.socks_port = socks_port
        self.resolver = Resolver()
        self._tun = -1
        self._nat: Nat | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks = TaskOwner("the transparent TCP relay's connections")
        self._dns: socket.socket | None = None

    async def start(self) -> None:
        """Once the child has started (its namespace is made before its exec)."""
        loop = asyncio.get_running_loop()
        # Sent before the child's exec, which the spawn waited for: already there.
        self._tun, listener, bridges, self._dns = self.namespace.receive()
        self._nat = Nat(listener.getsockname()[1])
        os.set_blocking(self._tun, False)
        loop.add_reader(self._tun, self._on_packets)
        self._dns.setblocking(False)
        loop.add_reader(self._dns.fileno(), self._on_query)
        listener.setblocking(False)
        self._servers.append(await asyncio.start_server(self._relay, sock=listener))
        for bridge, port in zip(bridges, self.namespace.bridged, strict=True):
            bridge.setblocking(False)
            self._servers.append(await asyncio.start_server(self._bridge(port), sock=bridge))

    def _on_packets(self) -> None:
        assert self._nat is not None
        for _ in range(256):
            try:
                packet = os.read(self._tun, 65536)
            except BlockingIOError:
                return
            out = self._nat.rewrite(packet)
            if out is not None:
                with contextlib.suppress(OSError):  # the queue full: TCP sends it again
                    os.write(self._tun, out)

    def _on_query(self) -> None:
        assert self._dns is not None
        with contextlib.suppress(OSError):
            query, peer = self._dns.recvfrom(4096)
            reply = self.resolver.answer(query)
            if reply is not None:
                self._dns.sendto(reply, peer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection from the command: through SOCKS5 to where it was meant for."""
        assert self._nat is not None
        peer = writer.get_extra_info("peername")
        target = self._nat.destination(peer[1]) if peer[0] == FAKE_PEER else None
        try:
            if target is None:
                raise ConnectionRefusedError("not a connection the NAT made")
            host = self.resolver.names.get(target[0], target[0])
            up_reader, up_writer = await _socks5_connect(self.socks_port, host, target[1])
        except (OSError, asyncio.IncompleteReadError):
            _reset(writer)  # as Codex's: the command's connection is reset, never refused
            return
        await self._pipe(reader, writer, up_reader, up_writer)

    def _bridge(self, port: int) -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                _reset(writer)
                return
            await self._pipe(reader, writer, up_reader, up_writer)

        return serve

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            with self._tasks.adopt():
                await asyncio.gather(copy_stream(reader, up_writer), copy_stream(up_reader, writer))
        except OSError:
            log.debug("transparent TCP connection ended", exc_info=True)
        finally:
            for w in (writer, up_writer):
                w.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for server in self._servers:
            server.close()
        await self._tasks.aclose()
        if self._tun >= 0:
            loop.remove_reader(self._tun)
            os.close(self._tun)
            self._tun = -1
        if self._dns is not None:
            loop.remove_reader(self._dns.fileno())
            self._dns.close()
            self._dns = None
        self.namespace.close()
        with contextlib.suppress(OSError):
            os.unlink(self.namespace.resolv_conf)
            os.rmdir(os.path.dirname(self.namespace.resolv_conf))


async def _socks5_connect(
    port: int, host: str, target_port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A CONNECT through the proxy's SOCKS5 listener; refused (OSError) unless it succeeds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        name = host.encode("idna")
        writer.write(b"\x05\x01\x00" + bytes([5, 1, 0, 3, len(name)]) + name)
        writer.write(struct.pack("!H", target_port))
        greeting = await reader.readexactly(2)
        reply = await reader.readexactly(4)
        if greeting != b"\x05\x00" or reply[1] != 0:
            raise ConnectionRefusedError(f"SOCKS5 reply {reply[1]}")
        await reader.readexactly({1: 4, 4: 16}.get(reply[3], 0) + 2)  # the bound address
    except BaseException:
        writer.close()
        raise
    return reader, writer


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (linger 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


# -- asking for it on a start -----------------------------------------------------------


def unavailable() -> str | None:
    """Why no command can get transparent TCP here, or None."""
    if not os.path.exists("/dev/net/tun"):
        return "there is no /dev/net/tun"
    return sandbox.unavailable()


#: The relay the `process/start` being handled asks for (set around the registry's start).
_REQUESTED: ContextVar[Relay | None] = ContextVar("transparent_tcp", default=None)


def prepare(bridged: tuple[int, ...], socks_port: int) -> Relay:
    """A relay for one command, before its start (`requesting` hands it to the registry)."""
    directory = tempfile.mkdtemp(prefix="jupyter-exec-resolv-")
    path = os.path.join(directory, "resolv.conf")
    with open(path, "w", encoding="ascii") as f:
        f.write(f"nameserver {RESOLVER[0]}\n")
    os.chmod(directory, 0o755)
    return Relay(Namespace(bridged, path), socks_port)


@contextlib.contextmanager
def requesting(relay: Relay | None) -> Iterator[None]:
    """While this runs, the registry's next start uses `relay` (`requested`)."""
    token = _REQUESTED.set(relay)
    try:
        yield
    finally:
        _REQUESTED.reset(token)


def requested() -> Relay | None:
    """The relay a start should set up, taken once (a later start in the same call gets none)."""
    relay = _REQUESTED.get()
    _REQUESTED.set(None)
    return relay
