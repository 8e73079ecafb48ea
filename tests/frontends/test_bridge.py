"""`jupyter-exec bridge` (frontends/bridge.py): stdio relayed to a real standalone server's websocket."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.service import PY, lines_until, standalone


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with standalone(cwd=tmp_path_factory.mktemp("srv")) as s:
        yield s


def test_bridge_relays_stdio_to_a_websocket_with_a_header_token(server, tmp_path):
    tf = tmp_path / "token"
    tf.write_text(server.token)
    bridge = subprocess.Popen(
        [PY, "-m", "jupyter_exec", "bridge", server.bare_url, "--token-file", str(tf)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bridge.stdin is not None
    for msg in (
        {"id": 1, "method": "initialize", "params": {"clientName": "bridge"}},
        {"method": "initialized"},
        {
            "id": 2,
            "method": "process/start",
            "params": {"processId": "via-bridge", "argv": ["echo", "bridged"]},
        },
        {
            "id": 3,
            "method": "process/read",
            "params": {"processId": "via-bridge", "waitMs": 5000, "untilPattern": "bridged"},
        },
    ):
        bridge.stdin.write(json.dumps(msg) + "\n")
    bridge.stdin.flush()
    reply = next(m for m in lines_until(bridge, 3) if m.get("id") == 3)
    assert reply["result"]["matched"] is True
    bridge.stdin.close()
    assert bridge.wait(20) == 0


def test_bridge_reports_a_refused_token(server):
    r = subprocess.run(
        [PY, "-m", "jupyter_exec", "bridge", server.bare_url, "--token", "wrong"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "401" in r.stderr
