"""A real `jupyter server` subprocess and kernels started through its REST API.

Used by the kernel tests here and the CLI tests: the server binds 127.0.0.1,
has its own runtime directory (so discovery reads only its record), requires a
token, and is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient

from tests.service import free_port, stop_process

BIN = Path(sys.executable).parent


def clean_env(runtime_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER_EXEC_", "JPY_")) and k != "JUPYTER_SERVER_URL"
    }
    env["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    env["JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS"] = "false"
    return env


@dataclass
class JupyterServer:
    url: str
    token: str
    pid: int
    runtime_dir: Path
    root_dir: Path
    env: dict[str, str]

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


#: A server must still answer this long after it started before tests get it.
SETTLE_SECONDS = 3.0
START_ATTEMPTS = 3


@contextmanager
def jupyter_server(tmp: Path, app: str = "jupyter-server") -> Iterator[JupyterServer]:
    """A started server that answers, and still answers a few seconds later.

    ``app`` is the command: ``jupyter-notebook`` starts Notebook 7's server
    (the same ServerApp, with Notebook 7's pages) under the same rules.

    A start that fails that check is reported as a warning, with the reason
    and the server's log, and retried with a new server, instead of failing
    every test of the module with `Connection refused`. (The SIGTERM once
    seen here came from an earlier form of this check: docs/reliability.md.)
    """
    for attempt in range(START_ATTEMPTS):
        suffix = f"-{attempt}" if attempt else ""
        with _started_server(tmp, suffix, app) as (server, proc, log_path):
            failure = _stays_up(server, proc)
            if failure is None:
                yield server
                return
            warnings.warn(
                f"test jupyter server {proc.pid} failed right after it started "
                f"(attempt {attempt + 1}: {failure}); its log ends:\n"
                f"{log_path.read_text()[-2000:]}",
                stacklevel=2,
            )
    raise RuntimeError(f"no test jupyter server stayed up in {START_ATTEMPTS} attempts")


@contextmanager
def _started_server(
    tmp: Path, suffix: str, app: str
) -> Iterator[tuple[JupyterServer, subprocess.Popen[bytes], Path]]:
    runtime_dir, root_dir = tmp / f"runtime{suffix}", tmp / f"root{suffix}"
    runtime_dir.mkdir()
    root_dir.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = clean_env(runtime_dir)
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "config")
    cmd = [
        str(BIN / app), "--allow-root", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
        '--ServerApp.jpserver_extensions={"jupyter_exec": True, "jupyter_server_proxy": True}',
    ]  # fmt: skip
    log_path = tmp / f"server{suffix}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root_dir)
    try:
        deadline = time.monotonic() + 60
        while not list(runtime_dir.glob(f"jpserver-{proc.pid}.json")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text())
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/"
        yield JupyterServer(url, token, proc.pid, runtime_dir, root_dir, env), proc, log_path
    finally:
        stop_process(proc, 20)
        log.close()


def _stays_up(server: JupyterServer, proc: subprocess.Popen[bytes]) -> str | None:
    """None if the server answers and still does `SETTLE_SECONDS` later, else why not.

    The first answer may take a while (the loop starts after the record is
    written), so that probe is retried; the second must succeed at once.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            server.request("GET", "api/status")
            break
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                return f"first probe: {exc!r}"
            time.sleep(0.2)
    time.sleep(SETTLE_SECONDS)
    try:
        server.request("GET", "api/status")
    except OSError as exc:
        return f"second probe: {exc!r}"
    return None if proc.poll() is None else f"exited with {proc.returncode}"


class Kernel:
    """A kernel the server started; talked to over its ZMQ channels directly."""

    def __init__(self, server: JupyterServer) -> None:
        self.server = server
        self.id = server.request("POST", "api/kernels", {"name": "python3"})["id"]
        self.client = self._connect()
        self.messages: list[dict[str, Any]] = []  # every iopub message seen so far

    def _connect(self) -> BlockingKernelClient:
        path = self.server.runtime_dir / f"kernel-{self.id}.json"
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline, "no connection file"
            time.sleep(0.1)
        client = BlockingKernelClient(connection_file=str(path))
        client.load_connection_file()
        # The heartbeat counts a kernel dead after 1 s without an answer; a kernel
        # starting under coverage on two busy cores can take longer than that.
        client.hb_channel.time_to_dead = 10.0
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return client

    def execute(self, code: str, timeout: float = 60) -> tuple[str, list[dict[str, Any]]]:
        """Run a cell; (msg_id, its iopub messages up to idle). Raises on error."""
        msg_id = self.client.execute(code)
        own: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(deadline)
            if msg["parent_header"].get("msg_id") == msg_id:
                own.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
        reply = self.shell_reply(msg_id, deadline)
        if reply["content"]["status"] != "ok":
            raise AssertionError(f"{reply['content']}\n{outputs_text(own)}")
        return msg_id, own

    def shell_reply(self, msg_id: str, deadline: float) -> dict[str, Any]:
        """The shell reply to request `msg_id`, skipping replies to other requests.

        Those are stale, not errors: `wait_for_ready` may send several
        `kernel_info` requests (after a restart too), and each gets its reply.
        """
        while True:
            try:
                reply = self.client.get_shell_msg(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no shell reply to {msg_id} in time") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def next_message(self, deadline: float) -> dict[str, Any]:
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("no iopub message in time") from None
            self.messages.append(msg)
            return msg

    def drain_until(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        """Read iopub until a message satisfies ``predicate``."""
        for msg in self.messages:
            if predicate(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(deadline)
            if predicate(msg):
                return msg

    def restart(self) -> None:
        self.client.stop_channels()
        self.server.request("POST", f"api/kernels/{self.id}/restart")
        self.messages.clear()
        self.client = self._connect()

    def interrupt(self) -> None:
        self.server.request("POST", f"api/kernels/{self.id}/interrupt")

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.server.request("DELETE", f"api/kernels/{self.id}")


class LocalKernel(Kernel):
    """A kernel started by jupyter_client alone, as VS Code starts one: no Jupyter
    server, and no server record names it (ENVIRONMENT.md)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")  # argv[0] "python": this one
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.messages = []
        self.client = self._connect()

    def _connect(self) -> BlockingKernelClient:
        client = self.manager.blocking_client()
        client.hb_channel.time_to_dead = 10.0  # as Kernel._connect: a busy machine
        client.start_channels()
        client.wait_for_ready(timeout=60)
        return client

    def restart(self) -> None:
        self.client.stop_channels()
        self.manager.restart_kernel(now=True)
        self.messages.clear()
        self.client = self._connect()

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def outputs_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for msg in messages:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            parts.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data", "update_display_data"):
            parts.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
    return "".join(parts)
