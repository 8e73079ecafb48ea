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

SPEC 11: a scheduled process's record also holds its schedule (core/record.py
`ScheduleRecord`, with the environment its runs are spawned with: the records
are the user's, mode 0600). One that had not started comes back `queued` in
its place (`Registry.adopt_waiting`); a running one, or one between two runs
of its restart policy (the holder keeps the ended run until the next is
spawned), is adopted from the holder and the scheduler goes on with it. Each
run is held under its own key (`Launch.key`): the log's name, then numbered.
The queues' limits (`queue/set`) are kept in `queues.json` beside the records.
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
from ..core.process import ManagedProcess
from ..core.proctree import ProcessRef, kill_verified
from ..core.record import ProcessRecord
from ..core.registry import Registry
from ..wire.events import (
    ClosedEvent,
    Event,
    ExitedEvent,
    RemovedEvent,
    RestartedEvent,
    StartedEvent,
)

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
        self._records: dict[str, tuple[Path, ProcessRecord]] = {}
        self._dirty: dict[Path, ProcessRecord | None] = {}  # None: delete it
        self._flush: asyncio.TimerHandle | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        registry.add_listener(self._on_event)
        #: SPEC 11 queue limits, rewritten whole when one changes.
        self.queues_path = procs_dir.parent / "queues.json"
        registry.scheduler.on_queues = self._queues_changed

    def _mark(self, path: Path, record: ProcessRecord | None) -> None:
        self._dirty[path] = record
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
        """Write what is pending, stop the writer thread, release what it wrote; what
        happens after is not recorded (the holder still has it)."""
        self.registry.remove_listener(self._on_event)
        if self._flush is not None:
            self._flush.cancel()
            self._write_dirty()
        self._writer.shutdown(wait=True)
        self._release(list(self._unreleased))

    def _queues_changed(self, parallel: dict[str, int]) -> None:
        self._writer.submit(_write, self.queues_path, {"parallel": dict(parallel)})

    def _recover_queues(self) -> None:
        try:
            saved = json.loads(self.queues_path.read_text())["parallel"]
            parallel = {str(name): int(n) for name, n in saved.items() if int(n) >= 1}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable queue settings %s; the queues have 1 slot", self.queues_path)
            return
        self.registry.scheduler.parallel.update(parallel)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StartedEvent):
            self._started(event)
        elif isinstance(event, ExitedEvent | RestartedEvent) and event.process_id in self._records:
            self.track(self.registry.get(event.process_id))  # now with its exit, or run
        elif isinstance(event, ClosedEvent) and event.process_id in self._records:
            path = self._records[event.process_id][0]
            key = _held_key(self.registry.get(event.process_id), path.stem)
            self._unreleased.add(key)
            self._releasing.append(key)
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
        record = proc.record()
        if record is None:
            return
        path = self.procs_dir / (record.log.stem + ".json")
        self._records[proc.id] = (path, record)
        self._mark(path, record)

    def recover(self, logs_dir: Path, held: set[str]) -> int:
        """Adopt every record a previous daemon left but the `held` ones (keys of runs,
        adopted live); returns how many."""
        count = 0
        held = {key.partition(".")[0] for key in held}  # a restart's run: `<log>.<n>`
        retained = self.registry.config.retained_bytes_per_process
        self._recover_queues()
        for path in sorted(self.procs_dir.glob("*.json")):
            if path.stem in held:
                continue
            try:
                record = ProcessRecord.from_record(json.loads(path.read_text()), logs_dir)
                if record.setup.process_id in self._records:
                    continue
                if _waiting(record):  # SPEC 11: it had not started; it waits again
                    config = self.registry.config
                    store = OutputStore.reopen(record.log, retained, config.log_bytes_per_process)
                    self._records[record.setup.process_id] = (path, record)
                    self.track(self.registry.adopt_waiting(record, store))
                    count += 1
                    continue
                if record.exit is None:
                    _kill_if_same(record.pid, record.pid_start_time)
                store = OutputStore.recover(record.log, retained)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable process record %s; removed", path)
                path.unlink(missing_ok=True)
                continue
            if record.exit is None:
                store.failure = LOST_FAILURE
            self._records[record.setup.process_id] = (path, record)
            self.registry.adopt(ManagedProcess.finished(record, store))
            count += 1
        kept = {record.log.name for _, record in self._records.values()}
        kept |= {f"{key}.log" for key in held}
        for log_file in logs_dir.glob("*.log"):  # no record: nobody can list it
            if log_file.name not in kept:
                log_file.unlink(missing_ok=True)
        return count


def _waiting(record: ProcessRecord) -> bool:
    """A scheduled process that had not started (no run, no exit)."""
    return record.schedule is not None and record.pid is None and record.exit is None


def _held_key(proc: ManagedProcess, stem: str) -> str:
    """The holder's key of its last run (`Launch.key`); `stem` if it never ran."""
    return (proc.child.key if proc.pid is not None else "") or stem


def _kill_if_same(pid: int | None, start_time: int | None) -> None:
    """A child its guardian missed cannot be adopted (no pipes): nothing is left behind."""
    if pid is not None and start_time is not None:
        kill_verified([ProcessRef(pid, start_time)], signal.SIGKILL)


def _apply(batch: dict[Path, ProcessRecord | None]) -> None:
    for path, record in batch.items():
        if record is None:
            path.unlink(missing_ok=True)
        else:
            _write(path, record.to_record())


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
