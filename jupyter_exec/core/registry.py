"""The process registry: start, look up, read, write, signal, terminate, remove.

asyncio only: no tornado, no traitlets, no IPython. Transports reach it through
`dispatch`; it publishes events to listeners and never knows who they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..wire.errors import (
    InvalidParamsError,
    InvalidRequestError,
    ProcessExistsError,
    TooManyProcessesError,
    UnknownProcessError,
)
from ..wire.events import Event, RemovedEvent, StartedEvent
from ..wire.models import ProcessInfo
from ..wire.protocol import ReadParams, StartParams
from ..wire.rules import FrontRules
from ..wire.sandbox import SandboxPolicy
from ..wire.schema import Chunk
from . import limits, sandbox
from .child import Child, ChildSpec, Keeper, build_env, resolve_program, spawn
from .confinement import resolve_cwd
from .launch import Launch
from .output import OutputStore
from .process import ManagedProcess
from .proctree import MARKER_VAR, kill_verified, marked_processes
from .record import ProcessRecord, ProcessSetup, ScheduleRecord
from .retention import Retention
from .scheduler import ENDED, Scheduler
from .usage import Sampler

#: A long-poll never waits longer than this, whatever `waitMs` asks.
MAX_WAIT_SECONDS = 3600.0
#: Descriptors a start needs (stdout, stderr, stdin, pidfd, log, a spare), and
#: how many stay free for sockets, /proc scans and log reads whatever runs.
FDS_PER_PROCESS = 6
FD_RESERVE = 64


@dataclass
class RegistryConfig:
    """Limits of SPEC 3 and 6 that are the registry's own (the daemon's settings).

    Whatever a front decides (root, confinement, `max_processes`, lifetime,
    base environment) comes with each start as `FrontRules` (SPEC 3).
    """

    retained_bytes_per_process: int = 1 << 20
    log_bytes_per_process: int = 1 << 30
    log_dir: Path | None = None
    exited_retention_seconds: float = 600.0
    #: Cap of one `process/read` response when the client gives no `maxBytes`,
    #: so a response stays far below `max_message_bytes` after base64.
    max_read_bytes: int = 4 << 20
    #: Logs go straight into `log_dir` and survive a crash of this process (the
    #: guardian kills the children but keeps the logs), for the next registry
    #: to list (the exec daemon, daemon/persist.py).
    durable_logs: bool = False
    #: The budgets of all processes together (retention.py; None: none). The
    #: defaults are the daemon settings' (config.py).
    retained_bytes_total: int | None = None
    logs_max_use: int | str | None = None
    logs_keep_free: int | str = 0


@dataclass
class ReadOutcome:
    chunks: list[Chunk]
    next_seq: int
    info: ProcessInfo
    matched: bool | None


class Registry:
    def __init__(self, config: RegistryConfig | None = None) -> None:
        self.config = config or RegistryConfig()
        self.id = uuid.uuid4().hex[:12]
        self._procs: dict[str, ManagedProcess] = {}
        #: process id -> name of the front it was started through (`max_processes`).
        self._fronts: dict[str, str] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._log_dir: Path | None = None
        self._guardian: object | None = None
        #: Keeps children alive across our death (the exec daemon's holder); no guardian then.
        self.keeper: Keeper | None = None
        self._closing = False
        self._fd_limit = raise_fd_limit()
        #: SPEC 11 ports and usage of every running tree (core/usage.py).
        self.sampler = Sampler(lambda: [p.tree for p in self.running() if p.tree is not None])
        c = self.config
        self.retention = Retention(c.retained_bytes_total, c.logs_max_use, c.logs_keep_free)
        #: SPEC 11 restarts, queues and `after` (core/scheduler.py).
        self.scheduler = Scheduler(self.find, self.spawn_run)
        self.add_listener(self.scheduler.on_event)

    # -- listeners ------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Event], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    # -- lookup ---------------------------------------------------------------

    def get(self, process_id: str) -> ManagedProcess:
        try:
            return self._procs[process_id]
        except KeyError:
            raise UnknownProcessError(process_id) from None

    def find(self, process_id: str) -> ManagedProcess | None:
        return self._procs.get(process_id)

    def list_processes(self) -> list[ProcessInfo]:
        return [p.info() for p in self._procs.values()]

    def running(self) -> list[ManagedProcess]:
        return [p for p in self._procs.values() if p.state == "running"]

    # -- start ----------------------------------------------------------------

    def start(
        self,
        params: StartParams,
        owner: str | None,
        rules: FrontRules,
        policies: Sequence[SandboxPolicy | None] = (),
        shown_argv: Sequence[str] | None = None,
    ) -> ProcessInfo:
        """Spawn a child synchronously: no event of it can be published before this returns.

        `rules` are the requesting front's (SPEC 3): its root and confinement for
        the cwd, its environment as the base of the child's, its `max_processes`
        counted over the processes started through it, its default lifetime. The
        child runs under every one of `policies` at once (the front's sandbox policies
        that apply and its own, `rpc.context.CallContext.sandbox_policies`; sandbox.py).
        `shown_argv` is what lists show when it is not what runs (a shell snapshot's replay).
        """
        if self._closing:
            raise InvalidRequestError("the server is shutting down")
        if params.process_id in self._procs:
            raise ProcessExistsError(params.process_id)
        ours = sum(1 for p in self.running() if self._fronts.get(p.id) == rules.name)
        if ours >= rules.max_processes and not params.scheduled:  # SPEC 11: those wait
            raise TooManyProcessesError(rules.max_processes, rules.name)
        self.scheduler.check(params)
        if self._near_fd_limit() and _open_fds() + FDS_PER_PROCESS + FD_RESERVE > self._fd_limit:
            raise InvalidRequestError(
                f"too many open files to start another process (limit {self._fd_limit}: "
                "raise `ulimit -n` or lower max_processes)"
            )
        cwd = resolve_cwd(params.cwd, rules)
        base = os.environ if rules.env is None else rules.env
        env = build_env(params.env, params.inherit_env, params.env_policy, base)
        if params.tty and "TERM" not in (params.env or {}):
            env["TERM"] = "xterm-256color"  # SPEC 4: not the server's own TERM
        marker = f"{self.id}/{uuid.uuid4().hex[:12]}"
        env[MARKER_VAR] = marker
        executable = resolve_program(params.argv[0], cwd, env)
        argv = list(params.argv)
        if params.arg0 is not None:
            argv[0] = params.arg0
        size = params.size
        log_dir = self._ensure_log_dir()
        conf = self.confinement(policies, cwd, rules, env, log_dir)
        box = None if conf is None else _box(conf, cwd, env)
        log_path = log_dir / f"{uuid.uuid4().hex}.log"
        launch = Launch(
            executable, argv, cwd, env, params.tty, params.pipe_stdin,
            rows=size.rows if size else 24, cols=size.cols if size else 80,
            limits=params.limits, conf=conf, log_path=log_path,
        )  # fmt: skip
        setup = ProcessSetup(
            process_id=params.process_id,
            argv=list(shown_argv or params.argv),
            cwd=cwd,
            tty=params.tty,
            pipe_stdin=params.pipe_stdin,
            label=params.label or _label_from_metadata(params.metadata),
            lifetime=params.lifetime or rules.default_lifetime,
            owner=owner,
            marker=marker,
            timeout_ms=params.timeout_ms,
            limits=params.limits,
            sandbox=box.conf if box else None,
            origin=params.origin.model_dump() if params.origin is not None else None,
            front=rules.name,
            restart=params.restart.wire() if params.restart is not None else None,
            queue=params.queue,
            after=list(params.after),
        )
        started_at = int(time.time() * 1000)
        schedule = self.scheduler.plan(setup.restart, launch) if params.scheduled else None
        if schedule is not None:
            schedule.run_started_at = started_at
        child = None
        if schedule is None or self.scheduler.starts_now(params):
            record = ProcessRecord(setup, log_path, started_at, schedule=schedule)
            child = self.spawn_run(launch, record, 0, box)
        elif box is not None:
            box.close()
        store = OutputStore(
            log_path,
            self.config.retained_bytes_per_process,
            self.config.log_bytes_per_process,
            splice=self.keeper is not None,
            budget=self.retention,
        )
        proc = ManagedProcess(
            setup, child, store, self._publish, self._schedule_removal, started_at
        )
        self._procs[proc.id] = proc
        self._fronts[proc.id] = rules.name
        self.sampler.wake()
        info = proc.info()
        # SPEC 1: the start response goes out before any notification of the process.
        # The response is queued in this same loop step; this runs in the next one,
        # still before any output callback of the child.
        asyncio.get_running_loop().call_soon(self._publish, StartedEvent(info))
        if schedule is not None:
            self.scheduler.add(proc, schedule)  # its turn is taken after that, too
        return info

    def spawn_run(
        self, launch: Launch, record: ProcessRecord, run: int, box: sandbox.Sandbox | None = None
    ) -> Child:
        """Spawn one run of a process (its first, a queued one's, a restart: SPEC 11);
        the keeper keeps `record` with it, and lets go of the run before (a restart).
        `box`: the sandbox already made ready for it (else one is, from `launch.conf`)."""
        env = dict(launch.env)
        if box is None and launch.conf is not None:
            box = _box(launch.conf, launch.cwd, env)
        confine = box.preexec if box is not None else None
        spec = ChildSpec(
            launch.executable, launch.argv, launch.cwd, env, launch.tty, launch.pipe_stdin,
            rows=launch.rows, cols=launch.cols,
            preexec=sandbox.preexec_chain(limits.preexec(launch.limits), confine),
            keep_fds=box.keep_fds if box else (),
        )  # fmt: skip
        meta = None
        if self.keeper is not None:  # what the keeper keeps (core/record.py)
            meta = record.to_record()
            if run:  # the run before ended: the record of this one replaces it
                self.keeper.release(launch.key(run - 1))
        try:
            return spawn(spec, self.keeper, launch.key(run), meta)
        except (OSError, subprocess.SubprocessError) as exc:
            why = (box and box.failure()) or getattr(exc, "strerror", None) or str(exc)
            raise InvalidParamsError(f"cannot start {record.setup.argv[0]!r}: {why}") from None
        finally:
            if box is not None:
                box.close()

    def sandbox_for(
        self,
        requested: Sequence[SandboxPolicy | None],
        cwd: str,
        env: dict[str, str],
        rules: FrontRules,
    ) -> sandbox.Sandbox | None:
        """The sandbox a start in `cwd` runs in (None: none); `env` loses what would lead
        back to us. Also for a helper child run before a start (a shell snapshot's
        capture, core/shell_snapshot.py); the caller closes it."""
        conf = self.confinement(requested, cwd, rules, env, self._ensure_log_dir())
        return None if conf is None else _box(conf, cwd, env)

    def confinement(
        self,
        requested: Sequence[SandboxPolicy | None],
        cwd: str,
        rules: FrontRules,
        env: Mapping[str, str],
        log_dir: Path | None = None,
    ) -> sandbox.Confinement | None:
        """What `requested` policies allow, all at once, for a process in `cwd` or an
        ``fs/*`` call (None: no sandbox): the one place both take it from, so they agree.

        Jupyter's and IPython's dirs (ours and the front's) are protected; the runtime
        dir and the output logs are hidden.
        """
        policies = [p for p in requested if p is not None]
        conf = sandbox.confine(policies, cwd, rules.root_dir, env)
        if conf is None:
            return None
        conf = sandbox.prepare_protected(conf, None, rules.env)  # ours and the front's
        hidden = sandbox.hidden_dirs([log_dir or self._log_dir, self.config.log_dir])
        return dataclasses.replace(conf, hidden=tuple(hidden))

    def _near_fd_limit(self) -> bool:
        """Whether counting descriptors is worth its cost (a /proc listing) on this start."""
        ours = len(self._procs) * FDS_PER_PROCESS
        return self._fd_limit < 4096 or ours > self._fd_limit // 4

    def _ensure_log_dir(self) -> Path:
        if self._log_dir is None:
            parent = self.config.log_dir
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.config.durable_logs and parent is not None:
                self._log_dir = parent
            else:
                self._log_dir = Path(tempfile.mkdtemp(prefix="jupyter-exec-", dir=parent))
            if self.keeper is None:
                from .guardian import start_guardian

                self._guardian = start_guardian(self.id, self._log_dir, self.config.durable_logs)
        return self._log_dir

    def adopt_child(
        self,
        setup: ProcessSetup,
        child: Child,
        store: OutputStore,
        started_at: int,
        front: str,
        schedule: ScheduleRecord | None = None,
    ) -> ManagedProcess:
        """A running process a previous registry started through `front`, its child
        now the keeper's; `schedule`: the scheduler's, who goes on with it (SPEC 11)."""
        store.join(self.retention)
        proc = ManagedProcess(
            setup, child, store, self._publish, self._schedule_removal, started_at
        )
        self._procs[proc.id] = proc
        self._fronts[proc.id] = front
        self.sampler.wake()
        if schedule is not None:  # before its exit, if it has one, is taken in
            proc.resume_runs(schedule)
            self.scheduler.add(proc, schedule)
        return proc

    def adopt_waiting(self, record: ProcessRecord, store: OutputStore) -> ManagedProcess:
        """A previous registry's process that had not started (`queued`, SPEC 11): it
        waits again in its place."""
        assert record.schedule is not None
        store.join(self.retention)
        proc = ManagedProcess(
            record.setup, None, store, self._publish, self._schedule_removal, record.started_at
        )
        self._procs[proc.id] = proc
        self._fronts[proc.id] = record.setup.front
        self.scheduler.add(proc, record.schedule)
        return proc

    def adopt(self, proc: ManagedProcess) -> None:
        """Take in a process a previous registry left (the exec daemon's successor):
        a running one as if we had started it, a finished one (daemon/persist.py)
        kept for what remains of `exited_retention_seconds` since it exited."""
        self._procs[proc.id] = proc
        proc.store.join(self.retention)
        if proc.closed.is_set():
            self._schedule_removal(proc)

    # -- read -----------------------------------------------------------------

    async def read(self, params: ReadParams) -> ReadOutcome:
        """SPEC 4 `process/read`: chunks after a cursor, long-poll, pattern, idle wait.

        With `untilIdleMs` the read does not return at the first chunk: it
        waits (within `waitMs`) for a first chunk after `afterSeq`, then returns
        once no further chunk came for `untilIdleMs`; chunks already there when
        the call came count as arriving at the call. That answers a REPL: the
        reply to a line may be slow to start, then comes in bursts.
        """
        proc = self.get(params.process_id)
        pattern = params.compiled_pattern()
        budget = self.config.max_read_bytes
        if params.max_bytes is not None:
            budget = min(params.max_bytes, budget)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(params.wait_ms / 1000, MAX_WAIT_SECONDS)
        idle = params.until_idle_ms / 1000 if params.until_idle_ms is not None else None
        last_seq, quiet_at = params.after_seq, deadline
        while True:
            changed = proc.changed()
            chunks = proc.store.read(params.after_seq, budget)
            matched: bool | None = None
            if pattern is not None:
                matched, chunks = _match(pattern, chunks)
            done = bool(chunks) if pattern is None else bool(matched)
            if idle is not None and chunks and not matched:
                if chunks[-1].seq != last_seq:  # new output: the idle clock restarts
                    last_seq, quiet_at = chunks[-1].seq, loop.time() + idle
                full = chunks[-1].seq < proc.next_seq - 1 and proc.state == "running"
                done = full or loop.time() >= quiet_at
            remaining = min(deadline, quiet_at) - loop.time()
            if done or proc.state in ENDED or remaining <= 0:
                next_seq = chunks[-1].seq + 1 if chunks else proc.next_seq
                return ReadOutcome(chunks, next_seq, proc.info(), matched)
            # asyncio.TimeoutError is not the builtin TimeoutError before Python 3.11.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # -- stdin, signals, resize -------------------------------------------------

    def write(self, process_id: str, data: bytes, eof: bool, write_id: str | int | None) -> str:
        proc = self.find(process_id)
        if proc is None:
            return "unknownProcess"
        return proc.write(data, eof, write_id)

    def signal(self, process_id: str, signum: int) -> None:
        proc = self.get(process_id)
        if signum in (signal.SIGKILL, signal.SIGTERM) and self.scheduler.stop(process_id):
            return  # it was waiting: now it has ended (SPEC 11)
        proc.send_signal(signum)

    def resize(self, process_id: str, rows: int, cols: int) -> None:
        proc = self.get(process_id)
        if not proc.setup.tty:
            raise InvalidRequestError(f"process {process_id} is not a tty process")
        proc.resize(rows, cols)

    # -- terminate and remove ---------------------------------------------------

    def terminate(self, process_id: str, grace_seconds: float) -> bool:
        proc = self.find(process_id)
        if proc is None or self.scheduler.stop(process_id):
            return False  # unknown, or it was waiting and has now ended, never run again
        if proc.state != "running":
            return False
        proc.terminate(grace_seconds)
        return True

    def terminate_owned_by(self, owner: str) -> None:
        """End every `lifetime: connection` process of a session that is gone (SPEC 3)."""
        for proc in list(self._procs.values()):
            if proc.setup.lifetime == "connection" and proc.setup.owner == owner:
                self.terminate(proc.id, 3.0)

    async def remove(self, process_id: str, grace_seconds: float = 3.0) -> None:
        """Terminate if running, wait for close, then forget it (REST DELETE)."""
        proc = self.get(process_id)
        self.terminate(process_id, grace_seconds)
        with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError: see `read`
            await asyncio.wait_for(proc.closed.wait(), grace_seconds + 5)
        self._remove(process_id)

    def _schedule_removal(self, proc: ManagedProcess) -> None:
        self.retention.finish(proc.store)  # its output goes first when room is needed
        loop = asyncio.get_running_loop()
        delay = self.config.exited_retention_seconds
        if proc.exited_at is not None:  # what is left of it (one adopted after a restart)
            delay = max(0.0, delay - (time.time() * 1000 - proc.exited_at) / 1000)
        self._removals[proc.id] = loop.call_later(delay, self._remove, proc.id)

    def _remove(self, process_id: str) -> None:
        handle = self._removals.pop(process_id, None)
        if handle is not None:
            handle.cancel()
        proc = self._procs.pop(process_id, None)
        self._fronts.pop(process_id, None)
        if proc is not None:
            proc.discard()
            self._publish(RemovedEvent(process_id))

    async def aclose(self, grace_seconds: float = 2.0) -> None:
        """Terminate and await every process, kill any stray descendant, delete logs."""
        self._closing = True
        await self.sampler.aclose()
        await self.scheduler.aclose()
        running = self.running()
        for proc in running:
            proc.terminate(grace_seconds)
        # Every termination still under way, also of processes that exited meanwhile
        # (a `timeoutMs` one): each is a task this registry owns.
        tasks = [p.terminating for p in self._procs.values() if p.terminating is not None]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=grace_seconds + 5)
        finally:
            with contextlib.suppress(OSError):  # out of descriptors: the guardian will
                kill_verified(marked_processes(f"{self.id}/", prefix=True), signal.SIGKILL)
                for proc in running:  # adopted ones carry an earlier registry's marker
                    if not proc.setup.marker.startswith(f"{self.id}/"):
                        kill_verified(marked_processes(proc.setup.marker), signal.SIGKILL)
            for handle in self._removals.values():
                handle.cancel()
            self._removals.clear()
            for proc in self._procs.values():
                proc.discard()
            self._procs.clear()
            if self._log_dir is not None:
                shutil.rmtree(self._log_dir, ignore_errors=True)
            from .guardian import stop_guardian

            stop_guardian(self._guardian)


def _box(conf: sandbox.Confinement, cwd: str, env: dict[str, str]) -> sandbox.Sandbox:
    """`conf` made ready for a child in `cwd`; `env` loses what would lead back to us."""
    sandbox.check_available()
    box = sandbox.Sandbox(conf, cwd)
    sandbox.scrub_env(env)
    if box.tmp is not None:
        env.update(TMPDIR=box.tmp, TMP=box.tmp, TEMP=box.tmp)
    return box


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit and return the soft limit in force.

    Many systems start processes at 1024 descriptors; each child costs about five
    (pipes, pidfd, log), so about 190 processes would exhaust it (bench/load.py).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # no /proc: no check
        return 0
    except OSError:  # no descriptor left to list it with
        return 1 << 30


def _label_from_metadata(metadata: dict[str, object] | None) -> str | None:
    if metadata and isinstance(metadata.get("toolCallId"), str):
        return f"codex: {metadata['toolCallId']}"
    return None


def _match(pattern: object, chunks: list[Chunk]) -> tuple[bool, list[Chunk]]:
    """Match across chunk boundaries; keep chunks up to the one completing the match."""
    import codecs
    import re

    assert isinstance(pattern, re.Pattern)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text_parts: list[str] = []
    ends: list[int] = []
    total = 0
    for chunk in chunks:
        part = decoder.decode(chunk.data)
        text_parts.append(part)
        total += len(part)
        ends.append(total)
    found = pattern.search("".join(text_parts))
    if found is None:
        return False, chunks
    for i, end in enumerate(ends):
        if end >= found.end():
            return True, chunks[: i + 1]
    return True, chunks
