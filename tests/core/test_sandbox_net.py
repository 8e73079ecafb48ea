"""A sandbox with the network on (core/sandbox_net.py): its own namespace, out through a proxy,
and in only to its own listeners, each through a host port the daemon forwards.

A local web server on the host's loopback is the target. A sandboxed child
reaches it only through the proxy its environment names, and only where the
proxy's policy allows local addresses (Codex's ``allowLocalBinding``, here
with the domain allowed): the control that the bridge carries traffic at all.
A direct connection never reaches it; our default proxy refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.core import network_proxy, sandbox_net
from tests.rpc.echo_server import EchoServer, echo_server
from tests.rpc.test_network_proxy import FETCH, proxy_settings
from tests.sandbox.harness import needs_sandbox, run, session
from tests.service import embedded, py

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


#: A server on its own loopback at port argv[1] (IPv4 and IPv6 at once); then, every 0.3 s,
#: whether a direct connection to the host's port argv[2] gets through.
SERVE_AND_PROBE = """
import http.server, socket, sys, threading, time
class Both(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
server = Both(("::", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("serving", flush=True)
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=2).close()
        print("direct connected", flush=True)
    except OSError:
        pass
    time.sleep(0.3)
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


async def test_a_sandboxs_server_is_listed_as_a_host_port_that_reaches_it_and_nothing_else(
    tmp_path: Path, web: EchoServer
) -> None:
    """Its listener shows in `ports` within 2 s as a host port on 127.0.0.1 spliced to it
    (never its own port number: here the host's web server has that one); the sandbox
    still reaches nothing of the host; the host port closes with the process."""
    needs_sandbox()
    (tmp_path / "served.txt").write_text("hi")
    taken = int(web.url.rsplit(":", 1)[1])  # free in the sandbox's namespace
    with socket.create_server(("127.0.0.1", 0)) as guard:
        argv = [*py(SERVE_AND_PROBE), str(taken), str(guard.getsockname()[1])]
        async with embedded(tmp_path) as (_, c):
            await c.start("srv", argv, cwd=str(tmp_path), sandbox=ON)
            started = time.monotonic()
            info = await c.wait_for_port("srv", 15)
            assert time.monotonic() - started < 5  # its start, then the first sample after it
            [port] = info.ports  # one entry for its IPv4 and IPv6 sockets
            assert port["address"] == "127.0.0.1" and port["pid"] != info.pid  # the program
            assert port["port"] != taken
            url = f"http://127.0.0.1:{port['port']}/"
            pages = await asyncio.gather(*(asyncio.to_thread(_read, url) for _ in range(4)))
            assert all(b"served.txt" in page for page in pages)  # its server, not the host's
            await asyncio.sleep(1)  # the probe had its tries meanwhile
            read = await c.read("srv")
            output = b"".join(chunk.data for chunk in read.chunks).decode()
            # (the daemon runs in this loop: no blocking socket calls from here on)
            held, held_writer = await asyncio.open_connection("127.0.0.1", port["port"])
            held_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await held.readexactly(12) == b"HTTP/1.0 200"  # a connection through it ...
            await c.terminate("srv")
            await c.wait("srv", 10)
            await asyncio.sleep(0.2)
            assert not sandbox_net._HELD  # the bridge closed with the process
            with pytest.raises(OSError):  # and its forwarder
                await asyncio.open_connection("127.0.0.1", port["port"])
            await asyncio.wait_for(held.read(), 5)  # ... ends with it (EOF)
            held_writer.close()
    assert "serving" in output and "direct connected" not in output, output


#: `count` listeners; after a line on stdin, all but the first closed, which then closes
#: every connection it accepts.
MANY = """
import socket, sys
socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(int(sys.argv[1]))]
print("listening", flush=True)
sys.stdin.readline()
for s in socks[1:]:
    s.close()
print("closed", flush=True)
while True:
    socks[0].accept()[0].close()
"""


async def test_a_sandbox_gets_a_bounded_number_of_host_ports_each_gone_with_its_listener(
    tmp_path: Path,
) -> None:
    """No more host ports than `MAX_FORWARDS` for one sandbox; a listener that closes takes
    its host port along while the process runs on."""
    needs_sandbox()
    count = sandbox_net.MAX_FORWARDS + 2
    async with embedded(tmp_path) as (_, c):
        await c.start("many", [*py(MANY), str(count)], sandbox=ON, pipe_stdin=True)
        await c.read("many", until_pattern="listening", wait_ms=15_000)
        info = await c.wait_for_port("many", 15)  # a sample sees all or none: they came first
        assert len(info.ports) == sandbox_net.MAX_FORWARDS  # the rest are not shown
        before = {p["port"] for p in info.ports}
        await c.write("many", b"close\n")
        await c.read("many", until_pattern="closed", wait_ms=15_000)
        for port in sorted(before)[:5]:  # before the next sample notices: ends at once
            with contextlib.suppress(ConnectionRefusedError):  # (or it already has)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"x")
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
        for _ in range(50):
            info = await c.wait_for_port("many", 15)
            if len(info.ports) == 1:
                break
            await asyncio.sleep(0.1)
        assert len(info.ports) == 1, info.ports
        gone = before - {p["port"] for p in info.ports}
        assert len(gone) >= sandbox_net.MAX_FORWARDS - 1
        for port in sorted(gone)[:5]:
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
        await c.terminate("many")
        await c.wait("many", 10)


async def test_a_closed_bridge_lists_and_forwards_nothing() -> None:
    """After the sandbox's end: the sampler's dump is an error it skips, no host port."""
    bridge = sandbox_net.Bridge(())
    bridge.close()
    with pytest.raises(OSError, match="namespace is gone"):
        bridge.listening()
    assert bridge.expose([{"port": 8000, "address": "127.0.0.1", "pid": 2}]) == []


def _served_bridge(kind: int = socket.SOCK_STREAM) -> sandbox_net.Bridge:
    """A bridge serving one listener of `kind`, handed over as a child hands them
    (`Bridge.open_listeners`: the ``sock_diag`` socket first, here a stand-in)."""
    bridge = sandbox_net.Bridge((0,))
    diag = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener = socket.socket(socket.AF_INET, kind)
    listener.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        listener.listen()
    with diag, listener:
        socket.send_fds(bridge.child_end, [b"L"], [diag.fileno(), listener.fileno()])
    bridge.serve()
    return bridge


async def test_a_bridge_closed_as_it_starts_is_quiet_and_serves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sandbox that ends at once closes its bridge before its listeners' tasks run, or
    while their servers start: nothing to report then, and no server left behind on a
    closed socket. A listener asyncio cannot serve still warns."""
    caplog.set_level(logging.WARNING, logger=sandbox_net.__name__)
    for steps_before_close in (0, 1, 2):
        bridge = _served_bridge()
        for _ in range(steps_before_close):
            await asyncio.sleep(0)
        bridge.close()
        for _ in range(5):
            await asyncio.sleep(0)
        assert caplog.records == [], steps_before_close
        assert not any(server.is_serving() for server in bridge._servers), steps_before_close
    broken = _served_bridge(socket.SOCK_DGRAM)
    for _ in range(5):
        await asyncio.sleep(0)
    broken.close()
    assert [r.getMessage() for r in caplog.records] == ["a sandbox's proxy listener failed"]


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())
