"""Registry events: what happened to a process, in seq order. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .models import ProcessInfo


@dataclass(frozen=True, slots=True)
class OutputEvent:
    process_id: str
    seq: int
    stream: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ExitedEvent:
    process_id: str
    seq: int
    #: None: it never started (SPEC 11: a dependency failed, or it was terminated
    #: while queued; its `failure` says why).
    exit_code: int | None
    signal: str | None
    timed_out: bool = False
    limit_exceeded: str | None = None
    #: A sandboxed process failed with output that reads like a sandbox refusal.
    sandbox_denied: bool = False


@dataclass(frozen=True, slots=True)
class ClosedEvent:
    process_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class RestartedEvent:
    """SPEC 11: a restart policy started the next run; carries the previous run's exit."""

    process_id: str
    seq: int
    #: Restarts so far, this one included.
    restarts: int
    #: The new run's pid.
    pid: int
    exit_code: int | None
    signal: str | None


@dataclass(frozen=True, slots=True)
class StartedEvent:
    info: ProcessInfo

    @property
    def process_id(self) -> str:
        return self.info.process_id


@dataclass(frozen=True, slots=True)
class RemovedEvent:
    process_id: str


SeqEvent = OutputEvent | ExitedEvent | ClosedEvent | RestartedEvent
Event = SeqEvent | StartedEvent | RemovedEvent
