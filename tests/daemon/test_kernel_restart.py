"""A notebook's job across a `kill -9` of its Jupyter server.

A kernel started by a Jupyter server dies with it (ipykernel polls its parent,
`JPY_PARENT_PID`), so the handle that survives is the process's name: the next
server's kernel attaches to the same job and reads every line of it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.daemon.harness import daemons_stopped, start_server, wait_gone
from tests.magics.jupyter_process import JupyterServer, Kernel, clean_env, outputs_text
from tests.service import stop_process

pytestmark = pytest.mark.slow


def kernel_of(server: JupyterServer) -> tuple[Kernel, int]:
    kernel = Kernel(server)
    _, out = kernel.execute("import os; print(os.getpid())\n%load_ext jupyter_exec")
    return kernel, int(outputs_text(out).split()[0])


def as_jupyter(tmp: Path, pid: int, url: str, token: str) -> JupyterServer:
    runtime = tmp / "runtime"
    return JupyterServer(url, token, pid, runtime, tmp / "root", clean_env(runtime))


@pytest.mark.timeout(180)
def test_the_next_kernel_attaches_to_a_job_through_a_server_restart(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    kernel_pids: list[int] = []
    with daemons_stopped(runtime):
        first = start_server(tmp_path)
        try:
            kernel, pid = kernel_of(as_jupyter(tmp_path, first.proc.pid, first.url, first.token))
            kernel_pids.append(pid)
            script = "for i in $(seq 1 40); do echo n-$i; sleep 0.1; done"
            kernel.execute(f"p = %exec --quiet --name job sh -c '{script}'")
            time.sleep(0.5)
            kernel.client.stop_channels()
        finally:
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(30)
        assert wait_gone(kernel_pids, 20)  # the kernel went with its server; the job did not
        second = start_server(tmp_path)
        try:
            kernel, pid = kernel_of(as_jupyter(tmp_path, second.proc.pid, second.url, second.token))
            kernel_pids.append(pid)
            _, out = kernel.execute(
                "q = %attach job\nprint('exit', q.wait(timeout=60)); print('output:'); print(q.output)"
            )
            # The prints only (the live view of %attach updates beside them).
            text = outputs_text([m for m in out if m["msg_type"] == "stream"])
            assert "exit 0" in text, text
            assert re.findall(r"^n-(\d+)$", text.split("output:", 1)[1], re.M) == [
                str(i) for i in range(1, 41)
            ]
            kernel.shutdown()
        finally:
            stop_process(second.proc, 20)
            for pid in kernel_pids:  # each reported its own pid
                if not wait_gone([pid], 10):
                    os.kill(pid, signal.SIGKILL)
