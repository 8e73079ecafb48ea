"""Codex's own exec-server and ours run a command behind the managed network proxy alike.

The same ``process/start`` with ``networkProxy`` goes to both; the command
prints its proxy environment (ports named ``<port>``) and what it gets when it
fetches through the proxy: the local echo server (allowed by name), a denied
domain, ``localhost`` (a local address), a domain left open (put to the
client, which stays silent: denied when ``policyDecisionTimeoutMs`` passes)
and, in limited mode, a POST. Compared: the output, and the
``network/policyRequest`` and ``network/policyDecision`` messages (time and
client port aside). With ``enableSocks5``, raw SOCKS5 requests go through
both servers' SOCKS5 listeners and their replies are compared the same way.
"""

from __future__ import annotations

import base64
import itertools
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ..rpc.echo_server import EchoServer, echo_server
from .differential import Pair, Side

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FETCH = r"""
import http.client, json, os, re, sys
port = os.environ["HTTP_PROXY"].rsplit(":", 1)[1]
for name in sorted(os.environ):
    if name != "JUPYTER_EXEC_MARKER":  # ours marks every process it starts (SPEC 3)
        print(name, os.environ[name].replace(port, "<port>"))
for method, url in (a.split(" ", 1) for a in sys.argv[1:]):
    connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
    connection.request(method, url, body=b"x" if method == "POST" else None)
    answer = connection.getresponse()
    body = answer.read()
    if answer.getheader("content-type") == "application/json" and answer.status == 403:
        body = json.loads(body)
    else:
        body = len(body)
    print(method, url, answer.status, answer.getheader("x-proxy-error"), body, flush=True)
"""
SOCKS5 = r"""
import os, socket, struct, sys
url = os.environ["ALL_PROXY"]
print("ALL_PROXY", url.rsplit(":", 1)[0], os.environ["ftp_proxy"] == url)
for target in sys.argv[1:]:
    host, port, command = target.split(" ")
    client = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30)
    client.sendall(b"\x05\x01\x00" if host != "no-method" else b"\x05\x01\x02")
    answer = client.recv(2)
    if answer == b"\x05\x00":
        address = bytes([len(host)]) + host.encode()
        client.sendall(bytes([5, int(command), 0, 3]) + address + struct.pack(">H", int(port)))
        reply = client.recv(10)
        answer += reply[:4]  # the bound address differs from run to run
        if reply[1] == 0:
            client.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
            answer += client.recv(12)
    print(target, answer.hex(), flush=True)
"""
STARTS = itertools.count(1)


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


def behind_proxy(
    side: Side,
    process_id: str,
    proxy: dict[str, Any],
    fetches: list[str],
    decision: dict[str, str] | None = None,
    ask: bool = True,
    script: str = FETCH,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run FETCH behind `proxy` on `side`: its output and the proxy's messages, normalized.
    Each ``network/policyRequest`` gets `decision` as the answer (None: none, it times out);
    `ask` False sends no ``policyDecisionTimeoutMs`` (as the real Codex without a reviewer);
    `extra` is laid over the start's params (a ``sandbox``, an ``env``, another ``argv``)."""
    side.client.notifications.clear()
    params = {
        "processId": process_id, "argv": [sys.executable, "-c", script, *fetches],
        "cwd": side.workspaces.as_uri(), "env": {}, "tty": False, "arg0": None,
        "networkProxy": {"proxy": proxy, **({"policyDecisionTimeoutMs": 300} if ask else {})},
        **(extra or {}),
    }  # fmt: skip
    answer = side.client.request("process/start", params)
    assert "result" in answer, answer
    output, requests, decisions = b"", [], []
    seen = 0
    while True:
        while seen >= len(side.client.notifications):
            side.client.notifications.append(side.client.peer.receive())
        message = side.client.notifications[seen]
        seen += 1
        method, params = message.get("method"), message.get("params", {})
        if params.get("processId") != process_id:
            continue
        if method == "process/output":
            output += base64.b64decode(params["chunk"])
        elif method == "network/policyRequest":
            requests.append(params)
            if decision is not None:
                answer = {"jsonrpc": "2.0", "id": message["id"], "result": {"decision": decision}}
                side.client.peer.send(answer)
        elif method == "network/policyDecision":
            decisions.append({k: v for k, v in params.items() if k not in ("timestamp", "client")})
        elif method == "process/closed":
            break
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", output.decode())
    return {"output": text.splitlines(), "requests": requests, "decisions": decisions}


def settings(mode: str, domains: dict[str, str]) -> dict[str, Any]:
    return {"enabled": True, "enableSocks5": False, "enableSocks5Udp": False,
            "allowUpstreamProxy": False, "dangerouslyAllowAllUnixSockets": False, "mode": mode,
            "domains": domains, "unixSockets": {}, "allowLocalBinding": False}  # fmt: skip


@pytest.mark.parametrize("mode", ["full", "limited"])
def test_a_command_behind_the_proxy(pair: Pair, web: EchoServer, mode: str) -> None:
    proxy = settings(mode, {"127.0.0.1": "allow", "denied.test": "deny", "open.test": "none"})
    fetches = [f"GET {web.url}/echo", "GET http://denied.test/", "GET http://localhost:1/",
               "GET http://open.test/", f"POST {web.url}/echo"]  # fmt: skip
    process_id = f"net-{next(STARTS)}"  # Codex's server outlives a pair: ids never repeat
    codex = behind_proxy(pair.codex, process_id, proxy, fetches)
    ours = behind_proxy(pair.ours, process_id, proxy, fetches)
    assert ours == codex


def test_the_clients_decision_applies(pair: Pair, web: EchoServer) -> None:
    """Answered ``network/policyRequest``: its reason reaches the decision and the 403."""
    proxy = settings("full", {})
    fetches = ["GET http://open.test/", "GET http://other.test/"]
    decision = {"type": "deny", "reason": "reviewed by the test"}
    process_id = f"net-{next(STARTS)}"
    codex = behind_proxy(pair.codex, process_id, proxy, fetches, decision)
    ours = behind_proxy(pair.ours, process_id, proxy, fetches, decision)
    assert ours == codex
    assert [d["reason"] for d in ours["decisions"]] == ["reviewed by the test"] * 2


def test_without_a_decision_timeout_nobody_is_asked(pair: Pair, web: EchoServer) -> None:
    """The real Codex sends no ``policyDecisionTimeoutMs`` unless a reviewer decides."""
    proxy = settings("full", {"open.test": "none"})
    fetches = ["GET http://open.test/", "GET http://other.test/"]
    process_id = f"net-{next(STARTS)}"
    codex = behind_proxy(pair.codex, process_id, proxy, fetches, ask=False)
    ours = behind_proxy(pair.ours, process_id, proxy, fetches, ask=False)
    assert ours == codex
    assert ours["requests"] == []


@pytest.mark.parametrize("mode", ["full", "limited"])
def test_socks5(pair: Pair, web: EchoServer, mode: str) -> None:
    """``enableSocks5``: raw TCP through the SOCKS5 listener, decided as by Codex's."""
    proxy = {**settings(mode, {"localhost": "allow", "denied.test": "deny", "open.test": "none",
                               "allowed.test": "allow"}), "enableSocks5": True}  # fmt: skip
    port = web.url.rsplit(":", 1)[1]
    targets = [f"localhost {port} 1", "denied.test 80 1", "allowed.test 80 1", "open.test 443 1",
               "127.0.0.1 80 1", "localhost 1 1", "open.test 80 2", "no-method 1 1",
               "denied.test 443 1", "allowed.test 443 1", "localhost 443 1"]  # fmt: skip
    process_id = f"net-{next(STARTS)}"
    for decision in ({"type": "deny", "reason": "reviewed"}, {"type": "allow", "reason": "ok"}):
        codex = behind_proxy(pair.codex, process_id, proxy, targets, decision, script=SOCKS5)
        ours = behind_proxy(pair.ours, process_id, proxy, targets, decision, script=SOCKS5)
        assert ours == codex
        process_id = f"net-{next(STARTS)}"
    assert any(d["protocol"] == "socks5_tcp" for d in ours["decisions"])
