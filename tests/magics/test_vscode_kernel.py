"""A kernel that no Jupyter server launched (VS Code, `jupyter console`), with no server up.

Started by jupyter_client's KernelManager as VS Code starts one, on its own
runtime dir: `%exec` puts the job in the user's exec daemon (SPEC 3 "Every
front"), its live view updates through display_id, and the job outlives a
kernel restart; the next kernel, the CLI and a Jupyter server started
afterwards all see it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.harness import daemons_stopped, start_server
from tests.magics.jupyter_process import BIN, LocalKernel, clean_env, outputs_text
from tests.service import stop_process

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


@pytest.mark.timeout(120)
def test_a_kernel_whose_server_lacks_the_extension_uses_the_daemon(tmp_path: Path) -> None:
    """The kernel's parent server (JPY_PARENT_PID, its record) answers, but not our API."""
    runtime, root = tmp_path / "runtime", tmp_path / "root"
    runtime.mkdir()
    root.mkdir()
    other = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # 501 to all
    threading.Thread(target=other.serve_forever, daemon=True).start()
    record = {"pid": os.getpid(), "port": other.server_address[1], "hostname": "127.0.0.1",
              "base_url": "/", "token": "t", "root_dir": str(root)}  # fmt: skip
    # jupyter_client gives the kernel JPY_PARENT_PID = this pid, as a server would.
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps(record))
    with daemons_stopped(runtime):
        kernel = LocalKernel(clean_env(runtime), root)
        try:
            _, out = kernel.execute(
                "%load_ext jupyter_exec\np = %exec --quiet --name job sleep 300\n%exec_connect"
            )
            text = outputs_text(out)
            assert "cannot use http://127.0.0.1:" in text, text
            assert "processes run in this user's exec daemon" in text
            assert "processes outlive this front" in text and "inside this kernel" not in text
            # The CLI and the MCP face find that server too, and also go to the daemon.
            ps = cli(runtime, "ps")
            assert re.search(r"^job\s+running", ps.stdout, re.M), ps
            assert "cannot use http://127.0.0.1:" in ps.stderr
            listed = asyncio.run(mcp_list(runtime, tmp_path / "mcp.err"))
            said = (tmp_path / "mcp.err").read_text()
            assert "job" in listed and "using this user's exec daemon" in said, said
        finally:
            kernel.shutdown()
            other.shutdown()
            other.server_close()


async def mcp_list(runtime: Path, errors: Path) -> str:
    """`list_processes` through `jupyter-exec mcp` (the SDK's stdio client), stderr to `errors`."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(
        command=str(BIN / "jupyter-exec"), args=["mcp"], env=clean_env(runtime)
    )
    with errors.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as streams, ClientSession(*streams) as s:
            await s.initialize()
            result = await s.call_tool("list_processes", {})
    return "".join(getattr(block, "text", "") for block in result.content)
