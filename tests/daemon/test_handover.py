"""Jupyter hands each websocket to the exec daemon (daemon/handover.py), or relays it.

Real servers, real sockets: who holds the client's TCP connection is read
from /proc (psutil), so the tests show where frames go, not how fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest
from websockets.asyncio.client import connect

from jupyter_exec.daemon import paths, sockets
from tests.daemon.harness import Server, daemon_pid, server_up

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientName": "t"}}


def holders_of_port(port: int) -> set[int]:
    """Pids holding an established TCP connection whose local port is `port`."""
    return {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.pid and c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def ws_url(server: Server) -> str:
    return server.url.replace("http", "ws", 1) + "api/exec/ws"


def server_port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1].strip("/"))


def ws_options(server: Server) -> dict:
    return {"additional_headers": {"Authorization": f"token {server.token}"}, "ssl": server.tls}


async def rpc(ws, message: dict) -> dict:
    await ws.send(json.dumps(message))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply.get("id") == message["id"]:
            return reply


async def echo_while_server_stopped(server: Server) -> tuple[set[int], int | None]:
    """With the Jupyter server stopped (SIGSTOP), a tty echo still comes back."""
    headers = {"Authorization": f"token {server.token}"}
    async with connect(ws_url(server), additional_headers=headers) as ws:
        await rpc(ws, INIT)
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))
        start = {"processId": "cat", "argv": ["cat"], "tty": True}
        await rpc(ws, {"jsonrpc": "2.0", "id": 2, "method": "process/start", "params": start})
        holders = holders_of_port(server_port(server))
        server.proc.send_signal(signal.SIGSTOP)
        try:
            write = {"processId": "cat", "chunk": "aGFuZG92ZXIK"}  # "handover\n"
            await rpc(ws, {"jsonrpc": "2.0", "id": 3, "method": "process/write", "params": write})
            read = {"processId": "cat", "afterSeq": 0, "waitMs": 10_000, "untilPattern": "handover"}
            got = await rpc(
                ws, {"jsonrpc": "2.0", "id": 4, "method": "process/read", "params": read}
            )
            assert got["result"]["matched"] is True
        finally:
            server.proc.send_signal(signal.SIGCONT)
        server.proc.send_signal(signal.SIGKILL)  # the daemon closes what this server handed it
        server.proc.wait(30)
        with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed, however it is spelled
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        return holders, ws.close_code


@pytest.mark.timeout(120)
def test_the_daemon_serves_the_websocket_and_closes_it_with_its_server(tmp_path: Path) -> None:
    with server_up(tmp_path) as server:
        holders, code = asyncio.run(echo_while_server_stopped(server))
        daemon = daemon_pid(tmp_path / "runtime")
        assert daemon is not None
        assert holders == {daemon}  # the client's connection is the daemon's, not Jupyter's
        assert code == 1001  # going away: the client resumes on the next server


async def holders_during_a_session(server: Server) -> set[int]:
    async with connect(ws_url(server), **ws_options(server)) as ws:
        reply = await rpc(ws, INIT)
        assert "sessionId" in reply["result"]
        return holders_of_port(server_port(server))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["relay_websockets", "tls"])
def test_relayed_websockets_keep_frames_in_the_server(tmp_path: Path, how: str) -> None:
    """`relay_websockets`, and TLS (the daemon cannot take over tornado's session)."""
    extra = [] if how == "tls" else ["--ExecExtensionApp.relay_websockets=True"]
    with server_up(tmp_path, *extra, tls=how == "tls") as server:
        assert asyncio.run(holders_during_a_session(server)) == {server.proc.pid}


@pytest.mark.timeout(120)
def test_a_frame_sent_with_the_upgrade_request_is_not_lost(tmp_path: Path) -> None:
    """tornado reads past the request; what it read goes to the daemon with it."""
    from websockets.frames import Frame, Opcode

    with server_up(tmp_path) as server:
        port = server_port(server)
        request = (
            f"GET /api/exec/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: token {server.token}\r\n\r\n"
        ).encode()
        frame = Frame(Opcode.TEXT, json.dumps(INIT).encode()).serialize(mask=True)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request + frame)  # one segment: tornado reads both
            got = b""
            while b"sessionId" not in got:
                more = sock.recv(65536)
                assert more, got
                got += more
        assert got.startswith(b"HTTP/1.1 101")


def hand(path: Path, line: bytes, fds: list[int]) -> dict:
    """One raw handover on the daemon's socket; its answer."""
    channel = sockets.connect(path, 30)
    assert channel is not None, f"nobody listens on {path}"
    with channel:
        socket.send_fds(channel, [line], fds)
        return dict(json.loads(channel.makefile("rb").readline()))


@pytest.mark.timeout(120)
def test_bad_handovers_are_refused_and_harm_nothing(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    with server_up(tmp_path) as server:
        server.request("POST", "api/exec/processes", {"processId": "bystander",
                       "argv": [sys.executable, "-c", "import time; time.sleep(60)"]})  # fmt: skip
        path = paths.handover_path(runtime)
        good = (
            json.dumps(
                {
                    "jupyterExecDaemon": paths.daemon_protocol(),
                    "allowedActions": ["read"],
                    "request": "GET /api/exec/ws HTTP/1.1\r\n\r\n",
                }
            ).encode()
            + b"\n"
        )
        ours, theirs = socket.socketpair()
        read_end, write_end = os.pipe()
        cases = [
            (b"not json\n", [theirs.fileno()], "one JSON line"),
            (good, [], "exactly one stream socket"),
            (good, [theirs.fileno(), theirs.fileno()], "exactly one stream socket"),
            (good, [read_end], "exactly one stream socket"),
            (
                good.replace(b'"jupyterExecDaemon": ', b'"jupyterExecDaemon": 9'),
                [],
                "speaks protocol",
            ),
        ]
        for line, fds, error in cases:
            assert error in hand(path, line, fds).get("error", ""), (line, fds)
        theirs.close()
        ours.settimeout(10)
        assert ours.recv(1) == b""  # the daemon closed the socket it was given
        for fd in (read_end, write_end):
            os.close(fd)
        ours.close()
        listed = server.request("GET", "api/exec/processes")
        assert [(p["processId"], p["state"]) for p in listed] == [("bystander", "running")]
        # ...and a real client is still handed over and served.
        holders = asyncio.run(holders_during_a_session(server))
        assert holders == {daemon_pid(runtime)}
