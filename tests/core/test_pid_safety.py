"""Signals reach only processes we can prove are ours, even when a pid is reused.

A reaped child's pid soon names another process on a busy machine. The pid is
recycled on purpose in a new pid namespace (tests/core/pid_recycle.py); the
identity check and the no-group-signal-after-reap rule are also tested directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.core.child import ChildSpec, spawn
from jupyter_exec.core.proctree import ProcessRef, identify, kill_verified
from tests.core.pid_recycle import BYSTANDER, pending
from tests.service import pid_alive

RECYCLER = Path(__file__).with_name("pid_recycle.py")


def in_new_pid_namespace(scenario: str) -> dict[str, object]:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): the direct identity tests below still run")
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(RECYCLER), scenario]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"no pid namespace here (needs root): {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_recycled_pid_is_not_signalled_nor_taken_for_a_parent() -> None:
    result = in_new_pid_namespace("descendants")
    assert result["recycled"]  # the bystander really got the dead process's pid
    assert result["signalled"] == 0 and result["pending"] == []
    assert result["tree"] == 0  # its child is not taken for a descendant of the dead one
    # The control shows the bystander would have seen a bare `kill(pid)`, and has a child.
    assert result["control_pending"] == [signal.SIGTERM] and result["control_tree"] == 1


def test_no_group_signal_once_the_leader_is_reaped() -> None:
    result = in_new_pid_namespace("group")
    assert result["recycled"] and result["pending"] == []
    assert result["control_pending"] == [signal.SIGTERM]  # killpg(pid) would have hit it


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", BYSTANDER], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_kill_verified_refuses_another_start_time(bystander: subprocess.Popen[bytes]) -> None:
    ref = identify(bystander.pid)
    assert ref is not None
    assert kill_verified([ProcessRef(ref.pid, ref.start - 1)], signal.SIGTERM) == 0
    assert pending(bystander.pid) == []
    assert kill_verified([ref], signal.SIGTERM) == 1  # the real identity is signalled
    assert pending(bystander.pid) == [signal.SIGTERM]


def test_kill_verified_skips_a_reaped_process() -> None:
    gone = subprocess.Popen(["true"])
    ref = identify(gone.pid)
    gone.wait()
    assert ref is not None and identify(ref.pid) != ref
    assert kill_verified([ref], signal.SIGKILL) == 0


def test_after_reap_the_group_is_left_to_the_verified_tree_kill(tmp_path: Path) -> None:
    """Its group may still have members, but after reaping only they, checked one by one, are
    signalled: `signal_group` sends nothing (the group id is no longer held by us)."""
    spec = ChildSpec("/bin/sh", ["sh", "-c", "sleep 60 & echo $!"], str(tmp_path), {}, False, False)
    child = spawn(spec)
    out_fd = next(fd for fd, name in child.outputs.items() if name == "stdout")
    os.set_blocking(out_fd, True)
    member = int(os.read(out_fd, 100).split()[0])
    ref = identify(member)
    assert ref is not None and os.getpgid(member) == child.pid  # left behind in the group
    deadline = time.monotonic() + 10
    while child.reap() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        child.signal_group(signal.SIGTERM)
        time.sleep(0.2)
        assert pid_alive(ref)  # no group signal went out
    finally:
        assert kill_verified([ref], signal.SIGKILL) == 1
        child.close()
    deadline = time.monotonic() + 10
    while pid_alive(ref):
        assert time.monotonic() < deadline
        time.sleep(0.01)
