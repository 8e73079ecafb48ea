"""Finding and killing a process tree through /proc. Standard library only.

Descendants that leave their session or process group are still found by the
marker variable every child inherits (see `child`), and the parent tree
catches ones that cleared their environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

MARKER_VAR = "JUPYTER_EXEC_MARKER"


def marked_pids(marker: str, prefix: bool = False) -> set[int]:
    """Pids whose environment carries this marker (or any marker starting with it)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    found: set[int] = set()
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
                found.add(int(entry.name))
                break
    return found


def descendant_pids(root_pid: int) -> set[int]:
    """Pids below root_pid in the parent tree (catches children that cleared their env)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def kill_pids(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
