"""`stop_processes_on_shutdown` brings back the old lifecycle: a real `jupyter server`'s
shutdown terminates everything, and its crash leaves no orphan and no log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jupyter_exec.core.proctree import ProcessRef
from tests.daemon.harness import daemon_pid, wait_gone
from tests.service import free_port, pid_alive, py, tree_of


class JupyterServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.token = "lifecycle-token"
        self.logs = tmp / "exec-logs"
        (tmp / "root").mkdir()
        (tmp / "cfg").mkdir()  # the user's daemon settings: where its logs go
        (tmp / "cfg" / "jupyter_exec_daemon.json").write_text(
            json.dumps({"log_dir": str(self.logs)})
        )
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(tmp / "cfg"),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                "--allow-root",
                "--no-browser",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={tmp / 'root'}",
                "--ExecExtensionApp.stop_processes_on_shutdown=True",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/exec/processes")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("jupyter server did not start")

    def request(self, method: str, path: str, body: object = None) -> object:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def start_tree(self, name: str) -> set[ProcessRef]:
        escapee = "import os,time\nif os.fork() == 0:\n    os.setsid(); time.sleep(300)\nprint('up', flush=True); time.sleep(300)"
        info = self.request("POST", "/api/exec/processes", {"processId": name, "argv": py(escapee)})
        assert isinstance(info, dict)
        time.sleep(0.5)
        return tree_of(info["pid"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_server_exit_leaves_no_process_and_no_log(tmp_path, how):
    server = JupyterServer(tmp_path)
    try:
        tree = server.start_tree("t1") | server.start_tree("t2")
        assert len(tree) >= 4 and all(pid_alive(p) for p in tree)
        assert any(server.logs.rglob("*.log"))
        daemon = daemon_pid(tmp_path / "runtime")
        assert daemon is not None
        server.proc.send_signal(how)
        server.proc.wait(30)
        assert wait_gone(tree | {daemon})  # the exec daemon stopped too
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(server.logs.rglob("*.log")):
            time.sleep(0.05)
        assert not any(server.logs.rglob("*.log"))
    finally:
        server.stop()
