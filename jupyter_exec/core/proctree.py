"""Finding and killing a process tree, and the figures of every process at once.

Descendants that leave their session or process group are still found by the
marker variable every child inherits (see `child`), and the parent tree
catches ones that cleared their environment.

A pid alone does not name a process: once a process is reaped its number is
free, and a busy machine (``pid_max`` is often 32768) hands it to another one.
So everything found here is a `ProcessRef`, the pid plus its start time
(field 22 of ``/proc/PID/stat``), and `kill_verified` signals one only through
a pidfd opened on that pid and then checked against that start time: the pidfd
names whoever had the pid when it was opened, and a matching start time read
afterwards proves that was still the process found, so no recycle can slip
between the check and the signal. (Start times count clock ticks; a pid cannot
come back within one, as that takes ``pid_max`` forks.)

psutil walks the parent tree (`descendant_processes`). Two scans stay ours,
for their cost on the hot paths (measured with ~110 processes on the machine):
`marked_processes` runs in every round of a termination's escalation, and
looking for the marker in the raw ``environ`` bytes costs 0.9 ms where
psutil (a `Process` per pid, its environment parsed into a dict) costs 5 ms;
`scan` is the usage sampler's one pass (core/usage.py), reading each
``/proc/PID/stat`` once for parent, CPU times and RSS, where psutil reads two
files per process through an object per pid (about three times the cost).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable
from typing import NamedTuple

import psutil

from .pidns import SUPERVISORS

__all__ = [
    "MARKER_VAR",
    "ProcStat",
    "ProcessRef",
    "descendant_processes",
    "identify",
    "kill_verified",
    "marked_processes",
    "scan",
]

MARKER_VAR = "JUPYTER_EXEC_MARKER"


class ProcessRef(NamedTuple):
    """One process: its pid and its start time (clock ticks after boot)."""

    pid: int
    start: int


class ProcStat(NamedTuple):
    """What the usage sampler needs of one process (core/usage.py)."""

    ppid: int
    start: int
    #: Own user+system CPU seconds, and those of its children it has reaped.
    cpu: float
    waited: float
    rss: int


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def scan() -> dict[int, ProcStat]:
    """Every process of the machine with its parent, start, CPU times and RSS: one
    read of ``/proc/PID/stat`` each (module docstring)."""
    found: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        read = _comm_and_fields(name)
        if read is None:
            continue
        comm, f = read
        # proc(5) fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), 22, 24 (rss, pages).
        # A sandbox's supervisor (core/pidns.py) is a fork of the daemon: its RSS is the
        # daemon's pages it shares (about 1 MiB is its own), not the program's.
        found[int(name)] = ProcStat(
            int(f[1]),
            _start(f),
            (int(f[11]) + int(f[12])) / _TICKS,
            (int(f[13]) + int(f[14])) / _TICKS,
            0 if comm in SUPERVISORS else int(f[21]) * _PAGE,
        )
    return found


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    read = _comm_and_fields(pid)
    return None if read is None else read[1]


def _comm_and_fields(pid: int | str) -> tuple[bytes, list[bytes]] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    head, _, tail = stat.rpartition(b")")
    return head.partition(b"(")[2], tail.split()


def _start(fields: list[bytes]) -> int:
    return int(fields[19])  # field 22 of proc(5), counted after pid and comm


def identify(pid: int) -> ProcessRef | None:
    """The process that has this pid now, or None if there is none."""
    fields = _stat_fields(pid)
    return None if fields is None else ProcessRef(pid, _start(fields))


def marked_processes(marker: str, prefix: bool = False) -> set[ProcessRef]:
    """Processes whose environment carries this marker (or any marker starting with it)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    found: set[ProcessRef] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item == needle or (prefix and item.startswith(needle)):
                ref = identify(int(entry.name))
                if ref is not None:
                    found.add(ref)
                break
    return found


def descendant_processes(root: ProcessRef) -> set[ProcessRef]:
    """Processes below `root` in the parent tree (catches children that cleared their env).

    Empty unless `root` itself is alive, with its start time, both before and after
    the walk: then its pid was never free, so its children are its own.
    """
    if identify(root.pid) != root:
        return set()
    try:
        below = psutil.Process(root.pid).children(recursive=True)
    except psutil.Error:
        return set()
    if identify(root.pid) != root:
        return set()
    found: set[ProcessRef] = set()
    for child in below:
        ref = identify(child.pid)
        # psutil's object knows its process by start time too: still running, it is
        # the one `ref` was read from (a pid cannot leave and come back meanwhile).
        if ref is not None and child.is_running():
            found.add(ref)
    return found


def kill_verified(refs: Iterable[ProcessRef], signum: int) -> int:
    """Signal each process that is still the one found; returns how many were signalled.

    A process that is gone, or whose pid now names another process, is skipped,
    and so is one that cannot be checked (no descriptor left for its pidfd).
    """
    signalled = 0
    for ref in refs:
        try:
            pidfd = os.pidfd_open(ref.pid)
        except OSError:  # gone (ESRCH), or no descriptor to check it with
            continue
        try:
            if identify(ref.pid) == ref:  # so the pidfd, opened before, names ref
                signal.pidfd_send_signal(pidfd, signum)
                signalled += 1
        except OSError:  # exited meanwhile (ESRCH), or not ours to signal (EPERM)
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(pidfd)
    return signalled
