"""Driving the real Codex CLI against our servers: install, configure, run, inspect.

Codex is installed from npm (``@openai/codex@CODEX_VERSION``; the platform
binary comes inside the package) into a cache directory once, then each run
gets its own ``CODEX_HOME`` whose ``config.toml`` points Codex's model provider
at a ``ScriptedModel`` on loopback. Nothing leaves the machine.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.npm_cache import npm_tool
from tests.service import free_port, stop_process

CODEX_VERSION = "0.171.0"
VENV_BIN = Path(sys.executable).parent
#: The server under test; override to try another build of it.
JUPYTER_EXEC = os.environ.get("JUPYTER_EXEC_BIN", str(VENV_BIN / "jupyter-exec"))


def install_codex() -> Path:
    """The ``codex`` launcher, installing it with npm when the cache lacks it."""
    launcher = npm_tool(f"codex-{CODEX_VERSION}", f"@openai/codex@{CODEX_VERSION}", "codex")
    version = subprocess.run(
        [str(launcher), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    if CODEX_VERSION not in version:
        raise RuntimeError(f"expected codex {CODEX_VERSION}, found {version!r}")
    return launcher


# -- running Codex ----------------------------------------------------------------


@dataclass
class CodexResult:
    returncode: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        """Completed items of one type (``command_execution``, ``file_change``, ...)."""
        return [
            e["item"]
            for e in self.events
            if e.get("type") == "item.completed" and e.get("item", {}).get("type") == kind
        ]

    def describe(self) -> str:
        return (
            f"codex exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-4000:]}"
        )


@dataclass
class Codex:
    launcher: Path
    home: Path
    model_base_url: str
    environments_toml: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Appended to config.toml (e.g. `[mcp_servers.NAME]` tables).
    extra_config: str = ""
    #: Top-level keys put first in config.toml (e.g. `allow_login_shell = false`).
    top_config: str = ""
    #: Codex's `sandbox_mode`: with one, it sends its `sandbox` object on each start.
    sandbox_mode: str = "danger-full-access"

    def run(self, cwd: Path, exec_server_url: str | None, prompt: str = "go") -> CodexResult:
        """``codex exec --json`` in ``cwd``; with a URL, via ``CODEX_EXEC_SERVER_URL``."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            self.top_config
            + codex_config(self.model_base_url, self.sandbox_mode)
            + self.extra_config
        )
        environments = self.home / "environments.toml"
        if self.environments_toml is not None:
            environments.write_text(self.environments_toml)
        elif environments.exists():
            environments.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
        env.update(
            CODEX_HOME=str(self.home),
            SCRIPTED_MODEL_KEY="not-a-real-key",
            RUST_LOG="warn",
            NO_COLOR="1",
        )
        env.update(self.extra_env)
        if exec_server_url is not None:
            env["CODEX_EXEC_SERVER_URL"] = exec_server_url
        proc = subprocess.run(
            [str(self.launcher), "exec", "--skip-git-repo-check", "--json", prompt],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        events = []
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return CodexResult(proc.returncode, events, proc.stdout, proc.stderr)


def codex_config(base_url: str, sandbox_mode: str = "danger-full-access") -> str:
    # `gpt-5.5` is a model Codex knows: with an unknown name it withholds apply_patch.
    return f"""\
model = "gpt-5.5"
model_provider = "scripted"
approval_policy = "never"
sandbox_mode = "{sandbox_mode}"

[model_providers.scripted]
name = "scripted model on loopback"
base_url = "{base_url}"
wire_api = "responses"
env_key = "SCRIPTED_MODEL_KEY"
"""


def stdio_environments_toml(root: Path) -> str:
    """``environments.toml`` that makes Codex start ``jupyter-exec serve --listen stdio``."""
    return f"""\
default = "jupyter"
include_local = false

[[environments]]
id = "jupyter"
program = {json.dumps(JUPYTER_EXEC)}
args = ["serve", "--listen", "stdio", "--root", {json.dumps(str(root))}]
"""


def point_at(codex: Codex, transport: str, root: Path, server: RunningServer | None) -> str | None:
    """The exec-server URL Codex gets for `transport`; for stdio it starts its own server."""
    if transport == "stdio":
        codex.environments_toml = stdio_environments_toml(root)
        return None
    assert server is not None
    return server.url


# -- a small JSON-RPC client, to look at our registry from outside --------------------


class Rpc:
    """A blocking JSON-RPC client on one websocket; notifications are skipped."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def request(self, method: str, params: Any) -> dict[str, Any]:
        """The whole response: ``result`` or ``error``."""
        request_id = next(self.ids)
        self.ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=30))
            if "method" not in message and message.get("id") == request_id:
                return message

    def call(self, method: str, params: Any) -> Any:
        """The result; raises on an error."""
        message = self.request(method, params)
        if "error" in message:
            raise RuntimeError(f"{method} failed: {message['error']}")
        return message["result"]


@contextmanager
def rpc(url: str) -> Iterator[Rpc]:
    """A connection that has done the handshake (SPEC 2)."""
    with connect(url, open_timeout=10) as ws:
        client = Rpc(ws)
        client.call("initialize", {"clientName": "codex-e2e-observer"})
        ws.send(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))
        yield client


def call(url: str, method: str, params: Any) -> Any:
    """One request on a fresh connection (after the handshake); raises on an error."""
    with rpc(url) as client:
        return client.call(method, params)


def processes(url: str) -> list[dict[str, Any]]:
    """Our registry's ``process/list``, to look at Codex's processes from outside."""
    return list(call(url, "process/list", {})["processes"])


# -- our servers -------------------------------------------------------------------


@dataclass
class RunningServer:
    url: str  # with the token, as Codex gets it
    root: Path
    process: subprocess.Popen[str]
    token: str


@contextmanager
def standalone_server(root: Path, *extra_args: str) -> Iterator[RunningServer]:
    """``jupyter-exec serve --listen ws://127.0.0.1:0``; its first stdout line is the URL."""
    process = subprocess.Popen(
        [JUPYTER_EXEC, "serve", "--listen", "ws://127.0.0.1:0", "--root", str(root), *extra_args],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("ws://"):
            raise RuntimeError(f"jupyter-exec serve printed {url!r}, exit {process.poll()}")
        token = url.partition("token=")[2]
        yield RunningServer(url, root, process, token)
    finally:
        stop_process(process)


@contextmanager
def jupyter_server(
    root: Path, runtime: Path, token: str, *extra_args: str
) -> Iterator[RunningServer]:
    """A real ``jupyter server`` with our extension; Codex reaches ``/api/exec/ws``."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS="false",
        JUPYTER_RUNTIME_DIR=str(runtime / "runtime"),
        JUPYTER_CONFIG_DIR=str(runtime / "config"),
    )
    base = f"http://127.0.0.1:{port}"
    log = open(runtime / "jupyter.log", "w")  # noqa: SIM115 -- closed below
    process = subprocess.Popen(
        [
            str(VENV_BIN / "jupyter-server"),
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.jpserver_extensions=jupyter_exec=True",
            *extra_args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_http(f"{base}/api/status?token={token}", process, runtime / "jupyter.log")
        url = f"ws://127.0.0.1:{port}/api/exec/ws?token={token}"
        yield RunningServer(url, root, process, token)
    finally:
        stop_process(process)
        log.close()


def wait_http(url: str, process: subprocess.Popen[str], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter server exited:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"jupyter server not ready after {timeout}s:\n{log.read_text()[-4000:]}")
