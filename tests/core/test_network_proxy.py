"""The managed network proxy (jupyter_exec.core.network_proxy) with real sockets.

Traffic goes to the local echo server (tests/rpc/echo_server.py) through the
proxy on 127.0.0.1; names under ``.test`` never resolve, so nothing leaves the
machine. The expected reasons, headers and bodies are those Codex 0.171's
proxy gives (docs/codex.md, "Managed network").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from jupyter_exec.core.network_proxy import LOCAL_NO_PROXY, NetworkProxy, ProxyPolicy

from ..rpc.echo_server import EchoServer, echo_server


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


class Recorder:
    """A decider that answers `verdict` and remembers what it was asked; the reports."""

    def __init__(self, verdict: str = "deny", reason: str = "the test says") -> None:
        self.verdict, self.reason = verdict, reason
        self.asked: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []

    async def decide(self, request: dict[str, Any]) -> tuple[str, str]:
        self.asked.append(request)
        return self.verdict, self.reason


@contextlib.asynccontextmanager
async def running(
    domains: dict[str, str],
    mode: str = "full",
    local: bool = False,
    verdict: str = "deny",
    socks5: bool = False,
) -> AsyncIterator[tuple[NetworkProxy, Recorder]]:
    recorder = Recorder(verdict)
    policy = ProxyPolicy.from_domains(mode, domains, local)
    proxy = NetworkProxy(policy, recorder.decide, recorder.reports.append, socks5=socks5)
    await proxy.start()
    try:
        yield proxy, recorder
    finally:
        await proxy.aclose()


async def exchange(
    proxy: NetworkProxy, head: str, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One raw request to the proxy: (status, headers, body) of its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head.encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10) if not head.startswith("CONNECT") else b""
    if head.startswith("CONNECT"):
        data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        headers_only = data
        status = int(headers_only.split(b" ", 2)[1])
        rest = b""
        if status != 200:
            rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return status, _headers(headers_only), rest
    writer.close()
    raw_head, _, payload = data.partition(b"\r\n\r\n")
    return int(raw_head.split(b" ", 2)[1]), _headers(raw_head), payload


def _headers(raw: bytes) -> dict[str, str]:
    lines = raw.decode("latin-1").split("\r\n")[1:]
    return {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)
    }


def get(url: str, method: str = "GET") -> str:
    host = url.split("/")[2]
    return (
        f"{method} {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Connection: keep-alive\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n"
    )


async def test_an_allowed_request_goes_through(web: EchoServer) -> None:
    async with running({"127.0.0.1": "allow"}) as (proxy, recorder):
        status, _, body = await exchange(proxy, get(f"{web.url}/echo?x=1"))
    assert status == 200
    echo = json.loads(body)
    assert echo["path"] == "/echo?x=1" and "proxy-connection" not in echo["headers"]
    assert recorder.asked == []
    [report] = recorder.reports
    assert report["decision"] == "allow" and report["source"] == "baseline_policy"
    assert report["reason"] == "allow" and report["protocol"] == "http"
    assert report["client"].startswith("127.0.0.1:")


async def test_a_denied_domain_gets_codexs_403(web: EchoServer) -> None:
    async with running({"denied.test": "deny", "*.denied.test": "deny"}) as (proxy, recorder):
        status, headers, body = await exchange(proxy, get("http://A.Denied.test/x"))
    assert status == 403 and headers["x-proxy-error"] == "blocked-by-denylist"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "status": "blocked", "host": "a.denied.test", "reason": "denied", "decision": "deny",
        "source": "baseline_policy", "protocol": "http", "port": 80,
        "message": "Domain denied by the sandbox policy.",
    }  # fmt: skip
    assert recorder.asked == [] and recorder.reports[0]["reason"] == "denied"


async def test_local_addresses_need_local_binding_or_their_exact_name(web: EchoServer) -> None:
    async with running({"*.0.0.1": "allow", "allowed.test": "allow"}) as (proxy, recorder):
        local, headers, body = await exchange(proxy, get(f"{web.url}/echo"))
        unresolvable, _, body2 = await exchange(proxy, get("http://allowed.test/"))
        localhost, _, _ = await exchange(proxy, get("http://localhost:1/"))
    assert (local, unresolvable, localhost) == (403, 403, 403)
    assert headers["x-proxy-error"] == "blocked-by-allowlist"
    assert json.loads(body)["reason"] == json.loads(body2)["reason"] == "not_allowed_local"
    assert recorder.asked == []  # never put to the client
    async with running({}, local=True, verdict="allow") as (proxy, recorder):
        status, _, _ = await exchange(proxy, get(f"{web.url}/echo"))
    assert status == 200 and recorder.asked == [
        {"protocol": "http", "host": "127.0.0.1", "port": int(web.url.rsplit(":", 1)[1])}
    ]


async def test_an_open_domain_is_decided_by_the_decider(web: EchoServer) -> None:
    async with running({"ask.test": "none"}) as (proxy, recorder):
        status, headers, body = await exchange(proxy, get("http://ask.test/x"))
        tunnel, tunnel_headers, text = await exchange(
            proxy, "CONNECT ask.test:443 HTTP/1.1\r\nHost: ask.test:443\r\n\r\n"
        )
    assert status == 403 and headers["x-proxy-error"] == "blocked-by-policy"
    assert json.loads(body)["reason"] == "the test says"
    assert json.loads(body)["source"] == "decider"
    assert tunnel == 403 and tunnel_headers["content-type"] == "text/plain"
    assert text == b"Request blocked by network policy."
    assert recorder.asked == [
        {"protocol": "http", "host": "ask.test", "port": 80},
        {"protocol": "https_connect", "host": "ask.test", "port": 443},
    ]
    assert [r["method"] for r in recorder.reports] == ["GET", "CONNECT"]


async def test_allowed_then_unreachable_is_a_502() -> None:
    async with running({}, verdict="allow") as (proxy, recorder):
        status, _, _ = await exchange(proxy, get("http://nowhere.test/"))
    assert status == 502 and recorder.reports[0]["decision"] == "allow"


async def test_connect_tunnels_to_an_allowed_host(web: EchoServer) -> None:
    port = int(web.url.rsplit(":", 1)[1])
    async with running({"127.0.0.1": "allow"}) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        assert b" 200 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(b"GET /echo?t=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert b"200 OK" in answer and b"/echo?t=1" in answer


async def test_limited_mode_allows_only_reads_and_no_tunnels(web: EchoServer) -> None:
    async with running({"127.0.0.1": "allow"}, mode="limited") as (proxy, recorder):
        read, _, _ = await exchange(proxy, get(f"{web.url}/echo"))
        write, headers, body = await exchange(proxy, get(f"{web.url}/echo", "POST"))
        tunnel, tunnel_headers, _ = await exchange(proxy, f"CONNECT {web.url[7:]} HTTP/1.1\r\n\r\n")
    assert (read, write, tunnel) == (200, 403, 403)
    assert headers["x-proxy-error"] == "blocked-by-method-policy"
    assert json.loads(body)["source"] == "mode_guard"
    assert tunnel_headers["x-proxy-error"] == "blocked-by-mitm-required"
    guards = [r for r in recorder.reports if r["scope"] == "non_domain"]
    assert [g["reason"] for g in guards] == ["method_not_allowed", "mitm_required"]


async def test_garbage_is_dropped_and_the_proxy_goes_on(web: EchoServer) -> None:
    async with running({"127.0.0.1": "allow"}) as (proxy, _):
        for junk in (b"\r\n\r\n", b"GET /relative HTTP/1.1\r\n\r\n", b"x" * 70000 + b"\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(junk)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        status, _, _ = await exchange(proxy, get(f"{web.url}/echo"))
    assert status == 200


async def test_the_environment_codex_gives_a_command() -> None:
    async with running({}) as (proxy, _):
        env = proxy.env()
    url = f"http://127.0.0.1:{proxy.port}"
    assert len(env) == 34
    assert env["HTTP_PROXY"] == env["https_proxy"] == env["ALL_PROXY"] == env["PIP_PROXY"] == url
    assert env["NO_PROXY"] == env["npm_config_noproxy"] == ""
    assert env["CODEX_NETWORK_PROXY_ACTIVE"] == "1"
    assert env["CODEX_NETWORK_ALLOW_LOCAL_BINDING"] == "0"
    async with running({}, local=True) as (proxy, _):
        assert proxy.env()["no_proxy"] == LOCAL_NO_PROXY


async def test_without_a_decider_open_hosts_are_not_allowed() -> None:
    reports: list[dict[str, Any]] = []
    proxy = NetworkProxy(ProxyPolicy.from_domains("full", {}, False), None, reports.append)
    await proxy.start()
    try:
        status, headers, body = await exchange(proxy, get("http://open.test/"))
    finally:
        await proxy.aclose()
    assert status == 403 and headers["x-proxy-error"] == "blocked-by-allowlist"
    assert json.loads(body)["message"] == "Domain not in allowlist."
    assert (reports[0]["source"], reports[0]["reason"]) == ("baseline_policy", "not_allowed")


# -- SOCKS5 (enableSocks5) ---------------------------------------------------------


async def socks5(
    proxy: NetworkProxy,
    host: str,
    port: int,
    *,
    greeting: bytes = b"\x05\x01\x00",
    command: int = 1,
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """A SOCKS5 CONNECT through `proxy`: (greeting reply + request reply, the stream)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.socks_port)
    writer.write(greeting)
    answer = await asyncio.wait_for(reader.read(2), 10)
    if answer != b"\x05\x00":
        return answer, reader, writer
    try:
        address = b"\x01" + socket.inet_aton(host)
    except OSError:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    writer.write(bytes([5, command, 0]) + address + struct.pack(">H", port))
    return answer + await asyncio.wait_for(reader.readexactly(10), 10), reader, writer


async def test_socks5_carries_an_allowed_connection(web: EchoServer) -> None:
    async with running({"127.0.0.1": "allow"}, socks5=True) as (proxy, recorder):
        env = proxy.env()
        reply, reader, writer = await socks5(proxy, "127.0.0.1", int(web.url.rsplit(":", 1)[1]))
        writer.write(b"GET /echo HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    socks = f"socks5h://127.0.0.1:{proxy.socks_port}"
    assert env["ALL_PROXY"] == env["all_proxy"] == env["FTP_PROXY"] == env["ftp_proxy"] == socks
    assert env["HTTP_PROXY"] == f"http://127.0.0.1:{proxy.port}" and len(env) == 34
    assert reply[:6] == b"\x05\x00\x05\x00\x00\x01" and answer.split(b"\r\n", 1)[0].endswith(
        b" 200 OK"
    )
    (report,) = recorder.reports
    assert report["protocol"] == "socks5_tcp" and "method" not in report
    assert (report["decision"], report["reason"], report["port"]) == (
        "allow",
        "allow",
        int(web.url.rsplit(":", 1)[1]),
    )


@pytest.mark.parametrize(
    ("mode", "verdict", "target", "reasons", "source"),
    [
        ("full", "deny", "denied.test:80", ["denied"], "baseline_policy"),
        ("full", "deny", "localhost:80", ["not_allowed_local"], "baseline_policy"),
        ("full", "deny", "10.1.2.3:80", ["not_allowed_local"], "baseline_policy"),
        ("full", "deny", "allowed.test:80", ["not_allowed_local"], "baseline_policy"),  # no address
        ("full", "deny", "open.test:80", ["the test says"], "decider"),
        # allowed by the decider, but the name has no public address (Codex's order)
        ("full", "allow", "open.test:80", ["not_allowed_local"], "baseline_policy"),
        # limited: only 443 is decided, then refused as a tunnel
        ("limited", "deny", "open.test:80", ["method_not_allowed"], "mode_guard"),
        ("limited", "deny", "denied.test:80", ["method_not_allowed"], "mode_guard"),
        ("limited", "deny", "open.test:443", ["the test says"], "decider"),
        ("limited", "allow", "open.test:443", ["not_allowed_local"], "baseline_policy"),
        ("limited", "deny", "denied.test:443", ["denied"], "baseline_policy"),
        ("limited", "deny", "127.0.0.1:443", ["allow", "mitm_required"], "mode_guard"),
    ],
)
async def test_socks5_refusals_as_codexs(
    mode: str, verdict: str, target: str, reasons: list[str], source: str
) -> None:
    domains = {"127.0.0.1": "allow", "allowed.test": "allow", "denied.test": "deny"}
    host, port = target.split(":")
    async with running(domains, mode, verdict=verdict, socks5=True) as (proxy, recorder):
        reply, _, writer = await socks5(proxy, host, int(port))
        writer.close()
    assert reply == b"\x05\x00\x05\x02\x00\x01" + bytes(6)  # not allowed by ruleset
    assert [r["reason"] for r in recorder.reports] == reasons
    last = recorder.reports[-1]
    assert (last["decision"], last["source"]) == ("deny", source)
    assert last["scope"] == ("non_domain" if source == "mode_guard" else "domain")


async def test_socks5_bad_requests_and_a_refused_connection() -> None:
    async with running({"127.0.0.1": "allow"}, socks5=True) as (proxy, recorder):
        refused, _, writer = await socks5(proxy, "127.0.0.1", 1)
        writer.close()
        no_method, reader, writer = await socks5(proxy, "x", 1, greeting=b"\x05\x01\x02")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        socks4, _, writer = await socks5(proxy, "x", 1, greeting=b"\x04\x01\x00\x50")
        writer.close()
        bind, _, writer = await socks5(proxy, "127.0.0.1", 80, command=2)
        writer.close()
        still, _, writer = await socks5(proxy, "denied.test", 80)
        writer.close()
    assert refused[2:4] == b"\x05\x05"  # connection refused
    assert no_method == b"\x05\xff" and socks4 == b""
    assert bind[2:4] == b"\x05\x07"  # command not supported, nothing decided
    assert still[2:4] == b"\x05\x02"  # the listener goes on
    assert [r["port"] for r in recorder.reports] == [1, 80]


async def test_without_enable_socks5_there_is_no_listener() -> None:
    async with running({}) as (proxy, _):
        assert proxy.socks_port == 0
        assert proxy.env()["ALL_PROXY"] == f"http://127.0.0.1:{proxy.port}"


async def test_socks5_ipv6_and_unknown_address_types() -> None:
    async with running({}, socks5=True) as (proxy, recorder):
        replies = []
        for address in (b"\x04" + socket.inet_pton(socket.AF_INET6, "::1"), b"\x07"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.socks_port)
            writer.write(b"\x05\x01\x00" + b"\x05\x01\x00" + address + struct.pack(">H", 80))
            replies.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
    assert replies[0] == b"\x05\x00\x05\x02\x00\x01" + bytes(6)  # ::1 is local: blocked
    assert replies[1] == b"\x05\x00\x05\x08\x00\x01" + bytes(6)  # address type not supported
    assert [(r["host"], r["reason"]) for r in recorder.reports] == [("::1", "not_allowed_local")]
