"""Per-process resource limits (SPEC 4 `process/start` `limits`) and what an exit says of them.

Limits are rlimits set in the child between fork and exec, so they hold from
its first instruction and are inherited by its descendants (each descendant
gets its own allowance: an rlimit is per process, not per tree):

- ``memoryBytes`` -> ``RLIMIT_AS`` (address space). An allocation past it
  fails inside the child: Python raises ``MemoryError``, C's ``malloc``
  returns NULL. That exit looks like any other failure, so it is not reported
  as ``limitExceeded`` (a cgroup OOM kill would be, where cgroup v2 is
  delegated: not supported yet, the ``cgroup`` capability says so).
- ``cpuSeconds`` -> ``RLIMIT_CPU`` with the hard limit one second above the
  soft one: the kernel sends SIGXCPU at the soft limit (default action: the
  process dies), SIGKILL at the hard one. An exit by SIGXCPU, or by SIGKILL
  with the CPU time the kernel accounted (``wait4``) at the limit, is reported
  as ``limitExceeded: "cpu"``.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from typing import Any

from ..wire.protocol import Limits

__all__ = ["CAPABILITIES", "exceeded", "preexec", "wire"]


#: Merged into the `initialize` capabilities (SPEC 2).
CAPABILITIES: dict[str, Any] = {
    "timeout": True,
    "untilIdle": True,
    "limits": {"memoryBytes": ["rlimit"], "cpuSeconds": ["rlimit"], "cgroup": False},
}


def preexec(limits: Limits | None) -> Callable[[], None] | None:
    """A function for the child to run before exec that applies `limits` (None: nothing)."""
    if limits is None or (limits.memory_bytes is None and limits.cpu_seconds is None):
        return None
    memory, cpu = limits.memory_bytes, limits.cpu_seconds

    def apply() -> None:  # runs in the forked child: only async-signal-safe work
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    return apply


def wire(limits: Limits | None) -> dict[str, int] | None:
    """The limits as ProcessInfo lists them (camelCase, only those set)."""
    if limits is None:
        return None
    return limits.model_dump(by_alias=True, exclude_none=True) or None


def exceeded(limits: Limits | None, signum: int | None, cpu_used: float) -> str | None:
    """`"cpu"` when the exit is the CPU limit's doing, else None (see the module doc)."""
    if limits is None or limits.cpu_seconds is None or signum is None:
        return None
    if signum == signal.SIGXCPU:
        return "cpu"
    if signum == signal.SIGKILL and cpu_used >= limits.cpu_seconds:
        return "cpu"
    return None
