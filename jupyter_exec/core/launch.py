"""How every run of one process is spawned (SPEC 11): checked once, reused, recordable.

A plain process is spawned once, at `process/start`. One that waits in a queue,
waits for its `after` processes, or restarts, is spawned later and perhaps many
times: `process/start` checks its request once (cwd, program, environment,
sandbox) into a `Launch`, and the scheduler (core/scheduler.py) spawns each run
from it. It is plain data, so that a daemon's successor can take it over
(`record` / `from_record`): the environment is in it, so it is written only
where the process records are (the user's state directory, mode 0600).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..wire.protocol import Limits
from .sandbox import Confinement


@dataclass
class Launch:
    """A checked `process/start`: what `child.spawn` needs but the preexec steps."""

    executable: str
    argv: list[str]
    cwd: str
    #: The whole environment of the child (marker and sandbox scrubbing applied).
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool
    rows: int
    cols: int
    limits: Limits | None
    #: The sandbox each run is confined to (a fresh `sandbox.Sandbox` per run); None: none.
    conf: Confinement | None
    #: The process's one log: every run writes on in it (one seq stream).
    log_path: Path

    def key(self, run: int) -> str:
        """The keeper's name for a run's child (unique over time): the log's, then numbered."""
        return self.log_path.stem if run == 0 else f"{self.log_path.stem}.{run}"

    def record(self) -> dict[str, Any]:
        return {
            "executable": self.executable,
            "argv": self.argv,
            "cwd": self.cwd,
            "env": self.env,
            "tty": self.tty,
            "pipeStdin": self.pipe_stdin,
            "rows": self.rows,
            "cols": self.cols,
            "limits": None if self.limits is None else self.limits.model_dump(by_alias=True),
            "sandbox": None if self.conf is None else self.conf.record(),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any], log_path: Path) -> Launch:
        """`log_path`: its process record's (core/record.py), which names it once.
        Raises KeyError, TypeError or ValueError for one that cannot be read."""
        if not isinstance(data, Mapping) or not isinstance(data["env"], Mapping):
            raise TypeError("a launch record is a JSON object with an env object")
        limits, box = data.get("limits"), data.get("sandbox")
        return cls(
            executable=str(data["executable"]),
            argv=[str(a) for a in data["argv"]],
            cwd=str(data["cwd"]),
            env={str(k): str(v) for k, v in data["env"].items()},
            tty=bool(data["tty"]),
            pipe_stdin=bool(data["pipeStdin"]),
            rows=int(data["rows"]),
            cols=int(data["cols"]),
            limits=Limits.model_validate(limits) if limits else None,
            conf=Confinement.from_record(box) if box else None,
            log_path=log_path,
        )
