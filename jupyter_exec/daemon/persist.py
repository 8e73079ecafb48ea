"""Per-process records on disk, so a daemon's successor can list what it left.

The daemon's registry writes its logs into its logs directory (kept by the
guardian when the daemon dies). Beside them, `state_dir/procs/<log>.json`
holds what `process/list` shows (processId, argv, cwd, tty, pid and its start
time, label, lifetime, startedAt, sandbox) and, once known, the exit record. Records
are written off the event loop (one writer thread, in order) and coalesced
over `FLUSH_SECONDS`, so a short command costs one write, not two, and a
spawn never waits for the disk; a record is deleted with its log when the
process is removed. A process younger than `FLUSH_SECONDS` when its daemon
is killed has no record yet: it is not listed, and its log is deleted.

The holder (daemon/holder.py) keeps every running process across a daemon's
death, and lets go of one only once its exit record is on disk (`on_released`
is called after that write), so a process is always either held or recorded
as exited. The next daemon adopts the held ones live (daemon/holding.py) and
reads every other record back: one whose exit was recorded comes back
`closed` with its real exit status; one still running is `lost` (only when
the holder itself died: nothing kept its pipes). Both keep their output
readable from the log and their seq numbering; they are removed when
`exited_retention_seconds` have passed since they exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.output import OutputStore
from ..core.process import ManagedProcess, ProcessSetup
from ..core.proctree import ProcessRef, kill_verified
from ..core.registry import Registry
from ..core.sandbox import Confinement
from ..wire.events import ClosedEvent, Event, ExitedEvent, RemovedEvent, StartedEvent

__all__ = ["FLUSH_SECONDS", "LOST_FAILURE", "Persister", "RecoveredProcess"]


log = logging.getLogger(__name__)

LOST_FAILURE = "lost: the exec daemon died while it ran"
#: How long record changes gather before they are written.
FLUSH_SECONDS = 0.05


class Persister:
    """A registry listener that keeps one record per process in `procs_dir`."""

    def __init__(
        self,
        registry: Registry,
        procs_dir: Path,
        on_released: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`on_released(keys)`: these closed processes' exits are on disk (keys: log stems)."""
        self.registry = registry
        self.on_released = on_released
        self._unreleased: set[str] = set()
        self._releasing: list[str] = []
        self.procs_dir = procs_dir
        procs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._records: dict[str, tuple[Path, dict[str, Any]]] = {}
        self._dirty: dict[Path, dict[str, Any] | None] = {}  # None: delete it
        self._flush: asyncio.TimerHandle | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        registry.add_listener(self._on_event)

    def _mark(self, path: Path, record: dict[str, Any] | None) -> None:
        self._dirty[path] = None if record is None else dict(record)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._write_dirty)

    def _write_dirty(self) -> None:
        self._flush = None
        batch, self._dirty = self._dirty, {}
        releasing, self._releasing = self._releasing, []
        future = self._writer.submit(_apply, batch)
        if releasing:
            loop = asyncio.get_running_loop()
            future.add_done_callback(lambda _: self._written(loop, releasing))

    def _written(self, loop: asyncio.AbstractEventLoop, keys: list[str]) -> None:
        """In the writer thread: the batch holding these exits is on disk."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: `close` releases them
            loop.call_soon_threadsafe(self._release, keys)

    def _release(self, keys: list[str]) -> None:
        keys = [k for k in keys if k in self._unreleased]
        self._unreleased.difference_update(keys)
        if keys and self.on_released is not None:
            self.on_released(keys)

    def close(self) -> None:
        """Write what is pending, stop the writer thread, release what it wrote."""
        if self._flush is not None:
            self._flush.cancel()
            self._write_dirty()
        self._writer.shutdown(wait=True)
        self._release(list(self._unreleased))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StartedEvent):
            self._started(event)
        elif isinstance(event, ExitedEvent) and event.process_id in self._records:
            path, record = self._records[event.process_id]
            proc = self.registry.get(event.process_id)
            record["exit"] = {
                "exitCode": event.exit_code,
                "signal": event.signal,
                "exitedAt": proc.exited_at,
                "timedOut": proc.timed_out,
                "limitExceeded": proc.limit_exceeded,
            }
            self._mark(path, record)
        elif isinstance(event, ClosedEvent) and event.process_id in self._records:
            path = self._records[event.process_id][0]
            self._unreleased.add(path.stem)
            self._releasing.append(path.stem)
            self._mark(path, self._records[event.process_id][1])
        elif isinstance(event, RemovedEvent):
            entry = self._records.pop(event.process_id, None)
            if entry is not None:
                self._mark(entry[0], None)

    def _started(self, event: StartedEvent) -> None:
        proc = self.registry.find(event.process_id)
        if proc is not None:
            self.track(proc)

    def track(self, proc: ManagedProcess) -> None:
        """Keep a record of `proc` (started here, or adopted from the holder)."""
        if proc.store.log_path is None:
            return
        info = proc.info()
        record = {
            "processId": info.process_id,
            "argv": info.argv,
            "cwd": info.cwd,
            "tty": info.tty,
            "pipeStdin": info.pipe_stdin,
            "pid": info.pid,
            "pidStartTime": proc.child.ref.start if proc.child.ref.start >= 0 else None,
            "label": info.label,
            "lifetime": info.lifetime,
            "startedAt": info.started_at,
            "sandbox": None if proc.setup.sandbox is None else proc.setup.sandbox.record(),
            "origin": proc.setup.origin,
            "log": proc.store.log_path.name,
        }
        path = self.procs_dir / (proc.store.log_path.stem + ".json")
        self._records[info.process_id] = (path, record)
        self._mark(path, record)

    def recover(self, logs_dir: Path, held: set[str]) -> int:
        """Adopt every record a previous daemon left but the `held` ones (log stems,
        adopted live); returns how many."""
        count = 0
        for path in sorted(self.procs_dir.glob("*.json")):
            if path.stem in held:
                continue
            try:
                record = json.loads(path.read_text())
                proc = RecoveredProcess(
                    record, logs_dir, self.registry.config.retained_bytes_per_process
                )
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable process record %s; removed", path)
                path.unlink(missing_ok=True)
                continue
            if proc.id in self._records:
                continue
            self._records[proc.id] = (path, record)
            self.registry.adopt(proc)
            count += 1
        kept = {str(record["log"]) for _, record in self._records.values()}
        kept |= {f"{key}.log" for key in held}
        for log_file in logs_dir.glob("*.log"):  # no record: nobody can list it
            if log_file.name not in kept:
                log_file.unlink(missing_ok=True)
        return count


class RecoveredProcess(ManagedProcess):
    """A process of a previous daemon: no child any more, its log read-only."""

    def __init__(self, record: dict[str, Any], logs_dir: Path, retained_bytes: int) -> None:
        exit_record = record.get("exit")
        if exit_record is None:
            _kill_if_same(record["pid"], record.get("pidStartTime"))
        self.setup = ProcessSetup(
            process_id=record["processId"],
            argv=list(record["argv"]),
            cwd=record["cwd"],
            tty=bool(record["tty"]),
            pipe_stdin=bool(record.get("pipeStdin")),
            label=record.get("label"),
            lifetime=record["lifetime"],
            owner=None,
            marker="",
            sandbox=Confinement.from_record(record["sandbox"]) if record.get("sandbox") else None,
            origin=record.get("origin"),
        )
        self.id = self.setup.process_id
        self._pid = int(record["pid"])
        self.store = OutputStore.recover(logs_dir / record["log"], retained_bytes)
        self._loop = asyncio.get_running_loop()
        self.started_at = int(record["startedAt"])
        self._last_seq = self.store.last_seq
        self._changed = asyncio.Event()
        self.exited, self.closed = asyncio.Event(), asyncio.Event()
        self.terminating = None
        self._write_ids: set[str | int] = set()
        self._timeout = None
        self.exited_event = None
        if exit_record is None:
            self.state = "lost"
            self.exited_at = self.exit_code = self.signal = None
            self.timed_out, self.limit_exceeded = False, None
            self.store.failure = LOST_FAILURE
        else:
            self.state = "closed"
            self.exit_code, self.signal = exit_record["exitCode"], exit_record.get("signal")
            self.exited_at = exit_record.get("exitedAt")
            self.timed_out = bool(exit_record.get("timedOut"))
            self.limit_exceeded = exit_record.get("limitExceeded")
            self.exited_event = ExitedEvent(self.id, self._take_seq(), self.exit_code, self.signal)
        # Followers end here: nothing more will come (SPEC 5 `closed`).
        self.closed_event = ClosedEvent(self.id, self._take_seq())
        self.exited.set()
        self.closed.set()

    @property
    def pid(self) -> int:
        return self._pid


def _kill_if_same(pid: int, start_time: int | None) -> None:
    """A child its guardian missed cannot be adopted (no pipes): nothing is left behind."""
    if start_time is not None:
        kill_verified([ProcessRef(pid, start_time)], signal.SIGKILL)


def _apply(batch: dict[Path, dict[str, Any] | None]) -> None:
    for path, record in batch.items():
        if record is None:
            path.unlink(missing_ok=True)
        else:
            _write(path, record)


def _write(path: Path, record: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a record)."""
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write process record %s: %s", path, exc)
