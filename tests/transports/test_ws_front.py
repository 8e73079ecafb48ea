"""The websocket front (transports/ws_front.py) on websockets' sans-I/O core, as a real server.

The standalone server and the daemon's handed-over websockets share it; the
handover itself is tested in tests/daemon/test_handover.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from jupyter_exec.transports.ws_front import OPEN_TIMEOUT
from tests.service import PY, standalone

INIT = {"id": 1, "method": "initialize", "params": {"clientName": "ws-front"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with standalone(cwd=tmp_path_factory.mktemp("srv")) as s:
        yield s


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


async def test_fragmented_text_and_binary_frames_are_messages(server):
    """SPEC 1: one message per frame or its fragments; binary frames of UTF-8 JSON too."""
    async with connect(server.url) as ws:
        text = json.dumps(INIT)
        await ws.send([text[:7], text[7:20], text[20:]])  # three fragments
        assert "sessionId" in json.loads(await ws.recv())["result"]
        await ws.send(json.dumps({"method": "initialized"}).encode())  # binary
        await ws.send(json.dumps({"id": 2, "method": "process/list", "params": {}}).encode())
        reply = json.loads(await ws.recv())
        assert reply["id"] == 2 and reply["result"] == {"processes": []}


def test_a_plain_http_request_is_answered_and_harms_nothing(server):
    """No upgrade: an HTTP error answer (426), the connection closed, the server serving on."""
    with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=30) as sock:
        sock.sendall(f"GET /?token={server.token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 426"), answer[:200]
    with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=30) as sock:
        sock.sendall(b"not http at all\r\n\r\n")
        sock.settimeout(30)
        while sock.recv(65536):  # dropped without an answer it could misread
            pass


async def test_the_server_still_serves_after_bad_requests(server):
    async with connect(server.url) as ws:
        await ws.send(json.dumps(INIT))
        assert "sessionId" in json.loads(await ws.recv())["result"]


@pytest.mark.timeout(60)
def test_a_client_that_never_sends_its_request_is_dropped(server):
    """A connection without an upgrade request holds nothing past OPEN_TIMEOUT."""
    with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=30) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""
        waited = time.monotonic() - start
    assert OPEN_TIMEOUT - 1 < waited < OPEN_TIMEOUT + 20


def test_only_the_public_sans_io_api_of_websockets_is_used(tmp_path: Path):
    """A websockets release that changes its asyncio server cannot break the handover:
    a daemon's handover and a front serving a real client load no server module of it."""
    script = f"""
import asyncio, json, sys
from pathlib import Path
from websockets.asyncio.client import connect
from jupyter_exec.daemon.handover import Handovers
from jupyter_exec.transports.ws_front import WebSocketClients
from tests.service import make_service

async def main():
    service = make_service(Path({str(tmp_path)!r}))
    handovers = Handovers(service, 1, 1 << 20, lambda pid: service.config.rules)
    handovers.listen(Path({str(tmp_path / "h.sock")!r}))
    clients = WebSocketClients(service, 1 << 20)
    server = await asyncio.get_running_loop().create_server(clients.accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with connect(f"ws://127.0.0.1:{{port}}/") as ws:
        await ws.send(json.dumps({INIT!r}))
        assert "sessionId" in json.loads(await ws.recv())["result"]
    server.close()
    await clients.aclose("done")
    await handovers.aclose()
    await service.aclose()
    loaded = sorted(m for m in sys.modules if m.startswith("websockets") and
                    (m.endswith(".server") and m != "websockets.server" or ".legacy" in m))
    print(json.dumps(loaded))

asyncio.run(main())
"""
    done = subprocess.run(
        [PY, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
