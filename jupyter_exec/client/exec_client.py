"""Python client: async `ExecClient`, and `SyncExecClient` for scripts and magics.

One connection, concurrent requests matched by id, notifications fanned out to
`events()` iterators. `events()` follows a process live through
`process/subscribe` and fills any seq gap (a slow consumer, a reconnect) with
`process/read`, so a consumer sees every byte exactly once, in order.

`pages()` is the one way to read output by cursor (SPEC 4 `process/read`):
every page after a seq, up to now or (``follow``) until the process is
closed. Every face that copies output (the handle, `%read`, the CLI, the
live view, the MCP tools, `events()` itself) reads through it, and
`SyncExecClient.pages` wraps it rather than loop again.

Messages are read and built with :mod:`jupyter_exec.wire.schema` and errors come
back typed (:func:`jupyter_exec.wire.errors.error_from_wire`). No server module and
no pydantic is imported here, so a client (and ``jupyter exec ps``) starts
fast; a client of an in-process registry is :mod:`jupyter_exec.embedded`.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..wire.errors import ConnectionLostError, UnknownProcessError, error_from_wire
from ..wire.events import ClosedEvent, ExitedEvent, OutputEvent, RestartedEvent, SeqEvent
from ..wire.models import ProcessInfo, QueueInfo
from ..wire.schema import Chunk, ReadResult, event_from_notification, request

__all__ = [
    "END_CURSOR",
    "PAGE_BYTES",
    "Chunk",
    "ClosedEvent",
    "ConnectionLostError",
    "ExecClient",
    "ExitedEvent",
    "OutputEvent",
    "Page",
    "ProcessEvent",
    "QueueInfo",
    "ReadResult",
    "RestartedEvent",
    "SyncExecClient",
    "websocket_url",
]

T = TypeVar("T")
#: How long `events()` waits on a silent subscription before checking with a read.
IDLE_CHECK_SECONDS = 2.0
#: Output an `events()` consumer may have waiting before more is left to `process/read`.
INBOX_BYTES = 16 << 20
#: Ends and restarts of processes no `events()` follows yet, kept for one to come
#: (`ExecClient._keep_unclaimed`): this many processes, this many events each.
UNCLAIMED_PROCESSES = 256
UNCLAIMED_EVENTS = 64

#: A cursor past any output: a read there returns no chunk, only the state now
#: (`nextSeq`, exit), and a long-poll there returns only at the exit.
END_CURSOR = 2**53
#: One `process/read` page when a reader copies a whole output.
PAGE_BYTES = 1 << 20
#: `pages(follow=True)`: the pause between reads while an exited process is not yet closed.
CLOSING_POLL_SECONDS = 0.05
#: What `events()` yields: a process's seq-numbered events (schema: SPEC 5).
ProcessEvent = SeqEvent


def websocket_url(url: str) -> str:
    """A Jupyter server's http(s) URL becomes its `api/exec/ws`; ws(s) URLs pass through."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if parts.scheme in ("http", "https") and not path.endswith("/ws"):
        path = path.rstrip("/") + "/api/exec/ws"
    return urlunsplit((scheme, parts.netloc, path or "/", parts.query, ""))


@dataclass(slots=True)
class Page(ReadResult):
    """One page of `ExecClient.pages`: a `ReadResult` and the cursor it was read after."""

    after_seq: int = 0

    @property
    def dropped(self) -> range:
        """The seqs after `after_seq` that a retention limit dropped (SPEC 4 `firstSeq`;
        empty when nothing was): the first gap of `with_gaps`. Reported once, on the
        page where the reader would otherwise pass over them."""
        gaps = (piece for piece in self.with_gaps() if isinstance(piece, range))
        return next(gaps, range(self.after_seq + 1, self.after_seq + 1))

    def with_gaps(self) -> Iterator[Chunk | range]:
        """The chunks in seq order, with the seqs a retention limit dropped as a range
        just where they are missing: before the first chunk at or past `first_seq`, or
        alone on a page without chunks. (Usually the gap comes first; a log that stopped
        growing and then lost later chunks from memory leaves one after chunks its log
        still holds, below `first_seq`.)"""
        cursor = self.after_seq
        for chunk in self.chunks:
            if chunk.seq >= self.first_seq > cursor + 1:
                yield range(cursor + 1, self.first_seq)
            yield chunk
            cursor = chunk.seq
        if not self.chunks and self.first_seq > cursor + 1:
            yield range(cursor + 1, self.first_seq)

    @classmethod
    def after(cls, after_seq: int, result: ReadResult) -> Page:
        """`result`, read after `after_seq`, as a page."""
        fields = {name: getattr(result, name) for name in ReadResult.__dataclass_fields__}
        return cls(**fields, after_seq=after_seq)

    @property
    def cursor(self) -> int:
        """Where the next read continues: `nextSeq - 1` (SPEC 4), never back."""
        return max(self.after_seq, self.next_seq - 1)


class _Inbox:
    """One `events()` consumer's waiting events, bounded in bytes.

    The server never drops (SPEC 5), so a consumer slower than the process would
    otherwise grow this process's memory without limit. Past `INBOX_BYTES` output
    is not kept here; the consumer sees the seq gap and reads it back from the
    server's log (`_recover`), so nothing is lost. Exit and close are always kept.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ProcessEvent] = asyncio.Queue()
        self._bytes = 0

    def put(self, event: ProcessEvent) -> None:
        if isinstance(event, OutputEvent):
            if self._bytes + len(event.data) > INBOX_BYTES:
                return
            self._bytes += len(event.data)
        self._queue.put_nowait(event)

    async def get(self) -> ProcessEvent:
        event = await self._queue.get()
        if isinstance(event, OutputEvent):
            self._bytes -= len(event.data)
        return event


class ExecClient:
    """An initialized session with a jupyter-exec server."""

    def __init__(
        self, send: Callable[[str], Awaitable[None]], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._send = send
        self._close = close
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queues: dict[str, set[_Inbox]] = {}
        self._unclaimed: dict[str, builtins.list[ProcessEvent]] = {}
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.session_id = ""
        self.server_info: dict[str, Any] = {}
        self.closed = False

    # -- construction ---------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        *,
        client_name: str = "jupyter-exec",
        resume_session_id: str | None = None,
    ) -> ExecClient:
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"token {token}"} if token else None
        ws = await connect(
            websocket_url(url), additional_headers=headers, max_size=None, compression=None
        )
        client = cls(ws.send, ws.close)
        reader = asyncio.create_task(client._pump(ws))
        client._close = _closer(ws.close, reader)
        await client.initialize(client_name, resume_session_id)
        return client

    async def _pump(self, ws: Any) -> None:
        try:
            async for frame in ws:
                self.receive(frame)
        except Exception:  # closed abnormally: fail what is pending
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLostError("connection to the exec server lost"))
        self._pending.clear()

    def receive(self, frame: str | bytes) -> None:
        """Handle one frame from the transport: a response or a notification."""
        msg = json.loads(frame)
        if "method" in msg:
            method, params = msg["method"], msg.get("params") or {}
            for listener in self.listeners:
                listener(method, params)
            event = event_from_notification(method, params)
            if isinstance(event, OutputEvent | ExitedEvent | ClosedEvent | RestartedEvent):
                queues = self._queues.get(event.process_id)
                for queue in queues or ():
                    queue.put(event)
                if not queues and not isinstance(event, OutputEvent):
                    self._keep_unclaimed(event)
            return
        fut = self._pending.pop(msg.get("id"), None)
        if fut is None or fut.done():
            return
        if "error" in msg:
            fut.set_exception(error_from_wire(msg["error"]))
        else:
            fut.set_result(msg.get("result"))

    def _keep_unclaimed(self, event: ProcessEvent) -> None:
        """An end or a restart of a process no `events()` follows yet, kept for the one
        to come. The starting connection is subscribed at once (SPEC 4), so a quick
        process may restart or end before its starter calls `events()`; `process/read`
        gives back output, never a `process/restarted`, and without the end the
        follower would wait for its idle check. Bounded (`UNCLAIMED_*`): past that, a
        restart is only not announced, and the end is read back as before."""
        kept = self._unclaimed.pop(event.process_id, [])[1 - UNCLAIMED_EVENTS :]
        self._unclaimed[event.process_id] = [*kept, event]  # the most recent last
        while len(self._unclaimed) > UNCLAIMED_PROCESSES:
            del self._unclaimed[next(iter(self._unclaimed))]

    async def initialize(self, client_name: str, resume: str | None = None) -> None:
        """The SPEC 2 handshake; `connect` and embedded mode call it once."""
        params: dict[str, Any] = {"clientName": client_name}
        if resume is not None:
            params["resumeSessionId"] = resume
        result = await self.request("initialize", params)
        self.session_id = result["sessionId"]
        self.server_info = result
        await self._send(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))

    # -- requests -------------------------------------------------------------

    async def request(self, method: str, params: Any = None) -> Any:
        if self.closed:
            raise ConnectionLostError("connection to the exec server is closed")
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        await self._send(json.dumps(request(req_id, method, params)))
        return await fut

    async def start(
        self,
        process_id: str,
        argv: list[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        inherit_env: bool = False,
        tty: bool = False,
        pipe_stdin: bool = False,
        rows: int = 24,
        cols: int = 80,
        lifetime: str | None = None,
        label: str | None = None,
        timeout_ms: int | None = None,
        limits: dict[str, int] | None = None,
        sandbox: str | dict[str, Any] | None = None,
        origin: dict[str, str] | None = None,
        restart: dict[str, Any] | None = None,
        queue: str | None = None,
        after: builtins.list[str] | None = None,
    ) -> str:
        """`restart` (`{"policy", "maxRestarts"?, "delayMs"?}`), `queue` and `after`:
        SPEC 11 scheduling."""
        params: dict[str, Any] = {"processId": process_id, "argv": argv, "tty": tty}
        optional: dict[str, Any] = {"cwd": cwd, "env": env, "lifetime": lifetime, "label": label}
        optional.update(timeoutMs=timeout_ms, limits=limits, sandbox=sandbox, origin=origin)
        optional.update(restart=restart, queue=queue, after=after)
        params.update({k: v for k, v in optional.items() if v is not None})
        if inherit_env:
            params["inheritEnv"] = True
        if pipe_stdin:
            params["pipeStdin"] = True
        if tty:
            params["size"] = {"rows": rows, "cols": cols}
        result = await self.request("process/start", params)
        return str(result["processId"])

    async def read(
        self,
        process_id: str,
        after_seq: int = 0,
        *,
        max_bytes: int | None = None,
        wait_ms: int = 0,
        until_pattern: str | None = None,
        until_idle_ms: int | None = None,
    ) -> ReadResult:
        """One `process/read` (SPEC 4); `until_idle_ms` is this server's `untilIdleMs`."""
        params: dict[str, Any] = {"processId": process_id, "afterSeq": after_seq, "waitMs": wait_ms}
        if max_bytes is not None:
            params["maxBytes"] = max_bytes
        if until_pattern is not None:
            params["untilPattern"] = until_pattern
        if until_idle_ms is not None:
            params["untilIdleMs"] = until_idle_ms
        return ReadResult.from_wire(await self.request("process/read", params))

    async def pages(
        self,
        process_id: str,
        after_seq: int = 0,
        *,
        max_bytes: int | None = PAGE_BYTES,
        wait_ms: int = 0,
        follow: bool = False,
    ) -> AsyncGenerator[Page, None]:
        """Every page of output after `after_seq`, in seq order: each chunk once.

        Each read continues from the last one's `nextSeq - 1` (`Page.cursor`).
        Without `follow` the pages end with the first one that holds no chunk:
        nothing more now (that page still gives the state after the output),
        and `wait_ms` is how long the first read waits for output to come.
        With `follow` every read waits up to `wait_ms`, and empty pages are
        yielded too (a consumer checks its clock or a stop flag between them);
        the pages end when the process is closed and nothing is left to read.

        Output a retention limit dropped is not skipped silently: the first
        page after the cursor that misses it says which seqs (`Page.dropped`).
        """
        cursor, wait = after_seq, wait_ms
        while True:
            result = await self.read(process_id, cursor, max_bytes=max_bytes, wait_ms=wait)
            page = Page.after(cursor, result)
            yield page
            cursor = page.cursor
            if not follow:
                if not page.chunks:
                    return
                wait = 0
            elif not page.chunks:
                if page.closed:
                    return
                if page.exited:  # not closed yet: its last output is still being drained
                    await asyncio.sleep(CLOSING_POLL_SECONDS)

    async def write(self, process_id: str, data: bytes, *, eof: bool = False) -> str:
        params = {"processId": process_id, "chunk": base64.b64encode(data).decode(), "eof": eof}
        return str((await self.request("process/write", params))["status"])

    async def signal(self, process_id: str, signal: str) -> None:
        await self.request("process/signal", {"processId": process_id, "signal": signal})

    async def terminate(self, process_id: str, grace_ms: int | None = None) -> bool:
        params: dict[str, Any] = {"processId": process_id}
        if grace_ms is not None:
            params["graceMs"] = grace_ms
        return bool((await self.request("process/terminate", params))["running"])

    async def resize(self, process_id: str, rows: int, cols: int) -> None:
        await self.request("process/resize", {"processId": process_id, "rows": rows, "cols": cols})

    async def list(self) -> list[ProcessInfo]:
        result = await self.request("process/list", {})
        return [ProcessInfo.from_wire(p) for p in result["processes"]]

    async def wait(self, process_id: str, timeout: float | None = None) -> ReadResult:
        """Wait until the process exits; the result's chunks are empty, the state final."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, deadline - loop.time())
            # A cursor past any output: the long-poll returns only at exit (or timeout).
            r = await self.read(process_id, END_CURSOR, wait_ms=int(min(left, 30.0) * 1000))
            if r.exited:
                return r
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"process {process_id} still running after {timeout} s")

    async def wait_all(
        self, process_ids: builtins.list[str], timeout: float | None = None
    ) -> builtins.list[dict[str, Any]]:
        """SPEC 11 `process/wait`: once every one has exited, or at `timeout` (seconds;
        None: the server's longest wait): `[{"processId", "exited", "exitCode", "signal"}]`."""
        params: dict[str, Any] = {"processIds": process_ids}
        if timeout is not None:
            params["timeoutMs"] = max(0, round(timeout * 1000))
        result = await self.request("process/wait", params)
        return list(result["processes"])

    async def queue_set(self, name: str, parallel: int) -> QueueInfo:
        """SPEC 11 `queue/set`: how many of the queue's processes run at once."""
        result = await self.request("queue/set", {"name": name, "parallel": parallel})
        return QueueInfo.from_wire(result)

    async def queues(self) -> builtins.list[QueueInfo]:
        """SPEC 11 `queue/list`."""
        result = await self.request("queue/list", {})
        return [QueueInfo.from_wire(q) for q in result["queues"]]

    async def wait_for_port(self, process_id: str, timeout: float) -> ProcessInfo:
        """Its `ProcessInfo` once its tree listens on a TCP port (SPEC 11 `ports`, current
        within about a second), or once it exited; TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [i for i in await self.list() if i.process_id == process_id]
            if not found:
                raise UnknownProcessError(process_id)
            if found[0].ports or found[0].state in ("exited", "closed", "lost"):
                return found[0]
            if loop.time() >= deadline:
                raise TimeoutError(f"process {process_id} listens on no port after {timeout} s")
            await asyncio.sleep(min(0.25, max(0.0, deadline - loop.time())))

    # -- events ---------------------------------------------------------------

    async def events(
        self, process_id: str, after_seq: int = 0
    ) -> AsyncGenerator[ProcessEvent, None]:
        """Every event after `after_seq`, in seq order, ending with `ClosedEvent`."""
        queue = _Inbox()
        self._queues.setdefault(process_id, set()).add(queue)
        for kept in self._unclaimed.pop(process_id, ()):
            queue.put(kept)
        cursor = after_seq
        try:
            await self.request(
                "process/subscribe", {"processId": process_id, "afterSeq": after_seq}
            )
            while True:
                try:
                    event: ProcessEvent | None = await asyncio.wait_for(
                        queue.get(), IDLE_CHECK_SECONDS
                    )
                except asyncio.TimeoutError:  # what wait_for raises; not the builtin before 3.11
                    event = None
                if event is not None and event.seq <= cursor:
                    continue
                if event is None or event.seq > cursor + 1:
                    upto = None if event is None else event.seq - 1  # then `event` itself
                    async for recovered in self._recover(process_id, cursor, upto):
                        cursor = recovered.seq
                        yield recovered
                        if isinstance(recovered, ClosedEvent):
                            return
                    if event is None or event.seq <= cursor:
                        continue
                cursor = event.seq
                yield event
                if isinstance(event, ClosedEvent):
                    return
        finally:
            queues = self._queues.get(process_id, set())
            queues.discard(queue)
            if not queues and not self.closed:
                self._queues.pop(process_id, None)
                with contextlib.suppress(Exception):
                    await self.request("process/unsubscribe", {"processId": process_id})

    #: The issue's name for it: subscribing is what `events()` does.
    subscribe = events

    async def _recover(
        self, process_id: str, cursor: int, upto: int | None = None
    ) -> AsyncIterator[ProcessEvent]:
        """Fill a gap from the authority (`process/read`): up to seq `upto` (the one
        before the event that showed the gap, which the caller yields next, so a
        `process/restarted` there is not passed over), else up to what is known now."""
        async for page in self.pages(process_id, cursor, max_bytes=None):
            for c in page.chunks:
                if upto is not None and c.seq > upto:
                    return
                cursor = c.seq
                yield OutputEvent(process_id, c.seq, c.stream, c.data)
            if not page.chunks and page.closed and cursor < page.next_seq - 1:
                # No chunk is left: the last two seqs are exited and closed.
                ends: builtins.list[ProcessEvent] = []
                if cursor < page.next_seq - 2:
                    ends.append(
                        ExitedEvent(process_id, page.next_seq - 2, page.exit_code, page.signal)
                    )
                ends.append(ClosedEvent(process_id, page.next_seq - 1))
                for end in ends:
                    if upto is None or end.seq <= upto:
                        yield end

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._close()
        self._lost()

    async def __aenter__(self) -> ExecClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _closer(
    close: Callable[[], Awaitable[None]], reader: asyncio.Task[None]
) -> Callable[[], Awaitable[None]]:
    async def close_all() -> None:
        await close()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    return close_all


class SyncExecClient:
    """Blocking facade: an `ExecClient` on its own event loop in a daemon thread.

    Every coroutine method of `ExecClient` is available as a blocking call
    (``sync.list()``); `run` runs any other coroutine on the client's loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jupyter-exec-client", daemon=True
        )
        self._thread.start()
        self.client: ExecClient

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the client's loop and block for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @classmethod
    def from_async(cls, make: Callable[[], Awaitable[ExecClient]]) -> SyncExecClient:
        """Build the `ExecClient` with ``make()`` on a new loop thread (stopped on failure)."""
        self = cls()

        async def build() -> ExecClient:
            return await make()

        try:
            self.client = self.run(build())
        except BaseException:
            self._stop_loop()
            raise
        return self

    @classmethod
    def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> SyncExecClient:
        return cls.from_async(lambda: ExecClient.connect(url, token, **kwargs))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(method(*args, **kwargs))

        return call

    def events(self, process_id: str, after_seq: int = 0) -> Iterator[ProcessEvent]:
        """`ExecClient.events`, blocking."""
        return self._iterate(self.client.events(process_id, after_seq))

    def pages(
        self,
        process_id: str,
        after_seq: int = 0,
        *,
        max_bytes: int | None = PAGE_BYTES,
        wait_ms: int = 0,
        follow: bool = False,
    ) -> Iterator[Page]:
        """`ExecClient.pages`, blocking. A KeyboardInterrupt while a read waits ends
        the pages; continue with ``pages(process_id, last_page.cursor, ...)``."""
        agen = self.client.pages(
            process_id, after_seq, max_bytes=max_bytes, wait_ms=wait_ms, follow=follow
        )
        return self._iterate(agen)

    def _iterate(self, agen: AsyncGenerator[T, None]) -> Iterator[T]:
        """The items of an async generator of the client, each awaited on its loop."""

        async def next_item() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self.run(next_item())
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self.run(agen.aclose(), timeout=5)

    def close(self) -> None:
        """Close the client (an embedded one also stops its service), then the loop."""
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self.run(self.client.close(), timeout=20)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def __enter__(self) -> SyncExecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
