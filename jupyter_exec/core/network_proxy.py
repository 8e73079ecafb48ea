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
only. SOCKS5 is not offered: ``ALL_PROXY`` points at the HTTP proxy, as
Codex's does when ``enableSocks5`` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import fnmatch
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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

    def __init__(self, policy: ProxyPolicy, decider: Decider | None, reporter: Reporter) -> None:
        self.policy = policy
        self._decider = decider
        self._report = reporter
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def env(self) -> dict[str, str]:
        """The variables Codex's server gives a command behind its proxy (all 34)."""
        url = f"http://127.0.0.1:{self.port}"
        no_proxy = LOCAL_NO_PROXY if self.policy.allow_local_binding else ""
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
        for tool in ("BUNDLE", "DOCKER", "YARN"):
            env[f"{tool}_HTTP_PROXY"] = env[f"{tool}_HTTPS_PROXY"] = url
        for name in ("npm_config_proxy", "npm_config_http_proxy", "npm_config_https_proxy"):
            env[name] = env[name.upper()] = url
        env["npm_config_noproxy"] = env["NPM_CONFIG_NOPROXY"] = no_proxy
        env["NO_PROXY"] = env["no_proxy"] = env["BUNDLE_NO_PROXY"] = no_proxy
        return env

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

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
        if protocol == "https_connect":
            return Decision(False, "mitm_required", "mode_guard", "non_domain")
        if method not in LIMITED_METHODS:
            return Decision(False, "method_not_allowed", "mode_guard", "non_domain")
        return None

    def _reported(
        self, decision: Decision, protocol: str, host: str, port: int, method: str, client: str
    ) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._report(
            {
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
        )

    # -- serving ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            log.debug("proxy connection failed", exc_info=True)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
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
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return
        try:
            if protocol == "https_connect":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(_forwarded_head(method, path, version, header_lines))
            await _pipe_both(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(OSError):
                await up_writer.wait_closed()


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


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side ends."""

    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(64 * 1024):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()

    tasks = [asyncio.ensure_future(copy(reader, up_writer)),
             asyncio.ensure_future(copy(up_reader, writer))]  # fmt: skip
    try:
        # The response side ends the exchange; the request side may end first (EOF sent).
        await tasks[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
