"""A sandbox with the network on (core/sandbox_net.py): its own namespace, out through a proxy.

A local web server on the host's loopback is the target. A sandboxed child
reaches it only through the proxy its environment names, and only where the
proxy's policy allows local addresses (Codex's ``allowLocalBinding``, here
with the domain allowed): the control that the bridge carries traffic at all.
A direct connection never reaches it; our default proxy refuses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.core import network_proxy, sandbox_net
from tests.rpc.echo_server import EchoServer, echo_server
from tests.rpc.test_network_proxy import FETCH, proxy_settings
from tests.sandbox.harness import run, session
from tests.service import py

pytestmark = pytest.mark.timeout(120)
ON = {"mode": "workspace-write", "network": True}
DIRECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    print("direct connected")
except OSError as e:
    print("direct", type(e).__name__)
"""


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


async def test_codex_proxy_policy_decides_what_a_sandbox_reaches(
    tmp_path: Path, web: EchoServer
) -> None:
    port = web.url.rsplit(":", 1)[1]
    url = f"{web.url}/status/200"
    allowed = {"proxy": proxy_settings(allowLocalBinding=True, domains={"127.0.0.1": "allow"})}
    denied = {"proxy": proxy_settings()}  # local: allowed only by its exact name, as Codex
    async with session(tmp_path) as peer:
        free = await run(peer, [*py(DIRECT), port])
        assert "direct connected" in free.output, free
        boxed = await run(peer, [*py(DIRECT), port], sandbox=ON)
        assert "direct ConnectionRefusedError" in boxed.output, boxed  # its loopback is its own
        through = await run(peer, [*py(FETCH), url], sandbox=ON, networkProxy=allowed)
        assert f"{url} 200 None" in through.output, through
        refused = await run(peer, [*py(FETCH), url], sandbox=ON, networkProxy=denied)
        assert f"{url} 403 blocked-by-allowlist" in refused.output, refused
        default = await run(peer, [*py(FETCH), url], sandbox=ON)
        assert f"{url} 403 blocked-by-allowlist" in default.output, default
        assert "active 1" in default.output  # our default proxy's environment
        await asyncio.sleep(0.2)
        assert not sandbox_net._HELD  # every bridge closed with its process


async def test_the_default_proxy_lets_public_addresses_through_only() -> None:
    proxy = network_proxy.default_proxy()
    assert (proxy.port, proxy.socks_port) == network_proxy.SANDBOX_PORTS
    for host, allowed in (("93.184.216.34", True), ("2606:4700::1111", True),
                          ("127.0.0.1", False), ("localhost", False), ("10.1.2.3", False),
                          ("192.168.0.1", False), ("169.254.169.254", False), ("::1", False)):  # fmt: skip
        decision = await proxy.decide("http", host, 80, "GET")
        assert decision.allowed is allowed, (host, decision)
    assert proxy.env()["NO_PROXY"] == "localhost,127.0.0.1,::1"
    assert network_proxy.default_handler(12345) is None
