"""Restart policies, queues and dependencies (SPEC 11): when each run of a process begins.

A `process/start` with `restart`, `queue` or `after` is the scheduler's (a
Codex client never sends them: its starts run at once, as before). The
registry checks the request into a `Launch` (core/launch.py) and registers the
process, started or `queued`; from then on the scheduler decides:

- **Queues.** A named queue runs at most `parallel` of its processes at once
  (`queue/set`; a new queue has 1). The others wait, `queued` with no pid, and
  start in the order they were started. A process between two runs of its
  restart policy keeps its slot.
- **after.** A process starts only once every process it names exited with 0.
  If one fails (another exit, a signal, or it never started), it never starts:
  it ends with exitCode null and `failure` naming that dependency and its exit.
  `after` names only processes that exist, so the one cycle possible is a
  process naming itself (refused, `check`).
- **Restarts.** When a run ends and its policy asks for another (`always`, or
  `on-failure` after an exit other than 0), the process goes `restarting` and
  the next run begins after a delay that starts at `delayMs` and doubles up to
  `MAX_DELAY_MS`, back to `delayMs` after a run that lasted `RESET_AFTER_MS`.
  What the ended run left behind (descendants holding its streams) is killed
  first, so runs never overlap. Each run writes on in the same log and seq
  stream; `process/restarted` (ManagedProcess.begin_run) carries the previous
  run's exit; `exited` and `closed` come once, after the last run. After
  `maxRestarts` restarts the next end is the last. `process/terminate` and
  `process/signal` kill/terminate stop the restarts (`stop`), also during the
  delay.

Everything runs on the event loop; each delay is a task this scheduler owns
(`aclose` cancels and awaits them).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..wire.errors import ExecError, InvalidParamsError
from ..wire.events import Event, ExitedEvent, RemovedEvent
from ..wire.models import QueueInfo
from ..wire.protocol import StartParams
from .child import Child
from .launch import Launch
from .process import ManagedProcess
from .proctree import kill_verified, marked_processes
from .record import ProcessRecord, ScheduleRecord

#: The restart delay doubles up to this.
MAX_DELAY_MS = 60_000
#: A run that lasted this long resets the delay to the policy's `delayMs`.
RESET_AFTER_MS = 60_000
#: `parallel` of a queue nobody has set.
DEFAULT_PARALLEL = 1
#: States that have ended for good (no run will follow).
ENDED = ("exited", "closed", "lost")
#: States that hold a queue slot.
ACTIVE = ("running", "restarting")

#: Spawns one run: (launch, the record the keeper keeps, run number) -> child
#: (registry.spawn_run).
SpawnRun = Callable[[Launch, ProcessRecord, int], Child]
Find = Callable[[str], ManagedProcess | None]


@dataclass
class Job:
    """A process the scheduler runs; what outlives the daemon is `state` (its record's)."""

    proc: ManagedProcess
    state: ScheduleRecord
    #: `after` processes that have not exited 0 yet.
    pending: set[str] = field(default_factory=set)
    #: Stopped by a terminate or a kill: no further run.
    stopped: bool = False
    #: The wait before the next run (then its spawn), while `restarting`.
    restart_task: asyncio.Task[None] | None = None


class Scheduler:
    def __init__(self, find: Find, spawn_run: SpawnRun) -> None:
        self._find = find
        self._spawn_run = spawn_run
        self.jobs: dict[str, Job] = {}
        #: Every queue set (`queue/set`) or used, and its limit.
        self.parallel: dict[str, int] = {}
        #: The place in line of the next scheduled start.
        self._next_order = 1
        self._pump_handle: asyncio.Handle | None = None
        #: Kills of what ended runs left behind, before a stop's `exited` (owned tasks).
        self._cleanups: set[asyncio.Task[None]] = set()
        #: Told every queue's limit when one is set (the daemon keeps them: daemon/persist.py).
        self.on_queues: Callable[[dict[str, int]], None] | None = None

    # -- a start ------------------------------------------------------------------

    def check(self, params: StartParams) -> None:
        """Refuse an `after` that names the process itself or an unknown id (-32602,
        before anything starts). No other cycle can form: a process can only wait for
        processes that already exist, and an id is free again only once its process
        has ended and been removed, when nothing waits for it any more."""
        for dep in params.after:
            if dep == params.process_id:
                raise InvalidParamsError(f"after names the process itself ({dep!r})")
            if self._find(dep) is None:
                raise InvalidParamsError(f"after names unknown process id {dep!r}")

    def starts_now(self, params: StartParams) -> bool:
        """Whether a scheduled start runs at once: its `after` processes all exited 0 and
        its queue has a free slot nobody waits for."""
        if any(self._dependency(dep)[0] is not True for dep in params.after):
            return False
        if params.queue is None:
            return True
        jobs = list(self._in_queue(params.queue))
        waiting = any(j.proc.state == "queued" for j in jobs)
        running = sum(1 for j in jobs if j.proc.state in ACTIVE)
        return not waiting and running < self.parallel_of(params.queue)

    def plan(self, restart: dict[str, Any] | None, launch: Launch) -> ScheduleRecord:
        """The schedule of a new start: the next place in line, the first delay."""
        delay = 0 if restart is None else int(restart["delayMs"])
        self._next_order += 1
        return ScheduleRecord(launch, self._next_order - 1, delay)

    def add(self, proc: ManagedProcess, state: ScheduleRecord) -> Job:
        """Run `proc` from now on: started, `queued`, or a previous daemon's (adopted
        running, or recovered queued), which keeps its place in line."""
        proc.schedule = state
        self._next_order = max(self._next_order, state.order + 1)
        job = Job(proc, state)
        job.pending = {dep for dep in proc.setup.after if self._dependency(dep)[0] is not True}
        self.jobs[proc.id] = job
        name = proc.setup.queue
        if name is not None and name not in self.parallel:  # listed from now on, idle or not
            self.parallel[name] = DEFAULT_PARALLEL
            if self.on_queues is not None:
                self.on_queues(self.parallel)
        proc.on_run_end = self._run_ended
        if proc.state == "queued":
            self._soon()
        return job

    # -- queues ---------------------------------------------------------------------

    def parallel_of(self, name: str) -> int:
        return self.parallel.get(name, DEFAULT_PARALLEL)

    def set_parallel(self, name: str, parallel: int) -> QueueInfo:
        """SPEC 11 `queue/set`: a larger limit starts waiting processes at once; a smaller
        one stops none (those running finish)."""
        self.parallel[name] = parallel
        if self.on_queues is not None:
            self.on_queues(self.parallel)
        self._pump()
        return self.queue_info(name)

    def queue_info(self, name: str) -> QueueInfo:
        jobs = list(self._in_queue(name))
        running = sum(1 for j in jobs if j.proc.state in ACTIVE)
        queued = sum(1 for j in jobs if j.proc.state == "queued")
        return QueueInfo(name, self.parallel_of(name), running, queued)

    def queues(self) -> list[QueueInfo]:
        """SPEC 11 `queue/list`: every queue set or used, by name."""
        return [self.queue_info(name) for name in sorted(self.parallel)]

    def _in_queue(self, name: str) -> Iterator[Job]:
        return (j for j in self.jobs.values() if j.proc.setup.queue == name)

    # -- events -----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """The registry's listener: an exit may free a slot or settle an `after`."""
        if isinstance(event, ExitedEvent):
            self.jobs.pop(event.process_id, None)
            if self.jobs:
                self._soon()
        elif isinstance(event, RemovedEvent) and self.jobs:
            self.jobs.pop(event.process_id, None)
            self._soon()

    def _soon(self) -> None:
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Start, in order, every queued process that may start; end those that never will."""
        self._pump_handle = None
        queued = sorted(
            (j for j in self.jobs.values() if j.proc.state == "queued"),
            key=lambda j: j.state.order,
        )
        running: dict[str, int] = {}
        for job in queued:
            failure = self._settle(job)
            if failure is not None:
                job.proc.end_runs(failure)
                continue
            if job.pending:
                continue
            name = job.proc.setup.queue
            if name is not None:
                if name not in running:
                    running[name] = self.queue_info(name).running
                if running[name] >= self.parallel_of(name):
                    continue
                running[name] += 1
            self._begin(job)

    def _settle(self, job: Job) -> str | None:
        """Drop the `after` processes that exited 0; the failure of one that did not."""
        for dep in sorted(job.pending):
            ok, why = self._dependency(dep)
            if ok is True:
                job.pending.discard(dep)
            elif ok is False:
                return why
        return None

    def _dependency(self, dep: str) -> tuple[bool | None, str]:
        """(True: exited 0, False: failed, None: not yet) and, if failed, why."""
        proc = self._find(dep)
        if proc is None:
            return False, f"dependency {dep} was removed before it exited"
        if proc.state not in ENDED:
            return None, ""
        if proc.exit_code == 0 and proc.state != "lost":
            return True, ""
        if proc.exit_code is None:
            what = proc.store.failure or "it never started"
            return False, f"dependency {dep} failed: {what}"
        how = f"exit code {proc.exit_code}"
        if proc.signal is not None:
            how = f"killed by {proc.signal} ({how})"
        return False, f"dependency {dep} failed: {how}"

    # -- runs ---------------------------------------------------------------------

    def _begin(self, job: Job, restarts: int = 0) -> None:
        proc, state = job.proc, job.state
        state.run_started_at = now = int(time.time() * 1000)
        if restarts:  # its pid is known once spawned: the keeper's copy has none
            state.restarted.append([proc.next_seq, restarts, None, proc.exit_code, proc.signal])
        record = ProcessRecord(
            proc.setup, state.launch.log_path, proc.started_at if restarts else now,
            schedule=state,
        )  # fmt: skip
        try:
            child = self._spawn_run(state.launch, record, restarts)
        except ExecError as exc:  # its program or cwd went away meanwhile
            if restarts:
                state.restarted.pop()
            job.stopped = True
            proc.end_runs(exc.message)
            return
        if restarts:
            state.restarted[-1][2] = child.pid
        proc.begin_run(child, restarts)

    def _run_ended(self, proc: ManagedProcess) -> bool:
        """ManagedProcess.on_run_end: True if another run follows (after a delay)."""
        job = self.jobs.get(proc.id)
        policy = proc.setup.restart
        if job is None or job.stopped or policy is None:
            return False
        if policy["policy"] == "never" or proc.restarts >= policy["maxRestarts"]:
            return False
        if policy["policy"] == "on-failure" and proc.exit_code == 0 and not proc.timed_out:
            return False
        now = int(time.time() * 1000)
        ended = proc.exited_at or now  # an adopted run may have ended while no daemon ran
        if ended - proc.run_started_at >= RESET_AFTER_MS:
            job.state.delay_ms = policy["delayMs"]
        delay = job.state.delay_ms
        job.state.delay_ms = min(max(delay * 2, 1), MAX_DELAY_MS)
        proc.restart_at = ended + delay
        wait = max(0, ended + delay - now)
        job.restart_task = asyncio.get_running_loop().create_task(self._restart(job, wait))
        return True

    async def _restart(self, job: Job, delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        ending = job.proc.terminating  # a `timeoutMs` termination of the run before:
        if ending is not None:  # it must be over, or it would reach the next run (same marker)
            await asyncio.wait({ending})
        await asyncio.to_thread(_kill_leftovers, job.proc.setup.marker)
        job.restart_task = None
        if not job.stopped and job.proc.state == "restarting":
            self._begin(job, job.proc.restarts + 1)

    # -- stopping ---------------------------------------------------------------------

    def stop(self, process_id: str) -> bool:
        """A terminate or a kill: no further run. True if that ended the process (it
        was waiting: queued, or between runs); False if it is not ours or its run is
        still to be stopped (the caller does that, and its exit is the last)."""
        job = self.jobs.get(process_id)
        if job is None:
            return False
        job.stopped = True
        proc = job.proc
        if proc.state == "queued":
            proc.end_runs("terminated before it started")
            return True
        if proc.state == "restarting":
            if job.restart_task is not None:
                job.restart_task.cancel()
                job.restart_task = None
            proc.restart_at = None
            self._forget(asyncio.to_thread(_kill_leftovers, proc.setup.marker))
            proc.end_runs()
            return True
        return False

    def _forget(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def aclose(self) -> None:
        """Cancel every wait and await what is under way (the registry is closing)."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        tasks = [j.restart_task for j in self.jobs.values() if j.restart_task is not None]
        for task in tasks:
            task.cancel()
        tasks += list(self._cleanups)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.jobs.clear()


def _kill_leftovers(marker: str) -> None:
    """Kill what is left of a run (descendants that kept its streams), so runs never
    overlap and a stop leaves nothing behind (SPEC 4 `process/terminate`)."""
    with contextlib.suppress(OSError):
        kill_verified(marked_processes(marker), signal.SIGKILL)
