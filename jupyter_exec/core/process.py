"""One managed process: seq numbering, output capture, stdin, exit and close, termination.

Ordering (SPEC 5) follows from one rule: every event gets its seq and is
published synchronously on the event loop, and `exited` is published only
after the child's pipes/PTY have been drained (or reached end of file), so
output the child wrote before it died always has a lower seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable

from ..wire.events import (
    ClosedEvent,
    Event,
    ExitedEvent,
    OutputEvent,
    RestartedEvent,
    SeqEvent,
    StartedEvent,
)
from ..wire.models import ProcessInfo, ProcessState, exit_status
from . import limits as _limits
from .child import Child
from .output import OutputStore, pipe_bytes
from .proctree import ProcessRef, descendant_processes, kill_verified, marked_processes
from .record import ExitRecord, ProcessRecord, ProcessSetup, ScheduleRecord
from .sandbox import likely_denied
from .usage import TreeUsage

#: Largest `process/output` chunk. Measured with bench/run.py: 32 KiB chunks
#: reach clients faster than 8-16 KiB (per-message cost) or 64-128 KiB (a
#: client parses big JSON lines slower, and a tty echo waits behind a bigger
#: chunk of a flood).
CHUNK_BYTES = 32 * 1024
#: Largest read from a child: under a flood one read (one wake-up, one log
#: write) yields several chunks, which costs less CPU per byte.
READ_SIZE = 4 * CHUNK_BYTES
#: After the child is reaped, how long to wait for its streams to reach EOF
#: before publishing `exited` (a PTY delivers the last bytes asynchronously).
EXIT_SETTLE_SECONDS = 0.05
_DRAIN_LIMIT = 4 << 20
#: Grace of a `timeoutMs` termination, as `process/terminate`'s default.
TIMEOUT_GRACE_SECONDS = 3.0


#: How much of the end of a sandboxed process's output `sandboxDenied` looks at.
DENIAL_TAIL_CHUNKS = 4


class ManagedProcess:
    #: Its tree's ports and usage, kept by the registry's sampler (core/usage.py);
    #: None for a process recovered from a record, which has no tree any more.
    tree: TreeUsage | None = None
    #: SPEC 11: asked when a run ends whether another run follows (core/scheduler.py);
    #: True: the process goes `restarting` instead of `exited`.
    on_run_end: Callable[[ManagedProcess], bool] | None = None
    _child: Child | None = None
    #: SPEC 11: `process/restarted` events so far, in seq order (replayed like `exited`).
    restarted_events: tuple[RestartedEvent, ...] = ()
    #: SPEC 11: runs restarted so far, and while `restarting` when the next begins (ms).
    restarts = 0
    restart_at: int | None = None
    #: SPEC 11: where the scheduler stands with it, kept in its record (core/record.py).
    schedule: ScheduleRecord | None = None

    def __init__(
        self,
        setup: ProcessSetup,
        child: Child | None,
        store: OutputStore,
        publish: Callable[[Event], None],
        on_closed: Callable[[ManagedProcess], None],
        started_at: int | None = None,
    ) -> None:
        """`started_at`: a process adopted from a previous daemon (its seqs go on
        after its log's last record; its `timeoutMs` counts from then). No `child`:
        a process that waits for its queue or its `after` processes (SPEC 11,
        `queued`) until `begin_run`."""
        self.setup = setup
        self.id = setup.process_id
        self.store = store
        self._publish = publish
        self._on_closed = on_closed
        self._loop = asyncio.get_running_loop()
        self.state: ProcessState = "running" if child is not None else "queued"
        self.started_at = _now_ms() if started_at is None else started_at
        #: When the current run started (ms): its `timeoutMs` counts from then.
        self.run_started_at = self.started_at

        self.exited_at: int | None = None
        self.exit_code: int | None = None
        self.signal: str | None = None
        self._last_seq = store.last_seq
        self._changed = asyncio.Event()
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self._exit_status: tuple[int, str | None] = (0, None)
        self._settle: asyncio.TimerHandle | None = None
        self._stdin_buffer = bytearray()
        self._eof_requested = False
        self._write_ids: set[str | int] = set()
        self.terminating: asyncio.Task[None] | None = None
        #: Kept so a late subscriber gets them replayed in seq order.
        self.exited_event: ExitedEvent | None = None
        self.closed_event: ClosedEvent | None = None
        self.timed_out = False
        self.limit_exceeded: str | None = None
        self._timeout: asyncio.TimerHandle | None = None
        if child is not None:
            self._attach(child)

    def _attach(self, child: Child) -> None:
        """Follow `child` as the current run: its output, its exit, its `timeoutMs`."""
        self._child = child
        if child.reaped:  # a previous daemon's, ended (`finished`): nothing to watch
            self.tree = None
            return
        self.tree = TreeUsage(child.ref)
        if self.setup.timeout_ms is not None:
            left = self.setup.timeout_ms - (_now_ms() - self.run_started_at)
            self._timeout = self._loop.call_later(max(0, left) / 1000, self._on_timeout)
        for fd in child.outputs:
            self._loop.add_reader(fd, self._on_readable, fd)
        self._loop.add_reader(child.pidfd, self._on_pidfd)

    @classmethod
    def finished(cls, record: ProcessRecord, store: OutputStore) -> ManagedProcess:
        """A previous daemon's process that runs no more (daemon/persist.py): `closed`
        with the exit its record holds, or `lost` if none was recorded (nothing kept
        it to the end). Its output stays readable from `store`, its seqs go on after
        the log's last, and it publishes nothing: `exited` and `closed` are there to
        be replayed (SPEC 5), so a follower ends."""
        s = record.setup
        child = Child.gone(record.pid or 0, s.tty, record.pid_start_time)
        proc = cls(s, child, store, _unheard, _unheard, record.started_at)
        if record.schedule is not None:  # its restarts, replayed before its end
            proc.resume_runs(record.schedule)
        end = record.exit
        if end is None:
            proc.state = "lost"
        else:
            proc.state = "closed"
            proc.exit_code, proc.signal, proc.exited_at = end.exit_code, end.signal, end.exited_at
            proc.timed_out, proc.limit_exceeded = end.timed_out, end.limit_exceeded
            proc.exited_event = ExitedEvent(
                proc.id,
                proc._take_seq(),
                end.exit_code,
                end.signal,
                timed_out=end.timed_out,
                limit_exceeded=end.limit_exceeded,
                sandbox_denied=end.sandbox_denied,
            )
        proc.closed_event = ClosedEvent(proc.id, proc._take_seq())
        proc.exited.set()
        proc.closed.set()
        return proc

    def record(self) -> ProcessRecord | None:
        """What outlives this daemon (core/record.py); None without a log to read."""
        log = self.store.log_path
        if log is None:
            return None
        start, end = -1 if self._child is None else self._child.ref.start, self.exited_event
        return ProcessRecord(
            self.setup,
            log,
            self.started_at,
            pid=self.pid,
            pid_start_time=start if start >= 0 else None,
            exit=None
            if end is None
            else ExitRecord(
                end.exit_code,
                end.signal,
                self.exited_at,
                end.timed_out,
                end.limit_exceeded,
                end.sandbox_denied,
            ),
            schedule=self.schedule,
        )

    # -- runs (SPEC 11) --------------------------------------------------------

    def begin_run(self, child: Child, restarts: int = 0) -> None:
        """Start the next run on `child`: a queued process's first (watchers are told
        `process/started` again, now with its pid), or a restart (`process/restarted`,
        with the previous run's exit, in the seq stream before the new run's output)."""
        previous = (self.exit_code, self.signal)
        self.state = "running"
        self.run_started_at = _now_ms()
        self.exit_code = self.signal = self.exited_at = None
        self.timed_out, self.limit_exceeded = False, None
        self._exit_status = (0, None)
        self._stdin_buffer.clear()
        self._eof_requested = False
        self.terminating = None
        self.restarts, self.restart_at = restarts, None
        self._attach(child)
        if restarts:
            event = RestartedEvent(self.id, self._take_seq(), restarts, child.pid, *previous)
            self.restarted_events = (*self.restarted_events, event)
            self._event_published(event)
        else:
            self.started_at = self.run_started_at
            self._event_published(StartedEvent(self.info()))

    def resume_runs(self, schedule: ScheduleRecord) -> None:
        """A previous daemon's scheduled process, adopted: its restarts are replayed as
        before and its seqs go on after the last (the log holds only output)."""
        self.schedule = schedule
        pid = self.pid
        self.restarted_events = tuple(
            RestartedEvent(self.id, seq, restarts, run_pid or pid or 0, code, name)
            for seq, restarts, run_pid, code, name in schedule.restarted
        )
        if self.restarted_events:
            last = self.restarted_events[-1]
            self.restarts, self._last_seq = last.restarts, max(self._last_seq, last.seq)
        if schedule.run_started_at is not None:
            self.run_started_at = schedule.run_started_at

    def end_runs(self, failure: str | None = None) -> None:
        """End a process that waits (queued, or between two runs) without another run:
        `exited` (the last run's exit; exitCode null if it never ran) then `closed`."""
        if self.state not in ("queued", "restarting"):
            return
        if failure is not None:
            self.store.failure = failure
        if self.state == "queued":
            self.exit_code = self.signal = None
        self.exited_at = self.exited_at or _now_ms()
        self.state = "exited"
        self.exited_event = ExitedEvent(self.id, self._take_seq(), self.exit_code, self.signal)
        self._event_published(self.exited_event)
        self.exited.set()
        self._publish_closed()

    def _end_run(self) -> None:
        """This run is over and another follows: let go of its child, streams and all
        (descendants that kept them open are the scheduler's to stop)."""
        child = self.child
        for fd in list(child.outputs):
            self._loop.remove_reader(fd)
        if child.stdin_fd is not None:
            self._loop.remove_writer(child.stdin_fd)
        child.close()
        self.state = "restarting"

    # -- state -------------------------------------------------------------

    @property
    def child(self) -> Child:
        """The current run's child (a queued process has none yet)."""
        assert self._child is not None, f"process {self.id} has not started"
        return self._child

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    @property
    def next_seq(self) -> int:
        return self._last_seq + 1

    def info(self) -> ProcessInfo:
        s = self.setup
        return ProcessInfo(
            process_id=s.process_id,
            argv=s.argv,
            cwd=s.cwd,
            tty=s.tty,
            pid=self.pid,
            label=s.label,
            lifetime=s.lifetime,
            state=self.state,
            started_at=self.started_at,
            exited_at=self.exited_at,
            exit_code=self.exit_code,
            signal=self.signal,
            next_seq=self.next_seq,
            first_seq=self.store.first_seq,
            output_bytes=self.store.total_bytes,
            failure=self.store.failure,
            pipe_stdin=s.pipe_stdin,
            timeout_ms=s.timeout_ms,
            timed_out=self.timed_out,
            limits=_limits.wire(s.limits),
            limit_exceeded=self.limit_exceeded,
            sandbox=s.sandbox.wire() if s.sandbox is not None else None,
            ports=list(self.tree.ports) if self.tree is not None else [],
            usage=self.tree.usage() if self.tree is not None else None,
            origin=s.origin,
            restart_policy=s.restart,
            restarts=self.restarts,
            queue=s.queue,
            after=list(s.after),
            restart_at=self.restart_at,
        )

    def replay(self, after_seq: int) -> list[SeqEvent]:
        """Retained events after `after_seq` in seq order: output, then exited/closed."""
        events: list[SeqEvent] = [
            OutputEvent(self.id, c.seq, c.stream, c.data)
            for c in self.store.read(after_seq, self.store.retained_bytes)
        ]
        for end in self.marks():
            if end.seq > after_seq:
                events.append(end)
        events.sort(key=lambda e: e.seq)
        return events

    def marks(self) -> list[SeqEvent]:
        """The seq events that are not output, in seq order: restarts, exited, closed."""
        ends = [e for e in (self.exited_event, self.closed_event) if e is not None]
        return [*self.restarted_events, *ends]

    @property
    def stdin_pending(self) -> bool:
        """Bytes `process/write` accepted that the child's stdin has not taken yet."""
        return bool(self._stdin_buffer)

    def changed(self) -> asyncio.Event:
        """An event set at the next seq-numbered event (for long-poll reads)."""
        return self._changed

    def _take_seq(self) -> int:
        self._last_seq += 1
        return self._last_seq

    def _event_published(self, event: Event) -> None:
        self._publish(event)
        self._changed.set()
        self._changed = asyncio.Event()

    # -- output --------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        self._read_once(fd)

    def _read_once(self, fd: int) -> int:
        """Take one run of output; returns its size, 0 at EOF, -1 when nothing is ready.

        A store that splices takes the bytes pipe -> log in the kernel, a PTY's
        through its staging pipe (output.py); otherwise, or when the log cannot
        take them, they are read.
        """
        pipe = fd
        if self.child.staging is not None:
            pipe = self.child.staging[0]
            if not pipe_bytes(pipe):
                moved = _stage(fd, self.child.staging[1])
                if moved <= 0:
                    if moved == 0:
                        self._stream_eof(fd)
                    return moved
        stream = self.child.outputs[fd]
        first = self._last_seq + 1
        pieces = None
        if self.store.splices and (size := min(pipe_bytes(pipe), READ_SIZE)):
            pieces = self.store.splice_run(first, stream, pipe, size, CHUNK_BYTES)
        if pieces is None:
            try:
                data = os.read(pipe, READ_SIZE)
            except BlockingIOError:
                return -1
            except OSError:  # EIO: the PTY's last slave closed
                data = b""
            if not data:
                self._stream_eof(fd)
                return 0
            pieces = _split(data)
            self.store.append_run(first, stream, pieces)
        self._last_seq += len(pieces)
        for seq, piece in enumerate(pieces, first):
            self._event_published(OutputEvent(self.id, seq, stream, piece))
        return sum(map(len, pieces))

    def _drain(self) -> None:
        for fd in list(self.child.outputs):
            budget = _DRAIN_LIMIT
            while budget > 0:
                n = self._read_once(fd)
                if n <= 0:
                    break
                budget -= n

    def _stream_eof(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        self.child.close_output(fd)
        if not self.child.reaped or self.child.outputs:
            return
        if self.state == "running":
            self._publish_exit()
        elif self.state == "exited":
            self._publish_closed()

    # -- exit and close --------------------------------------------------------

    def _on_pidfd(self) -> None:
        status = self.child.reap()
        if status is None:
            return
        self._loop.remove_reader(self.child.pidfd)
        self._exit_status = exit_status(status)
        self._drain()
        if self.state == "running":
            if self.child.outputs:
                self._settle = self._loop.call_later(EXIT_SETTLE_SECONDS, self._settled)
            else:
                self._publish_exit()

    def _settled(self) -> None:
        self._drain()
        if self.state == "running":
            self._publish_exit()

    def _publish_exit(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
        if self._timeout is not None:
            self._timeout.cancel()
        self.exit_code, self.signal = self._exit_status
        self.exited_at = self.child.exited_at or _now_ms()
        if self.child.exit_unknown:
            self.store.failure = "exit status unknown: the exec daemon died as it reaped it"
        self.state = "exited"
        if self.tree is not None:
            self.tree.finish(self.child.cpu_seconds)
        signum = self.exit_code - 128 if self.signal is not None else None
        self.limit_exceeded = _limits.exceeded(self.setup.limits, signum, self.child.cpu_seconds)
        self._stdin_buffer.clear()
        self._stop_stdin()
        if self.on_run_end is not None and self.on_run_end(self):
            self._end_run()
            return
        self.exited_event = ExitedEvent(
            self.id,
            self._take_seq(),
            self.exit_code,
            self.signal,
            timed_out=self.timed_out,
            limit_exceeded=self.limit_exceeded,
            sandbox_denied=self._sandbox_denied(),
        )
        self._event_published(self.exited_event)
        self.exited.set()
        if not self.child.outputs:
            self._publish_closed()

    def _publish_closed(self) -> None:
        self.state = "closed"
        if self._child is not None:
            self._child.close()
        self.closed_event = ClosedEvent(self.id, self._take_seq())
        self._event_published(self.closed_event)
        self.closed.set()
        self._on_closed(self)

    # -- stdin ---------------------------------------------------------------

    def write(self, data: bytes, eof: bool, write_id: str | int | None) -> str:
        """Queue bytes for the child's stdin (SPEC 4 `process/write` statuses)."""
        if self.state in ("queued", "restarting"):
            return "starting"  # no stdin to take it yet (SPEC 11)
        if self.state != "running" or self.child.stdin_fd is None or self._eof_requested:
            return "stdinClosed"
        if write_id is not None:
            if write_id in self._write_ids:
                return "accepted"
            self._write_ids.add(write_id)
        self._stdin_buffer += data
        if eof:
            if self.child.tty:
                self._stdin_buffer += b"\x04"
            else:
                self._eof_requested = True
        self._flush_stdin()
        return "accepted"

    def _flush_stdin(self) -> None:
        fd = self.child.stdin_fd
        if fd is None:
            return
        while self._stdin_buffer:
            try:
                n = os.write(fd, self._stdin_buffer)
            except BlockingIOError:
                self._loop.add_writer(fd, self._flush_stdin)
                return
            except OSError:  # EPIPE: the child closed its stdin
                self._stdin_buffer.clear()
                self._stop_stdin()
                return
            del self._stdin_buffer[:n]
        self._loop.remove_writer(fd)
        if self._eof_requested:
            self._stop_stdin()

    def _stop_stdin(self) -> None:
        fd = self.child.stdin_fd
        if fd is not None:
            self._loop.remove_writer(fd)
            if not self.child.tty:
                self.child.close_stdin()

    # -- signals and termination ----------------------------------------------

    def _on_timeout(self) -> None:
        """`timeoutMs` passed: terminate as `process/terminate` does; the exit says why."""
        self._timeout = None
        if self.state == "running" and self.terminating is None:
            self.timed_out = True
            self.terminate(TIMEOUT_GRACE_SECONDS)

    def send_signal(self, signum: int) -> None:
        if self.state == "running":
            self.child.signal_group(signum)

    def resize(self, rows: int, cols: int) -> None:
        if self.state == "running":
            self.child.resize(rows, cols)

    def terminate(self, grace_seconds: float) -> None:
        """SIGTERM now, SIGKILL to the whole tree after the grace period (SPEC 4)."""
        if self.terminating is not None:
            return
        self.child.signal_group(signal.SIGTERM)
        self.terminating = asyncio.create_task(self._escalate(grace_seconds))

    def _tree(self) -> set[ProcessRef] | None:
        """The descendants still alive, each with its identity; None if /proc cannot be read."""
        try:
            found = marked_processes(self.setup.marker)
            if not self.child.reaped:
                found |= descendant_processes(self.child.ref)
        except OSError:  # out of descriptors
            return None
        return found

    def _kill_tree(self, signum: int) -> bool:
        """Signal every verified descendant (in a worker thread); False once none is left."""
        found = self._tree()
        if found is None:
            return True  # unknown: keep escalating
        kill_verified(found, signum)
        return bool(found)

    async def _escalate(self, grace_seconds: float) -> None:
        await asyncio.to_thread(self._kill_tree, signal.SIGTERM)
        deadline = self._loop.time() + grace_seconds
        pause = 0.01
        while self._loop.time() < deadline:
            # asyncio.TimeoutError is not the builtin TimeoutError before Python 3.11.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.exited.wait(), min(pause, deadline - self._loop.time()))
            if self.child.reaped and not await asyncio.to_thread(self._tree):
                return
            pause = min(pause * 2, 0.1)
        for _ in range(200):  # a fork bomb may need several rounds
            self.child.signal_group(signal.SIGKILL)  # a no-op once reaped
            left = await asyncio.to_thread(self._kill_tree, signal.SIGKILL)
            if not left and self.child.reaped:
                return
            await asyncio.sleep(0.01)

    def _sandbox_denied(self) -> bool:
        """SPEC 5 `sandboxDenied`, as Codex's server decides it: from the end of the output."""
        if self.setup.sandbox is None or self.exit_code is None:
            return False
        after = max(self.store.first_seq, self._last_seq - DENIAL_TAIL_CHUNKS + 1) - 1
        tail = b"".join(c.data for c in self.store.read(after, DENIAL_TAIL_CHUNKS * CHUNK_BYTES))
        return likely_denied(self.exit_code, tail)

    def discard(self) -> None:
        """Release the log (the registry removed this process)."""
        self.store.close(remove=True)


def _stage(pty: int, staging: int) -> int:
    """Move what the PTY holds into its (empty) staging pipe: bytes moved, 0 at EOF, -1 none.

    `splice` from a PTY master works on Linux 6.x; where it is refused, the
    bytes are read and written on, and for that moment they are ours alone.
    """
    size = min(pipe_bytes(pty), 1 << 16)  # the staging pipe holds 64 KiB and is empty
    try:
        if size:
            try:
                return os.splice(pty, staging, size)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        # Splice refused, or bytes came after FIONREAD said none: read them on.
        data = os.read(pty, size or 4096)
        return os.write(staging, data) if data else 0
    except BlockingIOError:
        return -1
    except OSError:  # EIO: the PTY's last slave closed
        return 0


def _split(data: bytes) -> list[bytes]:
    """One read as chunks of at most `CHUNK_BYTES`."""
    if len(data) <= CHUNK_BYTES:
        return [data]
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def _unheard(_: object) -> None:
    """Where a finished process would publish: it never does."""


def _now_ms() -> int:
    return int(time.time() * 1000)
