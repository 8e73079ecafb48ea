"""``networkProxy.proxy.transparentTcp`` (jupyter_exec.rpc.transparent_tcp) on a real service.

A sandboxed child that ignores the proxy variables opens plain TCP
connections: each goes through the proxy's SOCKS5 decision (reported as
``socks5_tcp``), an allowed one reaches the server, a denied one is reset.
Names resolve to synthetic addresses the decision sees as names. Bad starts
get Codex's -32602 and start nothing; the relay stops with its process.
The target is a TCP server on this machine's own non-loopback address (the
command's loopback is its own).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core.transparent_tcp import unavailable

from ..service import RawPeer, connected, py
from .test_network_proxy import proxy_settings

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")

#: Connects to each ``host:port`` argument, sends a line, prints what came back.
CONNECT = r"""
import os, socket, sys
print("route", open("/proc/net/route").read().split("\n")[1].split()[:2])
print("resolv", open("/etc/resolv.conf").read().strip())
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        if not host[0].isdigit():
            print("resolved", host, socket.gethostbyname(host))
        s = socket.create_connection((host, int(port)), timeout=20)
        s.sendall(b"hi\n")
        print(target, "got", s.recv(100))
    except OSError as e:
        print(target, type(e).__name__)
print("ALL_PROXY works", bool(socket.create_connection(
    ("127.0.0.1", int(os.environ["ALL_PROXY"].rsplit(":", 1)[1])), timeout=5)))
"""


def host_address() -> str | None:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


@contextlib.contextmanager
def greeter(address: str) -> Iterator[int]:
    """A TCP server on `address` that answers each connection with ``hello <line>``."""
    server = socket.create_server((address, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.sendall(b"hello " + conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, int]]:
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect to")
    with greeter(address) as port:
        yield address, port


async def run(peer: RawPeer, start: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    reply = await peer.call("process/start", start)
    assert "result" in reply, reply
    assert reply["result"]["sandboxType"] == "linuxSeccomp"
    output, decided = b"", []
    pending = list(peer.seen)
    while True:
        message = pending.pop(0) if pending else await peer.recv(60)
        method, params = message.get("method"), message.get("params", {})
        if method == "process/output":
            output += base64.b64decode(params["chunk"])
        elif method == "network/policyDecision":
            decided.append(params)
        elif method == "process/closed":
            return output.decode(), decided


def transparent_start(targets: list[str], domains: dict[str, str], **proxy: Any) -> dict[str, Any]:
    settings = proxy_settings(enableSocks5=True, transparentTcp=True, domains=domains, **proxy)
    return {"processId": "tt", "argv": py(CONNECT) + targets, "sandbox": "workspace-write",
            "networkProxy": {"proxy": settings}}  # fmt: skip


@pytest.mark.parametrize(
    "sandbox", ["workspace-write", {"mode": "workspace-write", "network": False}]
)
async def test_plain_tcp_goes_through_the_socks5_decision(
    tmp_path: Path, target: tuple[str, int], sandbox: Any
) -> None:
    address, port = target
    closed = socket.create_server((address, 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    targets = [f"{address}:{port}", f"{address}:{closed_port}", f"denied.test:{port}",
               f"127.0.0.1:{port}"]  # fmt: skip
    start = transparent_start(targets, {address: "allow", "denied.test": "deny"})
    start["sandbox"] = sandbox
    async with connected(tmp_path) as peer:
        output, decided = await run(peer, start)
    lines = output.splitlines()
    assert lines[:2] == ["route ['codextun', '00000000']", "resolv nameserver 127.0.0.53"], output
    assert f"{address}:{port} got b'hello hi\\n'" in lines, output  # through the relay
    assert f"{address}:{closed_port} ConnectionResetError" in lines, output  # refused: reset
    assert "resolved denied.test 198.18.0.1" in lines, output
    assert f"denied.test:{port} ConnectionResetError" in lines, output  # denied: reset
    assert f"127.0.0.1:{port} ConnectionRefusedError" in lines, output  # its own loopback
    assert "ALL_PROXY works True" in lines, output  # the proxy's ports are bridged in
    seen = [(d["protocol"], d["host"], d["port"], d["decision"], d["reason"]) for d in decided]
    assert seen == [
        ("socks5_tcp", address, port, "allow", "allow"),
        ("socks5_tcp", address, closed_port, "allow", "allow"),
        ("socks5_tcp", "denied.test", port, "deny", "denied"),  # the name, not 198.18.0.1
    ], decided


async def test_limited_mode_refuses_plain_tcp(tmp_path: Path, target: tuple[str, int]) -> None:
    address, port = target
    start = transparent_start([f"{address}:{port}"], {address: "allow"}, mode="limited")
    async with connected(tmp_path) as peer:
        output, decided = await run(peer, start)
    assert f"{address}:{port} ConnectionResetError" in output.splitlines(), output
    assert [d["reason"] for d in decided] == ["method_not_allowed"], decided


@pytest.mark.parametrize(
    ("start", "words"),
    [
        ({"sandbox": None}, "requires a managed Linux sandbox"),
        (
            {"networkProxy": {"proxy": proxy_settings(transparentTcp=True)}},
            "requires an enabled managed SOCKS5 proxy",
        ),
    ],
)
async def test_bad_starts_start_nothing(tmp_path: Path, start: dict[str, Any], words: str) -> None:
    params = {**transparent_start([], {}), **start}
    async with connected(tmp_path) as peer:
        reply = await peer.call("process/start", params)
        assert reply["error"]["code"] == -32602 and words in reply["error"]["message"], reply
        assert (await peer.call("process/list", {}))["result"]["processes"] == []


def tuns() -> int:
    """The TUN devices this (test and daemon) process holds open."""
    return sum(1 for fd in os.listdir("/proc/self/fd") if _target(fd) == "/dev/net/tun")


async def test_a_failed_start_leaves_no_relay(tmp_path: Path) -> None:
    before, fds = tuns(), len(os.listdir("/proc/self/fd"))
    start = {**transparent_start([], {}), "cwd": str(tmp_path / "missing")}
    async with connected(tmp_path) as peer:
        reply = await peer.call("process/start", start)
        assert reply["error"]["code"] == -32602, reply
        assert (await peer.call("process/list", {}))["result"]["processes"] == []
    assert tuns() == before and len(os.listdir("/proc/self/fd")) <= fds


async def test_the_relay_stops_with_its_process(tmp_path: Path) -> None:
    """No TUN descriptor is left open once the process is closed."""
    before = tuns()
    async with connected(tmp_path) as peer:
        await run(peer, transparent_start([], {}))
        for _ in range(100):  # the relay closes once `process/closed` has gone out
            if tuns() == before:
                break
            await asyncio.sleep(0.05)
    assert tuns() == before


def _target(fd: str) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")
    return ""
