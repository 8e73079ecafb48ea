"""Plain data shared by every layer: process states, ProcessInfo, signals. No I/O."""

from __future__ import annotations

import os
import signal as _signal
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

#: "lost": its exec daemon died while it ran (docs/protocol.md); output stays readable.
#: SPEC 11: "queued" (not started yet: its queue is full, or it waits for its `after`
#: processes; `pid` null) and "restarting" (between two runs of a restart policy).
ProcessState = Literal["running", "exited", "closed", "lost", "queued", "restarting"]
#: SPEC 11 `restart.policy`.
RestartPolicyName = Literal["never", "on-failure", "always"]
Lifetime = Literal["connection", "detached"]
StreamName = Literal["stdout", "stderr", "pty"]

#: SPEC 4 `process/signal` names -> POSIX signals.
SIGNALS: dict[str, _signal.Signals] = {
    "interrupt": _signal.SIGINT,
    "terminate": _signal.SIGTERM,
    "kill": _signal.SIGKILL,
    "hangup": _signal.SIGHUP,
    "quit": _signal.SIGQUIT,
    "user1": _signal.SIGUSR1,
    "user2": _signal.SIGUSR2,
    "stop": _signal.SIGSTOP,
    "continue": _signal.SIGCONT,
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass
class ProcessInfo:
    """One row of `process/list` (SPEC 4). Never carries the environment.

    A plain dataclass, not a pydantic model, so that the client and the CLI can
    read a process list without importing pydantic (see bench/cli_startup.py).
    """

    process_id: str
    argv: list[str]
    cwd: str
    tty: bool
    pid: int | None
    label: str | None
    lifetime: Lifetime
    state: ProcessState
    started_at: int
    exited_at: int | None
    exit_code: int | None
    signal: str | None
    next_seq: int
    first_seq: int
    output_bytes: int
    failure: str | None = None
    #: Whether stdin takes writes (tty, or a pipe started with `pipeStdin`).
    pipe_stdin: bool = False
    #: The wall-clock limit it was started with (`timeoutMs`), and whether it fired.
    timeout_ms: int | None = None
    timed_out: bool = False
    #: The resource limits it was started with: `{"memoryBytes", "cpuSeconds"}`.
    limits: dict[str, int] | None = None
    #: `"cpu"` or `"memory"` when the exit is known to come from that limit.
    limit_exceeded: str | None = None
    #: The sandbox it runs in: `{"mode", "network", "writableRoots"}`; None: unsandboxed.
    sandbox: dict[str, Any] | None = None
    #: SPEC 11: the TCP ports its tree listens on, `[{"port", "address", "pid"}]`, and
    #: inside Jupyter Server each one's `"url"` through jupyter-server-proxy.
    ports: list[dict[str, Any]] = field(default_factory=list)
    #: SPEC 11: what its tree costs, `{"cpuPercent", "cpuSeconds", "rssBytes",
    #: "peakRssBytes", "processes"}` (core/usage.py); None until first sampled.
    usage: dict[str, Any] | None = None
    #: SPEC 11: where it was started from, `{"kind", "name"}` (docs/protocol.md).
    origin: dict[str, str] | None = None
    #: SPEC 11: the `restart` it was started with, defaults filled in: `{"policy",
    #: "maxRestarts", "delayMs"}`; None: never restarted (no policy given).
    restart_policy: dict[str, Any] | None = None
    #: SPEC 11: how many times it was restarted so far.
    restarts: int = 0
    #: SPEC 11: the queue it waits in or runs in (None: none), and the processes it
    #: starts after (each must exit 0 first).
    queue: str | None = None
    after: list[str] = field(default_factory=list)
    #: While `restarting`: when the next run starts (ms since epoch).
    restart_at: int | None = None

    def __post_init__(self) -> None:
        self.argv = list(self.argv)  # a copy: the process's own list stays its own

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON object of SPEC 4."""
        return {_WIRE_NAMES[f.name]: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ProcessInfo:
        """Parse a server's object; unknown members (a newer server's) are ignored."""
        names = ((f.name, _WIRE_NAMES[f.name]) for f in fields(cls))
        return cls(**{name: data[wire] for name, wire in names if wire in data})


_WIRE_NAMES = {f.name: _camel(f.name) for f in fields(ProcessInfo)}


@dataclass
class QueueInfo:
    """One row of SPEC 11 `queue/list`: a queue's limit and what it holds now."""

    name: str
    parallel: int
    #: Its processes that run (or wait between two runs of a restart policy).
    running: int
    #: Its processes that wait for a slot or for their `after` processes.
    queued: int

    def wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parallel": self.parallel,
            "running": self.running,
            "queued": self.queued,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> QueueInfo:
        return cls(data["name"], data["parallel"], data["running"], data["queued"])


def exit_status(status: int) -> tuple[int, str | None]:
    """Map a raw wait status to SPEC 5's (exitCode, signal): 128+N on signal N."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return 128 + signum, signal_name(signum)
    return os.waitstatus_to_exitcode(status), None


def signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"
