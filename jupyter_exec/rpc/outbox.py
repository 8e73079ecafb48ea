"""One connection's outgoing side: control messages, then cursors over process output.

SPEC 5: delivery is lossless for every subscriber. A subscription is a cursor
(the last seq sent) into the process's `OutputStore`, not a queue of
notifications: the writer loop pulls the next chunks after each cursor, from
memory inline or from the log: inline if the page cache holds that part
(a read that cannot wait), else in a thread, so a lagging client never
blocks the event loop. It encodes them and awaits the transport's `write`, which returns
when the transport has room (its drain). So a slow client lags but skips
nothing, and what it has not taken yet costs the server at most
`READ_AHEAD_BYTES` of chunks read ahead from logs and the message in hand,
not a queue that grows with its lag; the child and other clients never wait
for it.

Order of what goes out: control messages first (responses, and watchers'
`process/started`/`removed`/..., which are small and few), then the processes
with something pending in turn, at most `TURN_BYTES` of one before the next
(a tty echo next to a flood goes out after one chunk of the flood). Within a
process, `exited` and `closed` (kept by the process, in its seq sequence) go
out after all output with a lower seq. Only what retention dropped
(below `store.first_seq`, past the log) is skipped; the next notification's
seq shows the jump.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core.output import OutputStore
from ..core.process import ManagedProcess
from ..wire.codec import Framing, encode_event, encode_output, frame
from ..wire.events import SeqEvent
from ..wire.schema import Chunk

log = logging.getLogger(__name__)

#: One encoded JSON-RPC message (UTF-8 JSON), framed by the transport's
#: `Framing` if the connection has one. The transport's coroutine returns once
#: the message is handed on and the transport has room for more (a drain).
Write = Callable[[bytes], Awaitable[None]]
#: Most chunk bytes one pull takes from one process's memory: the round-robin
#: quantum (about one chunk, so a tty echo waits behind one chunk of a flood).
TURN_BYTES = 32 * 1024
#: Chunks one connection reads ahead from logs (a read or a thread hop costs
#: more than a chunk), shared among the subscriptions reading their logs; they
#: still go out one chunk per turn.
READ_AHEAD_BYTES = 1 << 20
#: The writer yields to the event loop after this many bytes written without
#: the transport making it wait, so a client that keeps up cannot starve it.
YIELD_BYTES = 256 * 1024
#: How long closing waits for the last control messages to be written.
CLOSE_FLUSH_SECONDS = 2.0


class Outbox:
    """Writes one connection's messages; owns its writer task (stopped by `aclose`)."""

    def __init__(
        self,
        write: Write,
        find: Callable[[str], ManagedProcess | None],
        control_limit: int,
        framing: Framing | None = None,
    ) -> None:
        self._write = write
        self._framing = framing
        self._find = find
        self._control_limit = control_limit
        #: process id -> last seq sent; the session's own dict once attached.
        self.cursors: dict[str, int] = {}
        self._control: deque[bytes] = deque()
        self._control_bytes = 0
        #: Processes that may have something after their cursor, in turn order.
        self._pending: dict[str, None] = {}
        self._ahead: dict[str, _ReadAhead] = {}
        self._wake = asyncio.Event()
        #: Set while queued control messages stay within `control_limit`.
        self.room = asyncio.Event()
        self.room.set()
        self._stopping = False
        self._unyielded = 0
        self.failed = False
        self._task = asyncio.create_task(self._run())

    # -- what the connection and the sessions call --------------------------------

    def send(self, message: bytes) -> None:
        """Queue a control message (never dropped; bounded by `room`)."""
        if self.failed:
            return
        self._control.append(message)
        self._control_bytes += len(message)
        if self._control_bytes > self._control_limit:
            self.room.clear()
        self._wake.set()

    def attach(self, cursors: dict[str, int]) -> None:
        """Serve these cursors (a session's; on resume they carry on where they were)."""
        self.cursors = cursors
        for process_id in cursors:
            self.wake(process_id)

    def follow(self, process_id: str, after_seq: int) -> None:
        """Subscribe: the cursor moves to `after_seq` unless it is already past it."""
        self.cursors[process_id] = max(after_seq, self.cursors.get(process_id, 0))
        self.wake(process_id)

    def wake(self, process_id: str) -> None:
        """The process has a new event: pull from its cursor if subscribed."""
        if process_id in self.cursors:
            self._pending[process_id] = None
            self._wake.set()

    async def aclose(self) -> None:
        """Stop after the queued control messages; cursors stay with the session.

        A client that stopped reading could hold a write forever: after
        `CLOSE_FLUSH_SECONDS` the writer is cancelled.
        """
        self._stopping = True
        self._wake.set()
        await asyncio.wait({self._task}, timeout=CLOSE_FLUSH_SECONDS)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    # -- the writer -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while await self._step():
                pass
        except Exception:  # the transport is gone; its close will follow
            log.debug("write failed; the connection stops writing", exc_info=True)
            self.failed = True
            self.room.set()

    async def _step(self) -> bool:
        """Write the next message(s); False once stopping with nothing left to write."""
        if self._control:
            message = self._control.popleft()
            self._control_bytes -= len(message)
            if self._control_bytes <= self._control_limit:
                self.room.set()
            await self._write(frame(message, self._framing))
            return True
        if self._stopping:
            return False
        if self._pending:
            process_id = next(iter(self._pending))
            del self._pending[process_id]
            messages = await self._pull(process_id)
            if messages or process_id in self._ahead:
                self._pending[process_id] = None  # to the back of the round
            for message in messages:
                await self._write(message)
                self._unyielded += len(message)
            if self._unyielded > YIELD_BYTES:
                self._unyielded = 0
                await asyncio.sleep(0)
            return True
        self._wake.clear()
        await self._wake.wait()
        return True

    async def _pull(self, process_id: str) -> list[bytes]:
        """The next messages after this process's cursor (and move the cursor past them)."""
        proc = self._find(process_id)
        after = self.cursors.get(process_id)
        if proc is None or after is None:
            self._ahead.pop(process_id, None)
            return []
        end = _next_end(proc, after)
        stop = end.seq if end is not None else None
        chunks, cut, reached = await self._next_chunks(process_id, proc.store, after, stop)
        current = self.cursors.get(process_id)
        if current is None:
            return []  # unsubscribed meanwhile
        framing = self._framing
        messages = [
            encode_output(process_id, c.seq, c.stream, c.data, framing)
            for c in chunks
            if c.seq > current
        ]
        last = chunks[-1].seq if chunks else after
        if end is not None and not cut and reached == end.seq and end.seq > current:
            messages.append(frame(encode_event(end), framing))  # all output before it is out
            last = end.seq
        self.cursors[process_id] = max(current, last)
        return messages

    async def _next_chunks(
        self, process_id: str, store: OutputStore, after: int, stop: int | None
    ) -> tuple[list[Chunk], bool, int | None]:
        """One turn's chunks after `after` below `stop`: (chunks, cut short, seq reached).

        From memory inline; else from the log, read ahead (inline from the page
        cache, else in a thread) and handed out a chunk per turn. Chunks
        retention dropped (SPEC 6) are in neither place: the read starts past
        them, and the next seq sent shows the jump.
        """
        ahead = self._ahead.get(process_id)
        if ahead is None:
            budget = max(TURN_BYTES, READ_AHEAD_BYTES // (len(self._ahead) + 1))
            span = store.log_range(after, stop, budget)
            if span is None:
                chunks, cut = store.take_memory(after, stop, TURN_BYTES)
                return chunks, cut, stop
            cached = span.read_cached()  # inline if the page cache holds it (no wait)
            read, cut = cached if cached is not None else await asyncio.to_thread(span.read)
            ahead = _ReadAhead(deque(read), None if cut else span.stop_seq)
            if not read:  # nothing there (the log is gone), or only the end is due
                return [], cut, ahead.reached
            self._ahead[process_id] = ahead
        chunk = ahead.chunks.popleft()
        if ahead.chunks:
            return [chunk], True, None
        del self._ahead[process_id]
        return [chunk], ahead.reached is None, ahead.reached


@dataclass(slots=True)
class _ReadAhead:
    chunks: deque[Chunk]
    #: The seq the read stopped at, having read everything below it; None if
    #: the budget cut it short.
    reached: int | None


def _next_end(proc: ManagedProcess, after_seq: int) -> SeqEvent | None:
    """The first of `restarted` (SPEC 11), `exited`, `closed` after the cursor, if any yet."""
    for event in proc.marks():
        if event.seq > after_seq:
            return event
    return None
