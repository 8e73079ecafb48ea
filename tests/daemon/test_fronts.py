"""SPEC 3: the rules are the front's. Real Jupyter servers share one runtime dir (and so
one exec daemon) as one user's servers do; each runs processes under its own rules."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.client import SyncExecClient
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import DaemonStartError, ensure_daemon
from jupyter_exec.wire.errors import InvalidRequestError
from jupyter_exec.wire.rules import FrontRules
from tests.daemon.harness import (
    Server,
    daemon_pid,
    daemon_settings,
    daemons_stopped,
    start_server,
)
from tests.magics.jupyter_process import BIN, clean_env
from tests.service import stop_process

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[contextlib.ExitStack]:
    """Servers started in a test are stopped, then the shared runtime's daemon."""
    with daemons_stopped(tmp_path / "runtime"), contextlib.ExitStack() as servers:
        yield servers


def serve(tmp: Path, stack: contextlib.ExitStack, name: str, *extra: str) -> Server:
    """A Jupyter server with root `tmp/name` and `FRONT_MARK=name` in its environment."""
    root = (tmp / name).resolve()
    root.mkdir()
    env = {**clean_env(tmp / "runtime"), "FRONT_MARK": name}
    server = start_server(tmp, *extra, env=env, root=root)
    stack.callback(stop_process, server.proc, 20)
    return server


def run(server: Server, script: str, **params: Any) -> str:
    """Start `sh -c script` over REST, wait for its close, return its output."""
    process_id = f"p-{uuid.uuid4().hex[:8]}"
    body = {"processId": process_id, "argv": ["sh", "-c", script], **params}
    server.request("POST", "api/exec/processes", body)
    deadline = time.monotonic() + 30
    while server.request("GET", f"api/exec/processes/{process_id}")["state"] != "closed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    req = urllib.request.Request(
        f"{server.url}api/exec/processes/{process_id}/output",
        headers={"Authorization": f"token {server.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return str(response.read().decode())


def refused(server: Server, **params: Any) -> tuple[int, str]:
    """The HTTP status and message of a start the server refuses."""
    body = {"processId": f"r-{uuid.uuid4().hex[:8]}", "argv": ["true"], **params}
    with pytest.raises(urllib.error.HTTPError) as info:
        server.request("POST", "api/exec/processes", body)
    return info.value.code, json.loads(info.value.read())["message"]


def test_two_servers_at_once_each_run_in_their_own_root_under_their_own_rules(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    a = serve(tmp_path, stack, "a")
    b = serve(tmp_path, stack, "b", "--ExecExtensionApp.confine_to_root=True")
    # A started the daemon; B, confined, uses the same one, under B's rules.
    assert run(a, "pwd; echo $FRONT_MARK") == f"{tmp_path / 'a'}\na\n"
    daemon = daemon_pid(tmp_path / "runtime")
    assert run(b, "pwd; echo $FRONT_MARK") == f"{tmp_path / 'b'}\nb\n"
    assert daemon_pid(tmp_path / "runtime") == daemon
    status, message = refused(b, cwd="/")
    assert status == 400
    assert message == (
        f"cwd '/' is outside the root {tmp_path / 'b'} of Jupyter server {b.url} "
        "(confine_to_root is on)"
    )
    assert run(a, "pwd", cwd="/") == "/\n"  # A is not confined: B's rule is B's alone


def test_a_stopped_server_and_its_deleted_root_affect_no_other(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    a = serve(tmp_path, stack, "a")
    b = serve(tmp_path, stack, "b")
    assert run(a, "pwd") == f"{tmp_path / 'a'}\n"  # A starts the daemon
    shutil.rmtree(tmp_path / "a")
    # A's own starts now fail, and say why: the root, the server, what to do.
    assert refused(a) == (
        400,
        f"no cwd was given, and the root {tmp_path / 'a'} of Jupyter server {a.url} does not "
        "exist (any more): pass an absolute cwd, or give that server an existing root_dir",
    )
    status, message = refused(a, cwd="sub")
    assert status == 400 and message.startswith(f"cwd 'sub' is relative, and the root {tmp_path}")
    assert run(a, "pwd", cwd=str(tmp_path)) == f"{tmp_path}\n"  # an absolute cwd still works
    stop_process(a.proc, 20)
    assert run(b, "pwd") == f"{tmp_path / 'b'}\n"
    c = serve(tmp_path, stack, "c")
    assert run(c, "pwd; echo $FRONT_MARK") == f"{tmp_path / 'c'}\nc\n"
    assert run(b, "pwd") == f"{tmp_path / 'b'}\n"


def test_a_confined_server_sees_and_touches_only_processes_inside_its_root(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    a = serve(tmp_path, stack, "a", "--ExecExtensionApp.max_processes=4")
    b = serve(
        tmp_path,
        stack,
        "b",
        "--ExecExtensionApp.confine_to_root=True",
        "--ExecExtensionApp.max_processes=1",
        "--ExecExtensionApp.relay_websockets=True",  # B's websockets take the relay hello
    )
    sleep = ["sleep", "60"]
    a.request("POST", "api/exec/processes", {"processId": "in-a", "argv": sleep})
    b.request("POST", "api/exec/processes", {"processId": "in-b", "argv": sleep})
    assert {p["processId"] for p in a.request("GET", "api/exec/processes")} == {"in-a", "in-b"}
    assert [p["processId"] for p in b.request("GET", "api/exec/processes")] == ["in-b"]
    with pytest.raises(urllib.error.HTTPError) as info:
        b.request("GET", "api/exec/processes/in-a")
    assert info.value.code == 404

    # max_processes counts each front's own processes: B is full, A is not.
    status, message = refused(b, argv=sleep)
    assert status == 429 and message == (
        f"too many processes: 1 already running through Jupyter server {b.url} (max_processes)"
    )
    a.request("POST", "api/exec/processes", {"processId": "a2", "argv": sleep, "cwd": "/"})

    client = SyncExecClient.connect(b.url, b.token)
    try:
        outside = f"process in-a runs outside the root {tmp_path / 'b'} of Jupyter server {b.url}"
        for call in (
            lambda: client.read("in-a"),
            lambda: client.terminate("in-a"),
            lambda: client.write("in-a", b"x"),
            lambda: client.signal("in-a", "kill"),
        ):
            with pytest.raises(InvalidRequestError, match=outside):
                call()
        assert [p.process_id for p in client.list()] == ["in-b"]
    finally:
        client.close()
    with SyncExecClient.connect(a.url, a.token) as seen_by_a:  # handed over, under A's rules
        assert not seen_by_a.read("in-b").exited  # A is not confined: it sees B's process
        info = seen_by_a.request("environment/info")
        assert info["cwd"] == (tmp_path / "a").as_uri()
    states = {p["processId"]: p["state"] for p in a.request("GET", "api/exec/processes")}
    assert states == {"in-a": "running", "in-b": "running", "a2": "running"}  # nothing harmed
    assert asyncio.run(_watched_starts(a, b, tmp_path / "b")) == ["a-in-b"]


async def _watched_starts(a: Server, b: Server, b_root: Path) -> list[str]:
    """What B's watcher hears while A starts one process outside B's root, one inside."""
    from websockets.asyncio.client import connect

    url = b.url.replace("http", "ws", 1) + "api/exec/ws"
    async with connect(url, additional_headers={"Authorization": f"token {b.token}"}) as ws:
        for message in (
            {"id": 1, "method": "initialize", "params": {"clientName": "watcher"}},
            {"method": "initialized"},
            {"id": 2, "method": "process/list", "params": {"watch": True}},
        ):
            await ws.send(json.dumps(message))
        while json.loads(await ws.recv()).get("id") != 2:
            pass
        for name, cwd in (("a-elsewhere", "/"), ("a-in-b", str(b_root))):
            body = {"processId": name, "argv": ["true"], "cwd": cwd}
            await asyncio.to_thread(a.request, "POST", "api/exec/processes", body)
        started: list[str] = []
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 3))
                if message.get("method") == "process/started":
                    started.append(message["params"]["process"]["processId"])
        return started


def test_mcp_run_command_without_cwd_after_an_earlier_servers_root_was_deleted(
    tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    a = serve(tmp_path, stack, "a")
    assert run(a, "pwd") == f"{tmp_path / 'a'}\n"  # the daemon is up, started by A
    stop_process(a.proc, 20)
    shutil.rmtree(tmp_path / "a")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = {**clean_env(tmp_path / "runtime"), "FRONT_MARK": "agent"}
    got = asyncio.run(_mcp_run(env, workspace, "pwd; echo $FRONT_MARK"))
    assert got == {"output": f"{workspace}\nagent\n", "exit_code": 0}


async def _mcp_run(env: dict[str, str], cwd: Path, command: str) -> dict[str, Any]:
    """`run_command` with no cwd through `jupyter-exec mcp` (stdio), as an agent host runs it."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=str(BIN / "jupyter-exec"), args=["mcp"], env=env, cwd=cwd
    )
    with (cwd.parent / "mcp-stderr.txt").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as s:
            await s.initialize()
            result = await s.call_tool("run_command", {"command": command})
    assert not result.is_error, result
    structured = result.structured_content or {}
    return {"output": structured["output"], "exit_code": structured["exit_code"]}


# -- the daemon's side: hellos, the fallback, the user's settings --------------------


def hello(sock: Path, front: object) -> bytes:
    """The daemon's whole answer to one hello carrying `front`."""
    line = {"jupyterExecDaemon": paths.daemon_protocol(), "allowedActions": None, "front": front}
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(json.dumps(line).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data


def test_bad_rules_are_refused_by_name_and_a_front_without_rules_gets_safe_ones(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        sock = ensure_daemon(runtime)
        good = FrontRules.here("a test").to_wire()
        for front, field in [
            ("x", "front must be an object"),
            ({**good, "rootDir": "relative"}, "front.rootDir must be an absolute path"),
            ({**good, "name": ""}, "front.name must be a non-empty string"),
            ({**good, "maxProcesses": -1}, "front.maxProcesses must be an integer >= 0"),
            ({**good, "confineToRoot": "yes"}, "front.confineToRoot must be true or false"),
            ({**good, "defaultLifetime": "forever"}, "front.defaultLifetime must be"),
            ({**good, "env": {"A": 1}}, "front.env must be an object of strings"),
            ({**good, "proxyBaseUrl": 5}, "front.proxyBaseUrl must be a string"),
        ]:
            answer = json.loads(hello(sock, front))
            assert answer["error"].startswith(f"bad hello: {field}"), answer
        assert b'"error"' not in hello(sock, {**good, "sandbox": {"later": True}})  # unknown: ok
        handover = paths.handover_path(runtime)
        assert _hand_over(handover, {**good, "rootDir": "x"}) == {
            "error": "front.rootDir must be an absolute path"
        }

        # An older front (no rules at all): the home directory, detached, and a log line.
        from jupyter_exec.client.unix_transport import connect_daemon

        async def without_rules() -> tuple[str, str]:
            client = await connect_daemon(sock)
            await client.start("old", ["pwd"])
            await client.wait("old", timeout=30)
            out = b"".join(c.data for c in (await client.read("old")).chunks).decode()
            (info,) = await client.list()
            await client.close()
            return out, info.lifetime

        assert asyncio.run(without_rules()) == (f"{Path.home().resolve()}\n", "detached")
        log = paths.log_path(runtime).read_text()
        assert f"a front that sent no rules (pid {os.getpid()})" in log


def _hand_over(path: Path, front: object) -> dict[str, Any]:
    """A handover with a socket and `front`; the daemon's answer."""
    mine, theirs = socket.socketpair()
    line = {
        "jupyterExecDaemon": paths.daemon_protocol(),
        "allowedActions": ["read"],
        "front": front,
        "request": "GET / HTTP/1.1\r\n\r\n",
    }
    with socket.socket(socket.AF_UNIX) as channel, mine, theirs:
        channel.settimeout(10)
        channel.connect(str(path))
        socket.send_fds(channel, [json.dumps(line).encode() + b"\n"], [theirs.fileno()])
        answer: dict[str, Any] = json.loads(channel.makefile("rb").readline())
        return answer


def test_the_daemon_settings_are_the_users_in_one_file(
    tmp_path: Path, stack: contextlib.ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, config = tmp_path / "runtime", tmp_path / "config"
    daemon_settings(monkeypatch, config, daemon_idle_seconds="soon")
    with pytest.raises(DaemonStartError, match="daemon_idle_seconds must be a number"):
        ensure_daemon(runtime)
    daemon_settings(monkeypatch, config, exited_retention_seconds=5)  # harness's config dir
    server = start_server(
        tmp_path, "--ExecExtensionApp.exited_retention_seconds=99", env=clean_env(runtime)
    )
    stack.callback(stop_process, server.proc, 20)
    server.request("POST", "api/exec/processes", {"processId": "x", "argv": ["true"]})
    env = {**clean_env(runtime), "JUPYTER_CONFIG_DIR": str(config)}
    shown = subprocess.run(
        [sys.executable, "-m", "jupyter_exec", "daemon", "config", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout  # fmt: skip
    running = json.loads(shown)["running"]
    assert running["pid"] == daemon_pid(runtime)
    assert running["settings"]["exited_retention_seconds"] == 5  # the file's, not the trait's
    assert running["sources"]["exited_retention_seconds"] == str(
        config / "jupyter_exec_daemon.json"
    )
    assert running["sources"]["daemon_idle_seconds"] == "default"
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "ExecExtensionApp.exited_retention_seconds is ignored" in log
