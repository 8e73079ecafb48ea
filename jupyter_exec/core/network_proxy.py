"""A managed network proxy for one process: Codex's domain policy on its HTTP traffic.

Codex (0.171) asks an exec server with ``networkProxyLaunch`` to run a proxy
next to a command (``process/start`` ``networkProxy``) and to point the
command at it through 34 environment variables (`NetworkProxy.env`). Each
request through the proxy is decided as Codex's proxy decides it (measured
against ``codex exec-server``; docs/codex.md "Managed network"):

1. a host matching a ``deny`` domain: blocked, reason ``denied``;
2. without ``allowLocalBinding``: ``localhost``, a loopback or non-public IP
   literal (unless allowed by its exact name), or an allowed host that does
   not resolve to public addresses: blocked, ``not_allowed_local``;
3. an ``allow`` domain: allowed; any other host: the `Decider` is asked
   (Codex's server asks its client, ``network/policyRequest``), or without
   one blocked, ``not_allowed``;
4. ``limited`` mode: only GET, HEAD and OPTIONS (else ``method_not_allowed``),
   and no CONNECT (``mitm_required``), as Codex without its MITM.

Every decision is reported (`Reporter`, ``network/policyDecision``). A
blocked plain-HTTP request gets a 403 with a JSON body, a blocked CONNECT a
403 with a text body, with Codex's ``x-proxy-error`` header. Domains are
shell-style globs, case-insensitive (``*.example.com``).

The proxy speaks HTTP/1.1 forwarding (the request goes on in origin form without
its ``Proxy-*`` headers; one upstream connection per client connection,
piped until either side ends) and CONNECT tunnels; it listens on 127.0.0.1
only. With ``enableSocks5`` a SOCKS5 listener (CONNECT, no authentication)
applies the same policy to raw TCP, as Codex's does (`_Socks5`); ``ALL_PROXY``
and ``FTP_PROXY`` then name it (``socks5h://``), else the HTTP proxy.

With a `Broker` (``credentialMasking``: core/credential_broker.py) a CONNECT
or SOCKS5 connect to a host where a masked credential may go is not
tunnelled: core/mitm.py opens the TLS itself and puts the real credential
back into the requests; the command also gets the variables that make its
tools trust that (`mitm.ca_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import fnmatch
import functools
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .credential_broker import Broker
from .tasks import TaskOwner

__all__ = [
    "DNS_TIMEOUT",
    "HEAD_LIMIT",
    "LIMITED_METHODS",
    "LOCAL_NO_PROXY",
    "Decider",
    "Decision",
    "NetworkProxy",
    "ProxyPolicy",
    "Reporter",
    "copy_stream",
    "pipe_both",
]


log = logging.getLogger(__name__)

#: Serves one client connection (a proxy's HTTP or SOCKS5 side).
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: ``(request {"protocol", "host", "port"}) -> (decision "allow"|"deny", reason)``.
Decider = Callable[[dict[str, Any]], Awaitable[tuple[str, str]]]
#: Receives each decision, shaped as Codex's ``network/policyDecision`` params.
Reporter = Callable[[dict[str, Any]], None]

LIMITED_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Hosts a command reaches directly when local binding is allowed (Codex's list).
LOCAL_NO_PROXY = "localhost,127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
HEAD_LIMIT = 64 * 1024
DNS_TIMEOUT = 2.0

_MESSAGES = {
    "denied": ("blocked-by-denylist", "Domain denied by the sandbox policy."),
    "not_allowed_local": (
        "blocked-by-allowlist",
        "Sandbox policy blocks local/private network addresses.",
    ),
    "not_allowed": ("blocked-by-allowlist", "Domain not in allowlist."),
    "method_not_allowed": ("blocked-by-method-policy", "Method not allowed in limited mode."),
    "mitm_required": ("blocked-by-mitm-required", "Limited mode requires HTTPS MITM"),
}
_POLICY = ("blocked-by-policy", "Request blocked by network policy.")


@dataclass
class ProxyPolicy:
    """What Codex's ``networkProxy.proxy`` asks for (the parts this proxy applies)."""

    mode: str = "full"
    allowed: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    allow_local_binding: bool = False

    @classmethod
    def from_domains(
        cls, mode: str, domains: Mapping[str, str], allow_local_binding: bool
    ) -> ProxyPolicy:
        return cls(
            mode=mode,
            allowed=[d.lower() for d, access in domains.items() if access == "allow"],
            denied=[d.lower() for d, access in domains.items() if access == "deny"],
            allow_local_binding=allow_local_binding,
        )


@dataclass
class Decision:
    allowed: bool
    reason: str
    source: str
    #: ``domain`` for the host policy, ``non_domain`` for the mode guard.
    scope: str = "domain"


def _matches(patterns: list[str], host: str) -> bool:
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def _local_literal(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return not address.is_global


async def _resolves_to_non_public(host: str, port: int) -> bool:
    """True if any address is non-public, or the name does not resolve in time."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), DNS_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError):
        return True
    return any(not ipaddress.ip_address(info[4][0]).is_global for info in infos)


class NetworkProxy:
    """One command's proxy: `start`, hand `env()` to the command, `aclose` after it."""

    def __init__(
        self,
        policy: ProxyPolicy,
        decider: Decider | None,
        reporter: Reporter,
        *,
        socks5: bool = False,
    ) -> None:
        self.policy = policy
        self._decider = decider
        self._report = reporter
        self._servers: list[asyncio.Server] = []
        self._handlers = TaskOwner("the network proxy's connections")
        self._socks5 = socks5
        self.port = 0
        #: The SOCKS5 listener's port (0: none).
        self.socks_port = 0
        #: ``NO_PROXY`` without local binding (Codex's: none).
        self.no_proxy = ""
        #: The command's masked credentials (``credentialMasking``), else None.
        self.broker: Broker | None = None

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        _SERVING[self.port] = self._serve_http
        if self._socks5:
            server = await asyncio.start_server(self._serve_socks5, "127.0.0.1", 0)
            self._servers.append(server)
            self.socks_port = server.sockets[0].getsockname()[1]
            _SERVING[self.socks_port] = self._serve_socks5

    def env(self) -> dict[str, str]:
        """The variables Codex's server gives a command behind its proxy (all 34)."""
        url = f"http://127.0.0.1:{self.port}"
        no_proxy = LOCAL_NO_PROXY if self.policy.allow_local_binding else self.no_proxy
        env = {
            "CODEX_NETWORK_ALLOW_LOCAL_BINDING": "1" if self.policy.allow_local_binding else "0",
            "CODEX_NETWORK_PROXY_ACTIVE": "1",
            "ELECTRON_GET_USE_PROXY": "true",
            "NODE_USE_ENV_PROXY": "1",
            "PIP_PROXY": url,
        }
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "WSS_PROXY", "ALL_PROXY",
                     "FTP_PROXY"):  # fmt: skip
            env[name] = env[name.lower()] = url
        if self.socks_port:
            socks = f"socks5h://127.0.0.1:{self.socks_port}"
            for name in ("ALL_PROXY", "FTP_PROXY"):
                env[name] = env[name.lower()] = socks
        for tool in ("BUNDLE", "DOCKER", "YARN"):
            env[f"{tool}_HTTP_PROXY"] = env[f"{tool}_HTTPS_PROXY"] = url
        for name in ("npm_config_proxy", "npm_config_http_proxy", "npm_config_https_proxy"):
            env[name] = env[name.upper()] = url
        env["npm_config_noproxy"] = env["NPM_CONFIG_NOPROXY"] = no_proxy
        env["NO_PROXY"] = env["no_proxy"] = env["BUNDLE_NO_PROXY"] = no_proxy
        if self.broker is not None:
            from . import mitm  # cryptography: only for a masking proxy

            env.update(mitm.ca_env())
        return env

    async def aclose(self) -> None:
        for port in (self.port, self.socks_port):
            _SERVING.pop(port, None)
        for server in self._servers:
            server.close()
            await server.wait_closed()
        await self._handlers.aclose()

    # -- policy -----------------------------------------------------------------

    async def decide(self, protocol: str, host: str, port: int, method: str) -> Decision:
        """Codex's order: deny list, local addresses, allow list, then the decider."""
        policy = self.policy
        host = host.lower().rstrip(".")
        if _matches(policy.denied, host):
            return Decision(False, "denied", "baseline_policy")
        allowlisted = _matches(policy.allowed, host)
        if not policy.allow_local_binding:
            if _local_literal(host):
                if host.strip("[]") not in policy.allowed:  # only by its exact name
                    return Decision(False, "not_allowed_local", "baseline_policy")
            elif allowlisted and await _resolves_to_non_public(host, port):
                return Decision(False, "not_allowed_local", "baseline_policy")
        if allowlisted:
            decision = Decision(True, "allow", "baseline_policy")
        elif self._decider is None:
            decision = Decision(False, "not_allowed", "baseline_policy")
        else:
            request = {"protocol": protocol, "host": host, "port": port}
            verdict, reason = await self._decider(request)
            decision = Decision(verdict == "allow", reason or verdict, "decider")
        return decision

    def _guard(self, protocol: str, method: str) -> Decision | None:
        """The limited mode's refusal of this request, if any."""
        if self.policy.mode != "limited":
            return None
        if protocol == "https_connect":  # with a broker, its TLS is ours: methods are seen
            if self.broker is not None:
                return None
            return Decision(False, "mitm_required", "mode_guard", "non_domain")
        if method not in LIMITED_METHODS:
            return Decision(False, "method_not_allowed", "mode_guard", "non_domain")
        return None

    def _reported(
        self,
        decision: Decision,
        protocol: str,
        host: str,
        port: int,
        method: str | None,
        client: str,
    ) -> None:
        """Report `decision`; `method` None (SOCKS5) leaves the member out, as Codex's."""
        now = datetime.datetime.now(datetime.timezone.utc)
        report = {
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "scope": decision.scope,
            "decision": "allow" if decision.allowed else "deny",
            "source": decision.source,
            "reason": decision.reason,
            "protocol": protocol,
            "host": host,
            "port": port,
            "method": method,
            "client": client,
            "policyOverride": False,
        }
        if method is None:
            del report["method"]
        self._report(report)

    # -- serving ------------------------------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(self._handle, reader, writer)

    async def _serve_socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(self._handle_socks5, reader, writer)

    async def _serve(
        self,
        handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            with self._handlers.adopt():
                await handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            log.debug("proxy connection failed", exc_info=True)
        except asyncio.CancelledError:
            # The proxy closed under it. This task is a connection's own (asyncio's server
            # started it, nobody awaits it): it ends quietly, where 3.11's server would log
            # the cancellation as an error.
            writer.transport.abort()
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > HEAD_LIMIT:
            raise ValueError("request head too large")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else ""
        if method == "CONNECT":
            protocol = "https_connect"
            host, port = _split_host_port(target, 443)
            path = ""
        else:
            protocol = "http"
            host, port, path = _split_absolute(target)
        host = host.lower().rstrip(".")
        decision = await self.decide(protocol, host, port, method)
        self._reported(decision, protocol, host, port, method, client)
        guard = self._guard(protocol, method) if decision.allowed else None
        if guard is not None:
            self._reported(guard, protocol, host, port, method, client)
            decision = guard
        if not decision.allowed:
            writer.write(_blocked(decision, protocol, host, port))
            await writer.drain()
            return
        brokered = protocol == "https_connect" and self._brokered(host, port)
        try:
            up_reader, up_writer = await self._connect(host, port, brokered)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return
        try:
            if protocol == "https_connect":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(_forwarded_head(method, path, version, header_lines))
            await self._relay(reader, writer, (up_reader, up_writer), host, port, brokered)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()

    async def _handle_socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """RFC 1928 CONNECT without authentication; the decision as Codex's SOCKS5 makes it
        (recorded): in limited mode a port other than 443 is refused
        (``method_not_allowed``) before anything else, and 443, once allowed, is refused
        as a tunnel (``mitm_required``), as CONNECT is; a host the decider allowed must
        still resolve to public addresses."""
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if version != 5:
            return  # SOCKS4 and others: closed without a reply
        if 0 not in methods:
            writer.write(b"\x05\xff")
            return
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        elif kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
        else:
            writer.write(_socks_reply(8))  # address type not supported
            return
        (port,) = struct.unpack(">H", await reader.readexactly(2))
        if command != 1:
            writer.write(_socks_reply(7))  # command not supported (BIND, UDP ASSOCIATE)
            return
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if peer else ""
        host = host.lower().rstrip(".")
        decision = await self._socks5_decision(host, port)
        self._reported(decision, "socks5_tcp", host, port, None, client)
        if decision.allowed and self.policy.mode == "limited":  # 443: a tunnel, not readable
            decision = Decision(False, "mitm_required", "mode_guard", "non_domain")
            self._reported(decision, "socks5_tcp", host, port, None, client)
        if not decision.allowed:
            writer.write(_socks_reply(2))  # connection not allowed by ruleset
            return
        brokered = self._brokered(host, port)
        try:
            up_reader, up_writer = await self._connect(host, port, brokered)
        except OSError:
            writer.write(_socks_reply(5))  # connection refused
            return
        try:
            bound = up_writer.get_extra_info("sockname")
            writer.write(_socks_reply(0, bound[0], bound[1]))
            await self._relay(reader, writer, (up_reader, up_writer), host, port, brokered)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()

    def _brokered(self, host: str, port: int) -> bool:
        """Whether a tunnel to `host`:`port` is opened by us: a masked credential may go
        there, or (limited mode) every one is, so its methods are seen (Codex's MITM)."""
        broker = self.broker
        return broker is not None and (self.policy.mode == "limited" or broker.covers(host, port))

    async def _connect(
        self, host: str, port: int, brokered: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if brokered:
            from . import mitm

            return await mitm.open_upstream(host, port)
        return await asyncio.open_connection(host, port)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        host: str,
        port: int,
        brokered: bool,
    ) -> None:
        """Both ways until the upstream ends; through the broker's TLS when `brokered`."""
        if brokered and self.broker is not None:
            from . import mitm

            await writer.drain()
            await mitm.serve(writer, upstream, host, port, self.broker, self._refusal(host, port))
        else:
            await pipe_both(reader, writer, *upstream)

    def _refusal(self, host: str, port: int) -> Callable[[str], bytes | None]:
        """What answers a method inside our TLS: the limited mode's 403, as Codex's."""

        def refuse(method: str) -> bytes | None:
            if self.policy.mode != "limited" or method in LIMITED_METHODS:
                return None
            refused = Decision(False, "method_not_allowed", "mode_guard", "non_domain")
            return _blocked(refused, "https_connect", host, port)

        return refuse

    async def _socks5_decision(self, host: str, port: int) -> Decision:
        policy = self.policy
        if policy.mode == "limited" and port != 443:
            return Decision(False, "method_not_allowed", "mode_guard", "non_domain")
        listed = _matches(policy.denied, host) or _matches(policy.allowed, host)
        asked = self._decider is not None and not listed
        if asked and not policy.allow_local_binding and _local_literal(host):
            asked = False  # a local literal is refused before anyone is asked
        decision = await self.decide("socks5_tcp", host, port, "")
        if (
            asked
            and decision.allowed
            and not policy.allow_local_binding
            and await _resolves_to_non_public(host, port)
        ):
            return Decision(False, "not_allowed_local", "baseline_policy")
        return decision


def _socks_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A SOCKS5 reply; the bound address as IPv4 or IPv6."""
    try:
        packed, kind = socket.inet_aton(host), 1
    except OSError:
        packed, kind = socket.inet_pton(socket.AF_INET6, host), 4
    return bytes([5, code, 0, kind]) + packed + struct.pack(">H", port)


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    return host, int(port) if port else default_port


def _split_absolute(target: str) -> tuple[str, int, str]:
    """``http://host:port/path`` -> (host, port, /path); anything else is refused."""
    if not target.lower().startswith("http://"):
        raise ValueError(f"not an absolute http URL: {target!r}")
    rest = target[len("http://") :]
    authority, slash, path = rest.partition("/")
    host, port = _split_host_port(authority.rpartition("@")[2], 80)
    return host, port, slash + path or "/"


#: Headers meant for the proxy itself; the rest (``Connection`` too: the client and
#: the server share one connection through it) goes on unchanged.
_FOR_THE_PROXY = {"proxy-connection", "proxy-authorization"}


def _forwarded_head(method: str, path: str, version: str, header_lines: list[str]) -> bytes:
    kept = [
        line
        for line in header_lines
        if line and line.split(":", 1)[0].strip().lower() not in _FOR_THE_PROXY
    ]
    lines = [f"{method} {path} {version}", *kept, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _blocked(decision: Decision, protocol: str, host: str, port: int) -> bytes:
    error, message = _MESSAGES.get(decision.reason, _POLICY)
    if protocol == "https_connect":
        content_type, body = "text/plain", message.encode()
    else:
        content_type = "application/json"
        payload = {"status": "blocked", "host": host, "reason": decision.reason,
                   "decision": "deny", "source": decision.source, "protocol": protocol,
                   "port": port, "message": message}  # fmt: skip
        body = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 403 Forbidden\r\ncontent-type: {content_type}\r\n"
        f"x-proxy-error: {error}\r\ncontent-length: {len(body)}\r\n"
        f"date: {email.utils.formatdate(usegmt=True)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def copy_stream(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy `source` into `sink` until its end, then half-close `sink` (EOF)."""
    while data := await source.read(64 * 1024):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        with contextlib.suppress(OSError):
            sink.write_eof()


async def pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until the upstream side ends (a request may end first: EOF sent)."""
    tasks = [asyncio.ensure_future(copy_stream(reader, up_writer)),
             asyncio.ensure_future(copy_stream(up_reader, writer))]  # fmt: skip
    try:
        # The response side ends the exchange; the request side may end first (EOF sent).
        await tasks[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


#: The handlers of the proxies running in this process, by port (`serving`).
_SERVING: dict[int, Handler] = {}


def serving(port: int) -> Handler | None:
    """The handler of a proxy this process runs on 127.0.0.1:`port` (a sandbox's listener
    at that port inside its network namespace is served by it: core/sandbox_net.py)."""
    return _SERVING.get(port)


#: Where the default proxy listens inside every sandbox with the network (HTTP, SOCKS5);
#: each sandbox's network namespace is its own, so fixed ports collide with nothing.
SANDBOX_PORTS = (3128, 1080)


@functools.cache
def default_proxy() -> NetworkProxy:
    """The proxy of a sandbox with the network on when no ``networkProxy`` asked for
    another: public addresses only (no local binding), every decision logged at debug.
    It listens nowhere on the host: only at `SANDBOX_PORTS` inside each sandbox.
    ``NO_PROXY`` keeps the sandbox's own loopback direct (it reaches only itself)."""
    policy = ProxyPolicy(mode="full", allowed=["*"], allow_local_binding=False)
    proxy = NetworkProxy(policy, None, lambda d: log.debug("sandbox proxy: %s", d), socks5=True)
    proxy.port, proxy.socks_port = SANDBOX_PORTS
    proxy.no_proxy = "localhost,127.0.0.1,::1"
    return proxy


def default_handler(port: int) -> Handler | None:
    """The default proxy's side for one of `SANDBOX_PORTS` (None for any other port)."""
    proxy = default_proxy()
    return {proxy.port: proxy._serve_http, proxy.socks_port: proxy._serve_socks5}.get(port)
