"""`jupyter exec` with no Jupyter server up: ps, logs and run find the daemon; shutdown stops it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon.harness import daemon_pid, daemons_stopped, start_server, wait_gone
from tests.magics.jupyter_process import BIN, clean_env

CLI = str(BIN / "jupyter-exec")


def cli(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=clean_env(runtime), timeout=60
    )


@pytest.mark.timeout(120)
def test_ps_logs_run_and_shutdown_without_a_server(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        server = start_server(tmp_path)
        try:
            code = "import time\nprint('from the job', flush=True)\ntime.sleep(300)"
            body = {"processId": "job", "argv": [sys.executable, "-c", code]}
            job = server.request("POST", "api/exec/processes", body)
            time.sleep(0.5)
        finally:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(30)
        daemon = daemon_pid(runtime)
        assert daemon is not None

        ps = cli(runtime, "ps")
        assert ps.returncode == 0, ps.stderr
        assert "job" in ps.stdout and "running" in ps.stdout
        logs = cli(runtime, "logs", "job")
        assert (logs.returncode, logs.stdout) == (0, "from the job\n"), logs.stderr
        started = cli(runtime, "run", "-d", "--name", "later", "--", "echo", "later on")
        assert started.returncode == 0, started.stderr
        time.sleep(0.5)
        assert cli(runtime, "logs", "later").stdout == "later on\n"
        assert daemon_pid(runtime) == daemon  # the same daemon served all of them

        stopped = cli(runtime, "shutdown")
        assert stopped.stdout == "stopped every process and the exec daemon\n", stopped.stderr
        assert wait_gone([daemon, job["pid"]])
        assert cli(runtime, "shutdown").stdout == "no exec daemon is running\n"
        again = cli(runtime, "ps")  # a new daemon: nothing runs (finished ones may be listed)
        assert again.returncode == 0 and "running" not in again.stdout, again.stderr
        assert daemon_pid(runtime) not in (None, daemon)


@pytest.mark.timeout(120)
def test_logs_follow_goes_on_through_a_kill_of_the_server(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        server = start_server(tmp_path)
        script = "for i in $(seq 1 40); do echo n-$i; sleep 0.1; done"
        server.request(
            "POST", "api/exec/processes", {"processId": "job", "argv": ["sh", "-c", script]}
        )
        errors = open(tmp_path / "follow.err", "w+")  # noqa: SIM115
        follow = subprocess.Popen(
            [CLI, "logs", "-f", "job"],
            stdout=subprocess.PIPE, stderr=errors, text=True, env=clean_env(runtime),
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            first = follow.stdout.readline()
            assert first.startswith("n-")
        finally:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(30)
        # No server is started again: `logs -f` finds the daemon itself.
        rest = follow.stdout.read()  # the same buffered reader as readline: nothing skipped
        assert follow.wait(90) == 0, (tmp_path / "follow.err").read_text()
        errors.close()
        assert (first + rest).splitlines() == [f"n-{i}" for i in range(1, 41)]
