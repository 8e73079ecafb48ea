"""The magics in a real kernel started by a real Jupyter server.

Proves: discovery of the parent server (JPY_PARENT_PID + its runtime record and
token), live display over iopub (`display_data` then `update_display_data`
with the same display_id, carrying the starting cell's parent header, while
other cells run), processes surviving a kernel restart, and kernel interrupts
going to the process during `%exec --wait`.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.client import SyncExecClient

from .jupyter_process import JupyterServer, Kernel, jupyter_server, outputs_text

pytestmark = pytest.mark.slow
PY = sys.executable


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with jupyter_server(tmp_path_factory.mktemp("jupyter")) as running:
        yield running


@pytest.fixture(scope="module")
def kernel(server: JupyterServer) -> Iterator[Kernel]:
    k = Kernel(server)
    k.execute("%load_ext jupyter_exec")
    try:
        yield k
    finally:
        k.shutdown()


def displays(messages: list[dict[str, Any]], display_id: str) -> list[dict[str, Any]]:
    return [
        m for m in messages
        if m["msg_type"] in ("display_data", "update_display_data")
        and m["content"].get("transient", {}).get("display_id") == display_id
    ]  # fmt: skip


def test_discovers_the_server_that_launched_the_kernel(kernel: Kernel, api: SyncExecClient) -> None:
    _, out = kernel.execute("%exec_connect")
    assert "jupyter-exec: not connected yet" in outputs_text(out)
    _, out = kernel.execute("p = %exec --quiet --name found sleep 30\n%exec_connect")
    text = outputs_text(out)
    assert "the Jupyter server running this kernel" in text, text
    assert "no exec server found" not in text
    assert "found" in {info.process_id for info in api.list()}  # on the server, not in the kernel
    api.terminate("found", 500)


def test_live_display_updates_in_place_while_other_cells_run(
    kernel: Kernel, server: JupyterServer
) -> None:
    script = server.root_dir / "ticker.py"
    script.write_text(
        "import time\n"
        "for i in range(1, 21):\n"
        "    print(f'\\r\\x1b[32m{i * 5}%\\x1b[0m', end='', flush=True); time.sleep(0.1)\n"
        "print('\\nfinished', flush=True)\n"
    )
    cell_id, out = kernel.execute(f"t = %exec --name ticker {PY} {script}\nt")
    first = next(m for m in out if m["msg_type"] == "display_data")
    display_id = first["content"]["transient"]["display_id"]
    assert not [m for m in out if m["msg_type"] == "execute_result"]  # `t` did not repeat it
    # The kernel is free: another cell runs while the view keeps updating.
    _, other = kernel.execute("1 + 1")
    assert outputs_text(other) == "2"
    final = kernel.drain_until(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == display_id
            and "exited 0" in m["content"]["data"]["text/html"]
        ),
        timeout=30,
    )
    html = final["content"]["data"]["text/html"]
    assert '<span style="color:#00cd00">100%</span>' in html
    assert "95%" not in html and "finished" in html
    updates = displays(kernel.messages, display_id)[1:]
    assert updates and all(m["msg_type"] == "update_display_data" for m in updates)
    assert all(m["parent_header"]["msg_id"] == cell_id for m in updates)
    assert len(updates) <= 40  # throttled: a 2 s run with 20 redraws


def test_interrupting_the_kernel_interrupts_the_process(
    kernel: Kernel, server: JupyterServer, api: SyncExecClient
) -> None:
    script = server.root_dir / "trap.py"
    script.write_text(
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('got SIGINT', flush=True); sys.exit(5)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    msg_id = kernel.client.execute(
        f"w = %exec --wait --quiet --name trap {PY} {script}\nprint('exit', w.exit_code)"
    )
    deadline = time.monotonic() + 30
    while "trap" not in {info.process_id for info in api.list()}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert api.read("trap", 0, wait_ms=20_000, until_pattern="ready").matched
    kernel.interrupt()  # what JupyterLab's stop button does
    kernel.drain_until(
        lambda m: (
            m["parent_header"].get("msg_id") == msg_id
            and m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
        ),
        timeout=30,
    )
    reply = kernel.shell_reply(msg_id, time.monotonic() + 10)
    text = outputs_text([m for m in kernel.messages if m["parent_header"].get("msg_id") == msg_id])
    assert reply["content"]["status"] == "ok", text
    assert "exit 5" in text, text
    assert "sent SIGINT to trap" in text
    _, out = kernel.execute("print('still alive')")  # the kernel was not interrupted
    assert outputs_text(out) == "still alive\n"


def test_processes_survive_a_kernel_restart(kernel: Kernel, api: SyncExecClient) -> None:
    kernel.execute(
        "%exec --quiet --name train -- bash -c 'echo epoch 1; sleep 60'\n"
        "import time; time.sleep(0.5)"
    )
    kernel.restart()
    kernel.execute("%load_ext jupyter_exec")
    _, out = kernel.execute("%read train\n%ps")
    text = outputs_text(out)
    assert "epoch 1" in text and "[train: running" in text, text
    assert "train" in text and "running" in text
    _, out = kernel.execute("%terminate train")
    assert "terminating train" in outputs_text(out)
    deadline = time.monotonic() + 10
    while next(i for i in api.list() if i.process_id == "train").state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_runtime_record_is_what_discovery_reads(server: JupyterServer) -> None:
    records = list(Path(server.runtime_dir).glob("jpserver-*.json"))
    assert [r.name for r in records] == [f"jpserver-{server.pid}.json"]


def test_kernel_shutdown_with_a_live_view_is_clean_and_the_process_lives_on(
    server: JupyterServer, api: SyncExecClient
) -> None:
    k = Kernel(server)
    k.execute("%load_ext jupyter_exec")
    _, out = k.execute(
        "import os\n%exec --name outlives -- bash -c 'while true; do echo tick; sleep 0.2; done'\n"
        "print('pid', os.getpid())"
    )
    # A pidfd on the kernel (alive: it just replied) turns readable when it exits;
    # polling its bare pid could be fooled by a new process reusing the number.
    pidfd = os.pidfd_open(int(outputs_text(out).split("pid ")[1].split()[0]))
    try:
        time.sleep(0.5)  # the live view is updating
        k.shutdown()
        assert select.select([pidfd], [], [], 15)[0], "kernel did not exit"
    finally:
        os.close(pidfd)
    info = next(i for i in api.list() if i.process_id == "outlives")
    assert info.state == "running"
    api.terminate("outlives", 500)
