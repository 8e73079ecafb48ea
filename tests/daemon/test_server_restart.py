"""SPEC 3 Durability: processes outlive a SIGKILL or SIGTERM of the Jupyter server."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import pytest

from jupyter_exec.client import SyncExecClient
from tests.daemon.harness import daemon_pid, daemons_stopped, start_server, wait_gone
from tests.service import pid_alive, stop_process, tree_of

COUNTER = (
    "import time\ni = 0\nwhile True:\n    print(i, flush=True)\n    i += 1\n    time.sleep(0.05)"
)


def numbers(client: SyncExecClient, process_id: str) -> list[int]:
    """Every numbered line from seq 0 on, read back in reads of any size."""
    data, after = b"", 0
    while True:
        result = client.read(process_id, after)
        if not result.chunks:
            break
        data += b"".join(c.data for c in result.chunks)
        after = result.chunks[-1].seq
    return [int(n) for n in re.findall(rb"^(\d+)\r?$", data, re.MULTILINE)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_processes_outlive_the_server(tmp_path: Path, how: signal.Signals) -> None:
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        first = start_server(tmp_path)
        try:
            with SyncExecClient.connect(first.url, first.token) as client:
                client.start("pipe", [sys.executable, "-c", COUNTER])
                client.start("tty", ["cat"], tty=True)
                time.sleep(0.5)
                before = {p.process_id: p.pid for p in client.list()}
                printed_before = numbers(client, "pipe")
            daemon = daemon_pid(runtime)
            assert daemon is not None and daemon != first.proc.pid
        finally:
            first.proc.send_signal(how)
            first.proc.wait(30)
        time.sleep(2)
        second = start_server(tmp_path)
        try:
            with SyncExecClient.connect(second.url, second.token) as client:
                listed = {p.process_id: p for p in client.list()}
                assert {k: (v.state, v.pid) for k, v in listed.items()} == {
                    k: ("running", pid) for k, pid in before.items()
                }
                assert daemon_pid(runtime) == daemon
                got = numbers(client, "pipe")
                assert got == list(range(len(got)))  # from 0, no gap
                # ~40 lines were printed while no server was up.
                assert len(got) > len(printed_before) + 20
                after = client.read("tty").next_seq - 1
                client.write("tty", b"still here\n")
                echoed = client.read("tty", after, wait_ms=10_000, until_pattern="still here")
                assert echoed.matched
                tree = set().union(*(tree_of(p.pid) for p in listed.values() if p.pid))
                for name in ("pipe", "tty"):
                    assert client.terminate(name)
                for name in ("pipe", "tty"):
                    assert client.wait(name, timeout=30).exit_code == 143
                assert wait_gone(tree)
            assert second.request("POST", "api/exec/shutdown") == {"stopped": True}
            assert wait_gone([daemon])
            assert not any(pid_alive(p) for p in tree)
        finally:
            stop_process(second.proc, 20)
