"""Recycle a pid on purpose and report who received a signal (tests/core/test_pid_safety.py).

Run as pid 1 of a fresh pid namespace (``unshare --pid --fork --mount-proc``),
where writing ``/proc/sys/kernel/ns_last_pid`` chooses the next pid, so a
process that exited can be followed, under the same number, by a bystander
that blocks every signal: what it was sent stays pending in /proc/PID/status.
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from jupyter_exec.core.child import ChildSpec, spawn
from jupyter_exec.core.proctree import descendant_processes, identify, kill_verified

#: Blocks every signal it can, starts a child of its own, says "ready", waits.
BYSTANDER = (
    "import signal, subprocess, time\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})\n"
    "subprocess.Popen(['sleep', '60'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def next_pid_is(pid: int) -> None:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))


def bystander(pid: int, new_session: bool) -> subprocess.Popen[bytes]:
    next_pid_is(pid)
    proc = subprocess.Popen(
        [sys.executable, "-c", BYSTANDER], stdout=subprocess.PIPE, start_new_session=new_session
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def pending(pid: int) -> list[int]:
    """Signals sent to `pid` and not yet delivered (it blocks them all)."""
    mask = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    return [n for n in range(1, 65) if mask >> (n - 1) & 1]


def descendants() -> dict[str, object]:
    """kill_verified and descendant_processes with a ref whose pid now names a bystander."""
    victim = subprocess.Popen(["sleep", "60"])
    ref = identify(victim.pid)
    assert ref is not None
    # Start times count clock ticks (10 ms): a real pid cycle takes far longer than
    # one, but this shortcut does not, so let the bystander start in a later tick.
    time.sleep(0.05)
    victim.kill()
    victim.wait()
    other = bystander(ref.pid, new_session=False)
    result: dict[str, object] = {
        "recycled": other.pid == ref.pid,
        "signalled": kill_verified([ref], signal.SIGTERM),
        "tree": len(descendant_processes(ref)),
        "pending": pending(other.pid),
    }
    os.kill(ref.pid, signal.SIGTERM)  # what a bare pid kill does: the control
    result["control_tree"] = len(descendant_processes(identify(other.pid)))  # type: ignore[arg-type]
    result["control_pending"] = pending(other.pid)
    other.kill()
    other.wait()
    return result


def group() -> dict[str, object]:
    """Child.signal_group after the child was reaped, its pid now a new group leader."""
    child = spawn(ChildSpec("/bin/sleep", ["sleep", "60"], "/", {}, False, False))
    os.kill(child.pid, signal.SIGKILL)  # the child is ours and unreaped: its pid is safe
    while child.reap() is None:
        time.sleep(0.01)
    leader = bystander(child.pid, new_session=True)  # pgid == pid, like any exec child
    result: dict[str, object] = {"recycled": leader.pid == child.pid}
    child.signal_group(signal.SIGTERM)
    result["pending"] = pending(leader.pid)
    os.killpg(child.pid, signal.SIGTERM)  # what killpg of a remembered pid does: the control
    result["control_pending"] = pending(leader.pid)
    child.close()
    leader.kill()
    leader.wait()
    return result


if __name__ == "__main__":
    assert os.getpid() == 1, "run me in a new pid namespace"
    print(json.dumps({"descendants": descendants, "group": group}[sys.argv[1]]()))
