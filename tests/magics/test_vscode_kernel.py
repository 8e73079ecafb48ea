"""A kernel that no Jupyter server launched (VS Code, `jupyter console`), with no server up.

Started by jupyter_client's KernelManager as VS Code starts one, on its own
runtime dir: `%exec` puts the job in the user's exec daemon (SPEC 3 "Every
front"), its live view updates through display_id, and the job outlives a
kernel restart; the next kernel, the CLI and a Jupyter server started
afterwards all see it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.harness import daemons_stopped, start_server
from tests.magics.jupyter_process import BIN, LocalKernel, clean_env, outputs_text
from tests.wire import stop_process

pytestmark = pytest.mark.slow

#: Prints n-1, n-2... every 50 ms, then stays (so it is still running at every check).
JOB = "i=0; while [ $i -lt 100 ]; do i=$((i+1)); echo n-$i; sleep 0.05; done; sleep 300"


def stream_text(messages: list[dict[str, Any]]) -> str:
    return outputs_text([m for m in messages if m["msg_type"] == "stream"])


def live_updates(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The live view's display_id and the text of each update_display_data for it."""
    shown = [m for m in messages if m["msg_type"] == "display_data"]
    ids = [m["content"].get("transient", {}).get("display_id") for m in shown]
    assert ids and ids[0], f"the live view has no display_id: {shown}"
    updates = [
        m["content"]["data"]["text/plain"]
        for m in messages
        if m["msg_type"] == "update_display_data"
        and m["content"]["transient"]["display_id"] == ids[0]
    ]
    return ids[0], updates


def cli(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "jupyter-exec"), *args],
        capture_output=True, text=True, env=clean_env(runtime), timeout=60,
    )  # fmt: skip


@pytest.mark.timeout(240)
def test_a_job_outlives_a_restart_of_a_kernel_no_server_launched(tmp_path: Path) -> None:
    runtime, root = tmp_path / "runtime", tmp_path / "root"
    root.mkdir()
    with daemons_stopped(runtime):
        kernel = LocalKernel(clean_env(runtime), root)
        try:
            _, out = kernel.execute(
                "%load_ext jupyter_exec\n"
                f"p = %exec --name job sh -c '{JOB}'\n"
                "import time\n"
                "while 'n-5\\n' not in p.output: time.sleep(0.05)\n"
                "print('pid', p.info.pid)"
            )
            text = stream_text(out)
            assert "inside this kernel" not in text and "pid" in text, text
            pid = int(text.split("pid")[1].split()[0])
            # The live view: shown with a display_id, then updated in place (SPEC 3, VS Code).
            kernel.drain_until(lambda m: m["msg_type"] == "update_display_data", timeout=30)
            _, updates = live_updates(kernel.messages)
            assert updates and "n-" in updates[-1], updates

            kernel.restart()  # the job does not belong to the kernel
            _, out = kernel.execute(
                "%load_ext jupyter_exec\n%ps\n"
                "from jupyter_exec.frontends.handle import ExecProcess\n"
                "q = ExecProcess('job'); print('handle', q.running, q.info.pid)"
            )
            text = outputs_text(out)
            assert re.search(r"^job\s+running", text, re.M), text
            assert f"handle True {pid}" in text, text
            _, out = kernel.execute("%read job --wait 10000 --until n-100")
            read = stream_text(out)
            numbers = [int(n) for n in re.findall(r"^n-(\d+)$", read, re.M)]
            assert numbers == list(range(1, 101)), read  # before and after the restart

            ps = cli(runtime, "ps", "--json")  # a shell of the same user
            assert ps.returncode == 0, ps.stderr
            listed = {p["processId"]: p for p in json.loads(ps.stdout)}
            assert listed["job"]["state"] == "running" and listed["job"]["pid"] == pid
            assert listed["job"]["cwd"] == str(root)  # the kernel's cwd

            server = start_server(tmp_path)  # Jupyter started later: the panel's source
            try:
                served = {p["processId"]: p for p in server.request("GET", "api/exec/processes")}
                assert served["job"]["state"] == "running" and served["job"]["pid"] == pid
            finally:
                stop_process(server.proc, 20)
            kernel.execute("%terminate job --grace 100")
        finally:
            kernel.shutdown()
