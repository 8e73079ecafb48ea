"""Plain data shared by every layer: process states, ProcessInfo, signals. No I/O."""

from __future__ import annotations

import os
import signal as _signal
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: "lost": its exec daemon died while it ran (docs/protocol.md); output stays readable.
ProcessState = Literal["running", "exited", "closed", "lost"]
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


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json")


class ProcessInfo(WireModel):
    """One row of `process/list` (SPEC 4). Never carries the environment."""

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
