"""No way out through us: a sandboxed process cannot reach what would start an unsandboxed one.

The attack of issue 29, step by step: read a server's token from another
process's command line (/proc/PID/cmdline), call the server's API with it
(directly, and through the proxy its environment names), and have an
unsandboxed process write outside the workspace. Started as an agent over
``api/exec/ws`` (the agent sandbox by default), over REST with a sandbox, and
against a standalone ``jupyter-exec serve --token`` as well. Unsandboxed, the
same script succeeds at every step, so each refusal is the sandbox's doing.

A real Jupyter server with our extension runs, through its exec daemon, one
script that tries every way back in: the daemon's socket and the handover
socket, the server records (tokens) in the runtime dir, the server's
environment in /proc, the server's HTTP API on loopback (with the token handed
to it, network off), a signal and a ptrace to the server. Run without a
sandbox, every attempt succeeds, so each refusal is the sandbox's doing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.daemon import paths
from tests.daemon.harness import Server, daemons_stopped, start_server
from tests.magics.jupyter_process import clean_env
from tests.service import stop_process

from .harness import needs_sandbox, outside_tmp

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

ATTEMPTS = r"""
import ctypes, glob, json, os, socket, sys, urllib.request
runtime, pid, url, token, marker = sys.argv[1:6]
pid = int(pid)
out = {}
def attempt(name, fn):
    try:
        out[name] = fn()
    except OSError as e:
        out[name] = type(e).__name__
def connect(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
    return "ok"
def tokens():
    found = [f for f in glob.glob(runtime + "/jpserver-*.json") if token in open(f).read()]
    return "ok" if found else "nothing"
def environ():
    return "ok" if marker in open(f"/proc/{pid}/environ").read() else "nothing"
def http():
    req = urllib.request.Request(url + "api/status", headers={"Authorization": "token " + token})
    return "ok" if urllib.request.urlopen(req, timeout=10).status == 200 else "no"
def kill():
    os.kill(pid, 0)
    return "ok"
def ptrace():  # PTRACE_SEIZE: the server is not stopped, and let go when we exit
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0x4206, pid, 0, 0) != 0:
        return os.strerror(ctypes.get_errno())
    return "ok"
attempt("daemon socket", lambda: connect(sys.argv[6]))
attempt("handover socket", lambda: connect(sys.argv[7]))
attempt("server token in the runtime dir", tokens)
attempt("server environ", environ)
attempt("HTTP API with the token", http)
attempt("signal to the server", kill)
attempt("ptrace of the server", ptrace)
print("RESULT " + json.dumps(out))
"""
ALL_OK = {
    "daemon socket": "ok",
    "handover socket": "ok",
    "server token in the runtime dir": "ok",
    "server environ": "ok",
    "HTTP API with the token": "ok",
    "signal to the server": "ok",
    "ptrace of the server": "ok",
}


ATTACK = r"""
import glob, json, os, re, sys, urllib.error, urllib.request
kind, url, pattern, token, target = sys.argv[1:6]
out = {}
seen = set()
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        seen.update(m.decode() for m in re.findall(pattern.encode(), open(path, "rb").read()))
    except OSError:
        continue
out["token in a command line"] = token in seen
# Then as if the token had been found elsewhere: the door itself must be shut.
def rest(opener):
    body = json.dumps({"processId": "escaped-" + str(len(out)) + target,
                       "argv": ["touch", target + "." + str(len(out))]}).encode()
    request = urllib.request.Request(url + "api/exec/processes", data=body, method="POST",
        headers={"Authorization": "token " + token, "Content-Type": "application/json"})
    try:
        return opener.open(request, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return type(e).__name__
def ws():
    from websockets.sync.client import connect
    try:
        with connect(url, additional_headers={"Authorization": "token " + token}, proxy=None,
                     open_timeout=10) as conn:
            conn.send(json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "x"}}))
            conn.recv(10)
            conn.send(json.dumps({"method": "initialized"}))
            start = {"processId": "escaped", "argv": ["touch", target + ".1"]}
            conn.send(json.dumps({"id": 2, "method": "process/start", "params": start}))
            return "started" if "result" in json.loads(conn.recv(10)) else "refused"
    except OSError as e:
        return type(e).__name__
if kind == "rest":
    out["direct"] = rest(urllib.request.build_opener(urllib.request.ProxyHandler({})))
    proxy = os.environ.get("HTTP_PROXY")
    for name in ("NO_PROXY", "no_proxy"):  # it would keep 127.0.0.1 off the proxy
        os.environ.pop(name, None)
    via = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    out["through the proxy"] = rest(via) if proxy else "no proxy"
else:
    out["direct"] = ws()
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    needs_sandbox()
    tmp = tmp_path_factory.mktemp("escape")
    runtime = tmp / "runtime"
    runtime.mkdir()
    marker = uuid.uuid4().hex
    env = clean_env(runtime)
    env["SECRET_OF_THE_SERVER"] = marker
    with daemons_stopped(runtime):
        server = start_server(tmp, env=env)
        try:
            yield server, runtime, marker
        finally:
            stop_process(server.proc, 20)


def attempts(server: Server, runtime: Path, marker: str, tty: bool, sandbox: Any) -> dict[str, str]:
    argv = [sys.executable, "-c", ATTEMPTS, str(runtime), str(server.proc.pid), server.url,
            server.token, marker, str(paths.socket_path(runtime)),
            str(paths.handover_path(runtime))]  # fmt: skip
    return run_script(server, {"argv": argv, "tty": tty, "sandbox": sandbox})


def run_script(server: Server, body: dict[str, Any], process_id: str | None = None) -> Any:
    """Start `body` over REST (unless `process_id` was started already); its RESULT line."""
    if process_id is None:
        process_id = f"escape-{uuid.uuid4().hex[:8]}"
        server.request("POST", "api/exec/processes", {"processId": process_id, **body})
    deadline = time.monotonic() + 60
    while server.request("GET", f"api/exec/processes/{process_id}")["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    output = _raw(server, f"api/exec/processes/{process_id}/output").decode()
    line = next((x for x in output.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, output
    return json.loads(line.removeprefix("RESULT "))


def _raw(server: Server, path: str) -> bytes:
    import urllib.request

    req = urllib.request.Request(
        server.url + path, headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return bytes(response.read())


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])
def test_every_way_back_in_is_refused_to_a_sandboxed_process(server: Any, tty: bool) -> None:
    jupyter, runtime, marker = server
    assert os.path.exists(paths.socket_path(runtime))
    free = attempts(jupyter, runtime, marker, tty, None)
    assert free == ALL_OK  # each attempt can succeed: the refusals below are the sandbox's
    boxed = attempts(jupyter, runtime, marker, tty, {"mode": "workspace-write", "network": False})
    assert boxed == {
        "daemon socket": "FileNotFoundError",  # the runtime dir is an empty tmpfs to it
        "handover socket": "FileNotFoundError",
        "server token in the runtime dir": "nothing",
        "server environ": "FileNotFoundError",  # its own /proc: no such pid
        "HTTP API with the token": "URLError",
        "signal to the server": "ProcessLookupError",
        "ptrace of the server": "No such process",
    }


JUPYTER_TOKEN_ON_CMDLINE = r"IdentityProvider\.token=([0-9a-f]+)"


def _agent_over_ws(server: Server, argv: list[str]) -> str:
    """Start `argv` as Codex does (an agent over api/exec/ws: the agent sandbox applies)."""
    from websockets.sync.client import connect

    process_id = f"agent-{uuid.uuid4().hex[:8]}"
    url = server.url.replace("http", "ws", 1) + "api/exec/ws"
    with connect(url, additional_headers={"Authorization": f"token {server.token}"}) as ws:
        for message in (
            {"id": 1, "method": "initialize", "params": {"clientName": "codex-environment"}},
            {"method": "initialized"},
            {"id": 2, "method": "process/start", "params": {"processId": process_id,
                                                             "argv": argv}},
        ):  # fmt: skip
            ws.send(json.dumps(message))
        while (answer := json.loads(ws.recv(30))).get("id") != 2:
            pass
        assert answer["result"]["sandboxType"] == "linuxSeccomp", answer
    return process_id


@pytest.mark.parametrize("face", ["rest", "agent over ws"])
def test_the_token_chain_of_issue_29_fails_at_every_step(server: Any, face: str) -> None:
    jupyter, _, _ = server
    with outside_tmp() as outside:
        target = outside / "escaped"
        argv = [sys.executable, "-c", ATTACK, "rest", jupyter.url, JUPYTER_TOKEN_ON_CMDLINE,
                jupyter.token, str(target)]  # fmt: skip
        free = run_script(jupyter, {"argv": argv, "sandbox": None})
        assert free == {
            "token in a command line": True,
            "direct": 201,
            "through the proxy": "no proxy",
        }
        _wait_for(outside / "escaped.1")  # the control: each step works, the write lands
        for path in outside.iterdir():
            path.unlink()
        if face == "rest":
            boxed = run_script(jupyter, {"argv": argv, "sandbox": "workspace-write"})
        else:
            boxed = run_script(jupyter, {}, _agent_over_ws(jupyter, argv))
        assert boxed == BOXED
        time.sleep(0.5)
        assert list(outside.iterdir()) == []


BOXED = {
    "token in a command line": False,  # its own /proc: no other process is there
    "direct": "URLError",  # its own loopback: nothing listens on the server's port
    "through the proxy": 403,  # the proxy refuses local addresses
}


def test_the_token_chain_fails_for_an_agent_over_mcp(server: Any) -> None:
    """The MCP face's agents run in the agent sandbox too (the control: the REST test)."""
    import asyncio
    import shlex

    pytest.importorskip("mcp", reason="the MCP SDK is in the `test` extra, not `test-core`")
    from tests.mcp.conftest import mcp_session, text_of

    jupyter, _, _ = server

    async def through_mcp(command: str) -> str:
        async with mcp_session(jupyter, "http") as session:  # type: ignore[arg-type]
            return text_of(await session.call_tool("run_command", {"command": command}))

    with outside_tmp() as outside:
        argv = [sys.executable, "-c", ATTACK, "rest", jupyter.url, JUPYTER_TOKEN_ON_CMDLINE,
                jupyter.token, str(outside / "escaped")]  # fmt: skip
        text = asyncio.run(through_mcp(shlex.join(argv)))
        line = next((x for x in text.splitlines() if x.startswith("RESULT ")), None)
        assert line is not None, text
        assert json.loads(line.removeprefix("RESULT ")) == BOXED
        time.sleep(0.5)
        assert list(outside.iterdir()) == []


def test_a_standalone_servers_token_and_port_are_out_of_reach(server: Any, tmp_path: Path) -> None:
    from tests.magics.jupyter_process import BIN, free_port

    jupyter, runtime, _ = server
    port, token = free_port(), uuid.uuid4().hex
    standalone = subprocess.Popen(
        [str(BIN / "jupyter-exec"), "serve", "--listen", f"ws://127.0.0.1:{port}",
         "--token", token, "--root", str(tmp_path), "--agent-sandbox", "none"],
        env=clean_env(runtime), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with outside_tmp() as outside:
            target = outside / "escaped"
            argv = [sys.executable, "-c", ATTACK, "ws", f"ws://127.0.0.1:{port}",
                    r"--token\x00([0-9a-f]+)", token, str(target)]  # fmt: skip
            deadline = time.monotonic() + 30
            while (free := run_script(jupyter, {"argv": argv}))["direct"] != "started":
                assert time.monotonic() < deadline, free  # the server is still starting
                time.sleep(0.3)
            assert free == {"token in a command line": True, "direct": "started"}
            _wait_for(outside / "escaped.1")
            (outside / "escaped.1").unlink()
            boxed = run_script(jupyter, {"argv": argv, "sandbox": "workspace-write"})
            assert boxed == {"token in a command line": False, "direct": "ConnectionRefusedError"}
            time.sleep(0.5)
            assert list(outside.iterdir()) == []
    finally:
        stop_process(standalone, 10)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never landed"
        time.sleep(0.05)
