"""The standalone server (transports/serve.py) as a real subprocess: websocket auth and
origin, stdio, crash cleanup. Its stdio bridge is tests/frontends/test_bridge.py's."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from jupyter_exec.client import ExecClient
from tests.service import PY, lines_until, pid_alive, py, standalone, tree_of


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with standalone(cwd=tmp_path_factory.mktemp("srv")) as s:
        yield s


def test_generated_token_is_printed_with_the_url(server):
    assert len(server.token) >= 32 and server.url.endswith("?token=" + server.token)


async def test_query_token_header_token_and_bearer_all_work(server):
    async with connect(server.url) as ws:  # ?token=, as Codex sends it
        await ws.send(json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "q"}}))
        assert "sessionId" in json.loads(await ws.recv())["result"]
    for scheme in ("Bearer", "token"):
        headers = {"Authorization": f"{scheme} {server.token}"}
        async with connect(server.bare_url, additional_headers=headers) as ws:
            await ws.send(
                json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "h"}})
            )
            assert "result" in json.loads(await ws.recv())


async def test_missing_or_wrong_token_and_foreign_origin_are_refused(server):
    for url, headers, status in [
        (server.bare_url, {}, 401),
        (server.bare_url + "?token=wrong", {}, 401),
        (server.bare_url, {"Authorization": "Bearer wrong"}, 401),
        (server.url, {"Origin": "https://evil.example"}, 403),
    ]:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == status
    client = await ExecClient.connect(server.bare_url, server.token)  # still serving
    await client.start("after-refusals", ["true"])
    assert (await client.wait("after-refusals", 10)).exit_code == 0
    await client.close()


async def test_oversized_frame_is_refused_and_server_keeps_serving(tmp_path):
    with standalone("--max-message-bytes", "2048", cwd=tmp_path) as s:
        async with connect(s.url, max_size=None) as ws:
            await ws.send("x" * 5000)
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        c = await ExecClient.connect(s.bare_url, s.token)
        await c.start("ok", ["true"])
        assert (await c.wait("ok", 10)).exit_code == 0
        await c.close()


async def test_connection_lifetime_is_the_standalone_default(tmp_path):
    with standalone("--session-resume", "0.2", cwd=tmp_path) as s:
        c = await ExecClient.connect(s.bare_url, s.token)
        await c.start("mine", ["sleep", "100"])
        pid = (await c.list())[0].pid
        assert (await c.list())[0].lifetime == "connection"
        await c.close()
        for _ in range(100):
            if not pid_alive(pid):
                break
            await asyncio.sleep(0.05)
        assert not pid_alive(pid)


def test_refuses_non_loopback_without_token_and_bad_listen():
    for args, needle in [
        (["--listen", "ws://0.0.0.0:0", "--no-token"], "without a token"),
        (["--listen", "tcp://127.0.0.1:0"], "--listen"),
        (["--listen", "ws://127.0.0.1:0", "--root", "/no/such/dir"], "--root"),
    ]:
        r = subprocess.run(
            [PY, "-m", "jupyter_exec.transports.serve", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_token_file(tmp_path):
    tf = tmp_path / "tok"
    tf.write_text("file-token-123\n")
    with standalone("--token-file", str(tf), cwd=tmp_path) as s:
        assert "token" not in s.url  # a given token is not echoed

        async def check() -> None:
            c = await ExecClient.connect(s.url, "file-token-123")
            await c.close()

        asyncio.run(check())


def _stdio(*extra: str, cwd=None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-m", "jupyter_exec.transports.serve", "--listen", "stdio", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def test_stdio_transport_round_trip_and_errors(tmp_path):
    proc = _stdio("--max-message-bytes", "4096", cwd=tmp_path)
    assert proc.stdin is not None

    def send(obj: object) -> None:
        assert proc.stdin is not None
        proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        proc.stdin.flush()

    send({"id": 1, "method": "initialize", "params": {"clientName": "stdio"}})
    send({"method": "initialized"})
    send("{broken")
    send("y" * 10000)
    send(
        {
            "id": 2,
            "method": "process/start",
            "params": {"processId": "e", "argv": py("print('via stdio')")},
        }
    )
    send(
        {
            "id": 3,
            "method": "process/read",
            "params": {"processId": "e", "waitMs": 5000, "untilPattern": "stdio"},
        }
    )
    msgs = lines_until(proc, 3)
    errors = [m["error"]["code"] for m in msgs if "error" in m]
    assert errors == [-32700, -32600]
    read = next(m for m in msgs if m.get("id") == 3)["result"]
    assert read["matched"] is True
    proc.stdin.close()  # EOF ends the session and the server
    assert proc.wait(20) == 0


def test_python_dash_m_package_serves_stdio(tmp_path):
    proc = subprocess.Popen(
        [PY, "-m", "jupyter_exec", "serve", "--listen", "stdio"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    proc.stdin.write(
        json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "m"}}) + "\n"
    )
    proc.stdin.flush()
    assert lines_until(proc, 1)[0]["result"]["serverInfo"]["name"] == "jupyter-exec"
    proc.stdin.close()
    assert proc.wait(20) == 0


def test_sigkill_of_the_server_leaves_no_orphan(tmp_path):
    escapee = "import os,time\nif os.fork() == 0:\n    os.setsid(); time.sleep(300)\nprint(os.getpid(), flush=True); time.sleep(300)"
    logs = tmp_path / "logs"
    proc = _stdio("--lifetime", "detached", "--log-dir", str(logs), cwd=tmp_path)
    assert proc.stdin is not None
    for msg in (
        {"id": 1, "method": "initialize", "params": {"clientName": "k"}},
        {"method": "initialized"},
        {"id": 2, "method": "process/start", "params": {"processId": "a", "argv": py(escapee)}},
        {"id": 3, "method": "process/list"},
    ):
        proc.stdin.write(json.dumps(msg) + "\n")
    proc.stdin.flush()
    info = next(m for m in lines_until(proc, 3) if m.get("id") == 3)["result"]["processes"][0]
    time.sleep(0.3)
    tree = tree_of(info["pid"])
    assert len(tree) >= 2
    assert any(logs.iterdir())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in tree):
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in tree)
    while time.monotonic() < deadline and any(logs.iterdir()):
        time.sleep(0.05)
    assert not any(logs.iterdir())  # the guardian removed the logs too


def test_ws_server_leaves_a_discovery_record_while_it_runs(tmp_path, monkeypatch):
    import json
    import os
    import stat

    runtime = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    with standalone(cwd=tmp_path) as s:
        record_path = runtime / f"jpexec-{s.proc.pid}.json"
        record = json.loads(record_path.read_text())
        assert record == {"pid": s.proc.pid, "url": s.bare_url, "token": s.token}
        assert stat.S_IMODE(os.stat(record_path).st_mode) == 0o600
    assert not record_path.exists()


async def test_process_remove_frees_the_id(server):
    c = await ExecClient.connect(server.bare_url, server.token)
    await c.start("again", ["sleep", "30"])
    assert await c.request("process/remove", {"processId": "again"}) == {}
    assert all(p.process_id != "again" for p in await c.list())
    await c.start("again", ["true"])  # the id is free again
    assert (await c.wait("again", 10)).exit_code == 0
    await c.close()
