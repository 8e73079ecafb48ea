"""``networkProxy`` on ``process/start`` (jupyter_exec.rpc.network_proxy) on a real service.

A real child fetches through the proxy its environment names (HTTP_PROXY);
the test plays Codex's client: it answers ``network/policyRequest`` and reads
``network/policyDecision``. Targets are the local echo server and ``.test``
names that never resolve.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..service import RawPeer, connected, make_service, py
from .echo_server import EchoServer, echo_server

FETCH = """
import http.client, os, sys
host, port = os.environ["HTTP_PROXY"].rsplit("/", 1)[1].split(":")
print("active", os.environ["CODEX_NETWORK_PROXY_ACTIVE"], "path", bool(os.environ.get("PATH")))
for url in sys.argv[1:]:
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", url)
    answer = connection.getresponse()
    print(url, answer.status, answer.getheader("x-proxy-error"), flush=True)
"""


def proxy_settings(**overrides: Any) -> dict[str, Any]:
    proxy = {"enabled": True, "enableSocks5": False, "enableSocks5Udp": False,
             "allowUpstreamProxy": False, "dangerouslyAllowAllUnixSockets": False,
             "mode": "full", "domains": {}, "unixSockets": {}, "allowLocalBinding": False}  # fmt: skip
    return {**proxy, **overrides}


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


async def run(
    peer: RawPeer, urls: list[str], network_proxy: dict[str, Any], answer: Any
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    # `answer` None: the test fails if the server asks at all
    """Start the fetching child; answer each policy request with `answer(params)` (None:
    stay silent). Its output, the policy requests and the decisions reported."""
    start = {"processId": "fetch", "argv": py(FETCH) + urls, "networkProxy": network_proxy}
    reply = await peer.call("process/start", start)
    assert "result" in reply, reply
    output, asked, decided = b"", [], []
    pending = list(peer.seen)
    while True:
        message = pending.pop(0) if pending else await peer.recv(30)
        method, params = message.get("method"), message.get("params", {})
        if method == "process/output":
            output += base64.b64decode(params["chunk"])
        elif method == "network/policyRequest":
            asked.append(params)
            assert answer is not None, f"the server asked: {params}"
            result = answer(params)
            if result is not None:
                peer.send_raw(json.dumps({"jsonrpc": "2.0", "id": message["id"], **result}))
        elif method == "network/policyDecision":
            decided.append(params)
        elif method == "process/closed":
            return output.decode(), asked, decided


def decision(kind: str, reason: str = "") -> Any:
    return lambda params: {"result": {"decision": {"type": kind, "reason": reason}}}


async def test_allowed_denied_and_asked(tmp_path: Path, web: EchoServer) -> None:
    urls = [f"{web.url}/echo", "http://denied.test/", "http://ask.test/", "http://ok.test/"]
    settings = proxy_settings(domains={"127.0.0.1": "allow", "denied.test": "deny"})

    def answer(params: dict[str, Any]) -> Any:
        kind = "allow" if params["request"]["host"] == "ok.test" else "deny"
        return decision(kind, "reviewed")(params)

    async with connected(tmp_path) as peer:
        network_proxy = {"proxy": settings, "policyDecisionTimeoutMs": 20000}
        output, asked, decided = await run(peer, urls, network_proxy, answer)
    lines = output.splitlines()
    assert lines[0] == "active 1 path True"  # the proxy's variables on top of the usual env
    assert lines[1:] == [
        f"{web.url}/echo 200 None",
        "http://denied.test/ 403 blocked-by-denylist",
        "http://ask.test/ 403 blocked-by-policy",
        "http://ok.test/ 502 None",  # allowed, but the name does not resolve
    ]
    assert asked == [
        {"processId": "fetch", "request": {"protocol": "http", "host": h, "port": 80}}
        for h in ("ask.test", "ok.test")
    ]
    summary = [(d["host"], d["decision"], d["source"], d["reason"]) for d in decided]
    assert summary == [
        ("127.0.0.1", "allow", "baseline_policy", "allow"),
        ("denied.test", "deny", "baseline_policy", "denied"),
        ("ask.test", "deny", "decider", "reviewed"),
        ("ok.test", "allow", "decider", "reviewed"),
    ]
    assert all(d["processId"] == "fetch" for d in decided)


@pytest.mark.parametrize(
    "answer",
    [
        lambda params: None,  # silent past policyDecisionTimeoutMs
        lambda params: {"error": {"code": -32000, "message": "no"}},
        lambda params: {"result": {"nonsense": True}},
    ],
)
async def test_no_usable_answer_is_a_deny(tmp_path: Path, answer: Any) -> None:
    network_proxy = {"proxy": proxy_settings(), "policyDecisionTimeoutMs": 300}
    async with connected(tmp_path) as peer:
        output, asked, decided = await run(peer, ["http://ask.test/"], network_proxy, answer)
        # the connection is still fine
        assert "result" in await peer.call("process/list", {})
    assert "http://ask.test/ 403 blocked-by-allowlist" in output
    assert len(asked) == 1
    assert (decided[0]["decision"], decided[0]["reason"]) == ("deny", "not_allowed")


async def test_without_a_decision_timeout_the_client_is_not_asked(tmp_path: Path) -> None:
    """As the real Codex sends it unless a reviewer decides: open hosts are not allowed."""
    network_proxy = {"proxy": proxy_settings(domains={"ask.test": "none"})}
    async with connected(tmp_path) as peer:
        output, asked, decided = await run(peer, ["http://ask.test/"], network_proxy, None)
    assert "http://ask.test/ 403 blocked-by-allowlist" in output
    assert asked == []
    assert [(d["source"], d["reason"]) for d in decided] == [("baseline_policy", "not_allowed")]


async def test_a_disabled_proxy_changes_nothing(tmp_path: Path) -> None:
    start = {"processId": "p", "argv": py("import os; print('HTTP_PROXY' in os.environ)"),
             "networkProxy": {"proxy": proxy_settings(enabled=False)}}  # fmt: skip
    async with connected(tmp_path) as peer:
        assert "result" in await peer.call("process/start", start)
        read = await peer.call("process/read", {"processId": "p", "waitMs": 10000})
    chunks = read["result"]["chunks"]
    assert b"".join(base64.b64decode(c["chunk"]) for c in chunks).strip() == b"False"


async def test_enable_socks5_names_the_socks5_listener(tmp_path: Path) -> None:
    script = "import os; print(os.environ['ALL_PROXY'], os.environ['HTTP_PROXY'], flush=True)"
    start = {"processId": "p", "argv": py(script),
             "networkProxy": {"proxy": proxy_settings(enableSocks5=True)}}  # fmt: skip
    output = b""
    async with connected(tmp_path) as peer:
        assert "result" in await peer.call("process/start", start)
        pending = list(peer.seen)
        while (message := pending.pop(0) if pending else await peer.recv(30)).get(
            "method"
        ) != "process/closed":
            if message.get("method") == "process/output":
                output += base64.b64decode(message["params"]["chunk"])
    socks, http = output.decode().split()
    assert socks.startswith("socks5h://127.0.0.1:") and http.startswith("http://127.0.0.1:")
    assert socks.rsplit(":", 1)[1] != http.rsplit(":", 1)[1]


@pytest.mark.parametrize(
    ("network_proxy", "words"),
    [
        ({}, "proxy"),
        ({"proxy": {}}, "enabled"),
        ({"proxy": proxy_settings(mode="open")}, "mode"),
        ({"proxy": proxy_settings(domains={"x": "maybe"})}, "domains"),
        ("on", "networkProxy"),
        ({"proxy": proxy_settings(transparentTcp=True)}, "requires a managed Linux sandbox"),
        ({"proxy": proxy_settings(transparentTcp="yes")}, "transparentTcp"),
    ],
)
async def test_bad_network_proxy_starts_nothing(
    tmp_path: Path, network_proxy: Any, words: str
) -> None:
    start = {"processId": "p", "argv": py("pass"), "networkProxy": network_proxy}
    async with connected(tmp_path) as peer:
        reply = await peer.call("process/start", start)
        assert reply["error"]["code"] == -32602 and words in reply["error"]["message"], reply
        listed = await peer.call("process/list", {})
    assert listed["result"]["processes"] == []


async def test_advertised(tmp_path: Path) -> None:
    async with connected(tmp_path) as peer:
        caps = (await peer.call("environment/info"))["result"]["capabilities"]
    assert caps["networkProxyLaunch"] is True and caps["networkProxyReviewDomains"] is True
    assert caps["networkProxyTransparentTcp"] is True  # tests/rpc/test_transparent_tcp.py


def our_listeners() -> set[str]:
    """Inodes of the TCP sockets this test process listens on (its proxies among them)."""
    ours = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}  # fmt: skip
    with open("/proc/self/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return {row[9] for row in rows if row[3] == "0A" and f"socket:[{row[9]}]" in ours}


async def test_the_proxy_stops_with_its_process_or_its_failed_start(tmp_path: Path) -> None:
    before = our_listeners()
    # alive long enough that its proxy is seen listening, on a loaded machine too
    start = {"processId": "p", "argv": py("import time; time.sleep(1)"),
             "networkProxy": {"proxy": proxy_settings()}}  # fmt: skip
    async with connected(tmp_path) as peer:
        assert "result" in await peer.call("process/start", start)
        started = our_listeners() - before
        assert len(started) == 1  # the proxy
        again = await peer.call("process/start", start)  # the id is taken: nothing starts
        assert again["error"]["code"] == -32600, again
        assert our_listeners() - before <= started  # the second proxy is gone already
        await peer.call("process/read", {"processId": "p", "waitMs": 10000})
        for _ in range(100):  # closed after the process closes
            if not our_listeners() - before:
                break
            await asyncio.sleep(0.05)
        assert not our_listeners() - before


async def test_a_proxy_is_the_services_task_and_stops_when_the_service_closes(
    tmp_path: Path,
) -> None:
    """Its process outlives the connection; the service owns the proxy's closer and
    awaits it as it closes (the registry ends the process first)."""
    before = our_listeners()
    start = {"processId": "p", "argv": py("import time; time.sleep(600)"),
             "networkProxy": {"proxy": proxy_settings()}, "lifetime": "detached"}  # fmt: skip
    service = make_service(tmp_path)
    peer = RawPeer(service)
    await peer.handshake()
    assert "result" in await peer.call("process/start", start)
    await peer.close()
    assert len(service.tasks) == 1 and len(our_listeners() - before) == 1  # it stays
    await service.aclose()
    assert len(service.tasks) == 0 and not our_listeners() - before
