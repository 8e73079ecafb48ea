"""No way out through us: a sandboxed process cannot reach what would start an unsandboxed one.

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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.daemon import paths
from tests.daemon.harness import Server, daemons_stopped, start_server
from tests.magics.jupyter_process import clean_env
from tests.wire import stop_process

from .harness import needs_sandbox

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
    process_id = f"escape-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-c", ATTEMPTS, str(runtime), str(server.proc.pid), server.url,
            server.token, marker, str(paths.socket_path(runtime)),
            str(paths.handover_path(runtime))]  # fmt: skip
    body = {"processId": process_id, "argv": argv, "tty": tty, "sandbox": sandbox}
    server.request("POST", "api/exec/processes", body)
    deadline = time.monotonic() + 60
    while server.request("GET", f"api/exec/processes/{process_id}")["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    output = _raw(server, f"api/exec/processes/{process_id}/output").decode()
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


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
