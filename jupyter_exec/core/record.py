"""A process as plain data: what it was started with, and what outlives its daemon.

One record serves both places a process must survive its exec daemon: the
holder keeps it beside the child's descriptors for the next daemon to adopt
the process live (daemon/holding.py), and the persister writes it to disk,
with the exit once known, so a successor lists a finished process
(daemon/persist.py). `to_record` gives the JSON object, `from_record` reads
it back: also the shapes 0.3.0 wrote, which had no version (the holder's
`meta` with an absolute log path, the persisted record with the log's name
and without owner, marker, limits, timeout or front). A record only gains
fields: a reader ignores what it does not know, so a record a newer daemon
wrote still reads. The holder, which outlives upgrades, reads one key
itself: `marker` (daemon/holder.py), so that name stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ..wire.models import Lifetime
from ..wire.protocol import Limits, RestartSpec
from . import limits as _limits
from .launch import Launch
from .sandbox import Confinement

__all__ = ["RECORD_VERSION", "ExitRecord", "ProcessRecord", "ProcessSetup", "ScheduleRecord"]

#: 1: 0.3.0's two shapes (no "version" key); 2: one record for the holder and the disk.
RECORD_VERSION = 2


@dataclass
class ProcessSetup:
    """What a process was started with (no environment: it is never listed)."""

    process_id: str
    argv: list[str]
    cwd: str
    tty: bool
    pipe_stdin: bool
    label: str | None
    lifetime: Lifetime
    owner: str | None
    marker: str
    timeout_ms: int | None = None
    limits: Limits | None = None
    sandbox: Confinement | None = None
    #: SPEC 11 `origin`: `{"kind", "name"}`.
    origin: dict[str, str] | None = None
    #: The front it was started through (SPEC 3 `max_processes` counts per front).
    front: str = ""
    #: SPEC 11 `restart` (`{"policy", "maxRestarts", "delayMs"}`), `queue` and `after`:
    #: how the scheduler runs it (core/scheduler.py).
    restart: dict[str, Any] | None = None
    queue: str | None = None
    after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExitRecord:
    """How a process ended, as its `exited` event said (SPEC 5)."""

    #: None: it never started (SPEC 11: a dependency failed, or terminated while queued).
    exit_code: int | None
    signal: str | None
    exited_at: int | None
    timed_out: bool = False
    limit_exceeded: str | None = None
    sandbox_denied: bool = False


@dataclass
class ScheduleRecord:
    """Where a process the scheduler runs stands (SPEC 11, core/scheduler.py), so that
    a successor goes on with it: queued in its place, or restarting as planned."""

    #: How each run is spawned (with the environment: see core/launch.py).
    launch: Launch
    #: Its place among scheduled starts (a queue serves the lowest first).
    order: int
    #: The delay before the next restart (ms); it doubles after each.
    delay_ms: int = 0
    #: When the current run began (ms): a run of 60 s resets the delay.
    run_started_at: int | None = None
    #: `process/restarted` so far: `[seq, restarts, pid, exitCode, signal]` each; the
    #: current run's pid is null in the keeper's copy (made before its spawn).
    restarted: list[list[Any]] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {
            "launch": self.launch.record(),
            "order": self.order,
            "delayMs": self.delay_ms,
            "runStartedAt": self.run_started_at,
            "restarted": [list(r) for r in self.restarted],
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any], log: Path) -> ScheduleRecord:
        """`log`: where its process record says the log is now."""
        if not isinstance(data, Mapping):
            raise TypeError("a process record's schedule is a JSON object")
        restarted = [list(r) for r in data.get("restarted") or ()]
        if any(len(r) != 5 or not isinstance(r[0], int) for r in restarted):
            raise ValueError("bad process record restarted list")
        return cls(
            launch=Launch.from_record(data["launch"], log),
            order=int(data["order"]),
            delay_ms=int(data.get("delayMs") or 0),
            run_started_at=_optional_int(data.get("runStartedAt")),
            restarted=restarted,
        )


@dataclass
class ProcessRecord:
    """One process as its daemon's successor needs it (see the module docstring)."""

    setup: ProcessSetup
    #: Its output log (output.py), where the successor reads or appends.
    log: Path
    started_at: int
    #: Known once spawned (the holder's record is made before the spawn).
    pid: int | None = None
    #: The pid's start time in clock ticks (proctree.ProcessRef), None if unread.
    pid_start_time: int | None = None
    exit: ExitRecord | None = None
    #: SPEC 11: a process with `restart`, `queue` or `after` (None: any other).
    schedule: ScheduleRecord | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON object (`from_record` reads it back)."""
        s, end = self.setup, self.exit
        return {
            "version": RECORD_VERSION,
            "processId": s.process_id,
            "argv": s.argv,
            "cwd": s.cwd,
            "tty": s.tty,
            "pipeStdin": s.pipe_stdin,
            "label": s.label,
            "lifetime": s.lifetime,
            "owner": s.owner,
            "marker": s.marker,
            "timeoutMs": s.timeout_ms,
            "limits": _limits.wire(s.limits),
            "sandbox": None if s.sandbox is None else s.sandbox.record(),
            "origin": s.origin,
            "front": s.front,
            "restart": s.restart,
            "queue": s.queue,
            "after": s.after,
            "schedule": None if self.schedule is None else self.schedule.to_record(),
            "log": str(self.log),
            "startedAt": self.started_at,
            "pid": self.pid,
            "pidStartTime": self.pid_start_time,
            "exit": None
            if end is None
            else {
                "exitCode": end.exit_code,
                "signal": end.signal,
                "exitedAt": end.exited_at,
                "timedOut": end.timed_out,
                "limitExceeded": end.limit_exceeded,
                "sandboxDenied": end.sandbox_denied,
            },
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any], logs_dir: Path | None = None) -> ProcessRecord:
        """Read what `to_record`, or 0.3.0, wrote. With `logs_dir` (the records on
        disk) the log is the one of that name there, wherever it was when written
        (0.3.0 wrote only the name); without, the record names it in full.

        Raises KeyError, TypeError or ValueError for a record that cannot be read.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a process record is a JSON object, not {type(data).__name__}")
        version = data.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"bad process record version {version!r}")
        log = Path(_text(data, "log"))
        if not log.name:
            raise ValueError(f"process record log {str(log)!r} names no file")
        if logs_dir is not None:
            log = logs_dir / log.name
        elif not log.is_absolute():
            raise ValueError(f"process record log {str(log)!r} is not a full path")
        limits, box, end = data.get("limits"), data.get("sandbox"), data.get("exit")
        restart, queue, schedule = data.get("restart"), data.get("queue"), data.get("schedule")
        setup = ProcessSetup(
            process_id=_text(data, "processId"),
            argv=[str(a) for a in data["argv"]],
            cwd=_text(data, "cwd"),
            tty=bool(data["tty"]),
            pipe_stdin=bool(data.get("pipeStdin")),
            label=data.get("label"),
            lifetime=_lifetime(data["lifetime"]),
            owner=data.get("owner"),
            marker=str(data.get("marker") or ""),
            timeout_ms=_optional_int(data.get("timeoutMs")),
            limits=Limits.model_validate(limits) if limits else None,
            sandbox=Confinement.from_record(box) if box else None,
            origin=data.get("origin"),
            front=str(data.get("front") or ""),
            restart=None if restart is None else RestartSpec.model_validate(restart).wire(),
            queue=None if queue is None else str(queue),
            after=[str(a) for a in data.get("after") or ()],
        )
        return cls(
            setup=setup,
            log=log,
            started_at=int(data["startedAt"]),
            pid=_optional_int(data.get("pid")),
            pid_start_time=_optional_int(data.get("pidStartTime")),
            exit=None if end is None else _exit(end),
            schedule=None if schedule is None else ScheduleRecord.from_record(schedule, log),
        )


def _exit(data: Mapping[str, Any]) -> ExitRecord:
    return ExitRecord(
        exit_code=_optional_int(data["exitCode"]),
        signal=data.get("signal"),
        exited_at=_optional_int(data.get("exitedAt")),
        timed_out=bool(data.get("timedOut")),
        limit_exceeded=data.get("limitExceeded"),
        sandbox_denied=bool(data.get("sandboxDenied")),
    )


def _lifetime(value: object) -> Lifetime:
    for known in get_args(Lifetime):
        if value == known:
            return known  # type: ignore[no-any-return]
    raise ValueError(f"bad process record lifetime {value!r}")


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"process record {key!r} must be a non-empty string")
    return value


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return int(value)
