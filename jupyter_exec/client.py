"""Python client: async `ExecClient`, and `SyncExecClient` for scripts and magics.

One connection, concurrent requests matched by id, notifications fanned out to
`events()` iterators. `events()` follows a process live through
`process/subscribe` and fills any seq gap (a slow consumer, a reconnect) with
`process/read`, so a consumer sees every byte exactly once, in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from .errors import ErrorCode, ExecError
from .models import ProcessInfo

if TYPE_CHECKING:
    from .dispatch import ExecService

T = TypeVar("T")
#: How long `events()` waits on a silent subscription before checking with a read.
IDLE_CHECK_SECONDS = 2.0
_END_CURSOR = 2**53


class RemoteError(ExecError):
    """An error answered by the server; `code` is the JSON-RPC code it sent."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message, data)
        self.remote_code = code

    @property
    def code(self) -> ErrorCode:  # type: ignore[override]
        try:
            return ErrorCode(self.remote_code)
        except ValueError:
            return ErrorCode.INTERNAL_ERROR


class ConnectionLostError(ConnectionError):
    """The transport closed while requests were pending."""


class Chunk(BaseModel):
    seq: int
    stream: str
    data: bytes


class ReadResult(BaseModel):
    chunks: list[Chunk]
    next_seq: int
    first_seq: int
    exited: bool
    exit_code: int | None
    signal: str | None
    closed: bool
    failure: str | None
    matched: bool | None = None

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)


@dataclass(frozen=True)
class OutputEvent:
    process_id: str
    seq: int
    stream: str
    data: bytes


@dataclass(frozen=True)
class ExitedEvent:
    process_id: str
    seq: int
    exit_code: int
    signal: str | None


@dataclass(frozen=True)
class ClosedEvent:
    process_id: str
    seq: int


ProcessEvent = OutputEvent | ExitedEvent | ClosedEvent


def websocket_url(url: str) -> str:
    """A Jupyter server's http(s) URL becomes its `api/exec/ws`; ws(s) URLs pass through."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if parts.scheme in ("http", "https") and not path.endswith("/ws"):
        path = path.rstrip("/") + "/api/exec/ws"
    return urlunsplit((scheme, parts.netloc, path or "/", parts.query, ""))


def _parse_event(method: str, params: dict[str, Any]) -> ProcessEvent | None:
    pid, seq = params.get("processId", ""), params.get("seq", 0)
    if method == "process/output":
        return OutputEvent(pid, seq, params["stream"], base64.b64decode(params["chunk"]))
    if method == "process/exited":
        return ExitedEvent(pid, seq, params["exitCode"], params.get("signal"))
    if method == "process/closed":
        return ClosedEvent(pid, seq)
    return None


class ExecClient:
    """An initialized session with a jupyter-exec server."""

    def __init__(
        self, send: Callable[[str], Awaitable[None]], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._send = send
        self._close = close
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._queues: dict[str, set[asyncio.Queue[ProcessEvent]]] = {}
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
        await client._initialize(client_name, resume_session_id)
        return client

    @classmethod
    async def embedded(
        cls, service: ExecService, *, client_name: str = "jupyter-exec"
    ) -> ExecClient:
        """An in-process connection to `service`: no sockets, same protocol."""
        client: ExecClient | None = None

        async def deliver(message: bytes) -> None:
            assert client is not None
            client._on_frame(message)

        connection = service.connect(deliver)

        async def send(text: str) -> None:
            connection.receive(text)

        client = cls(send, connection.aclose)
        await client._initialize(client_name, None)
        return client

    async def _pump(self, ws: Any) -> None:
        try:
            async for frame in ws:
                self._on_frame(frame)
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

    def _on_frame(self, frame: str | bytes) -> None:
        msg = json.loads(frame)
        if "method" in msg:
            method, params = msg["method"], msg.get("params") or {}
            for listener in self.listeners:
                listener(method, params)
            event = _parse_event(method, params)
            if event is not None:
                for queue in self._queues.get(event.process_id, ()):
                    queue.put_nowait(event)
            return
        fut = self._pending.pop(msg.get("id"), None)
        if fut is None or fut.done():
            return
        if "error" in msg:
            err = msg["error"]
            fut.set_exception(
                RemoteError(err.get("code", -32603), err.get("message", ""), err.get("data"))
            )
        else:
            fut.set_result(msg.get("result"))

    async def _initialize(self, client_name: str, resume: str | None) -> None:
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
        message = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            message["params"] = params
        await self._send(json.dumps(message))
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
    ) -> str:
        params: dict[str, Any] = {"processId": process_id, "argv": argv, "tty": tty}
        optional = {"cwd": cwd, "env": env, "lifetime": lifetime, "label": label}
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
    ) -> ReadResult:
        params: dict[str, Any] = {"processId": process_id, "afterSeq": after_seq, "waitMs": wait_ms}
        if max_bytes is not None:
            params["maxBytes"] = max_bytes
        if until_pattern is not None:
            params["untilPattern"] = until_pattern
        r = await self.request("process/read", params)
        return ReadResult(
            chunks=[
                Chunk(seq=c["seq"], stream=c["stream"], data=base64.b64decode(c["chunk"]))
                for c in r["chunks"]
            ],
            next_seq=r["nextSeq"],
            first_seq=r["firstSeq"],
            exited=r["exited"],
            exit_code=r["exitCode"],
            signal=r["signal"],
            closed=r["closed"],
            failure=r["failure"],
            matched=r.get("matched"),
        )

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
        return [ProcessInfo.model_validate(p) for p in result["processes"]]

    async def wait(self, process_id: str, timeout: float | None = None) -> ReadResult:
        """Wait until the process exits; the result's chunks are empty, the state final."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, deadline - loop.time())
            # A cursor past any output: the long-poll returns only at exit (or timeout).
            r = await self.read(process_id, _END_CURSOR, wait_ms=int(min(left, 30.0) * 1000))
            if r.exited:
                return r
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"process {process_id} still running after {timeout} s")

    # -- events ---------------------------------------------------------------

    async def events(
        self, process_id: str, after_seq: int = 0
    ) -> AsyncGenerator[ProcessEvent, None]:
        """Every event after `after_seq`, in seq order, ending with `ClosedEvent`."""
        queue: asyncio.Queue[ProcessEvent] = asyncio.Queue()
        self._queues.setdefault(process_id, set()).add(queue)
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
                except TimeoutError:
                    event = None
                if event is not None and event.seq <= cursor:
                    continue
                if event is None or event.seq > cursor + 1:
                    async for recovered in self._recover(process_id, cursor):
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

    async def _recover(self, process_id: str, cursor: int) -> AsyncIterator[ProcessEvent]:
        """Fill a gap from the authority (`process/read`), up to what is known now."""
        while True:
            r = await self.read(process_id, cursor)
            for c in r.chunks:
                cursor = c.seq
                yield OutputEvent(process_id, c.seq, c.stream, c.data)
            if r.chunks:
                continue
            if r.closed and cursor < r.next_seq - 1:
                # No chunk is left: the last two seqs are exited and closed.
                if cursor < r.next_seq - 2:
                    yield ExitedEvent(process_id, r.next_seq - 2, r.exit_code or 0, r.signal)
                yield ClosedEvent(process_id, r.next_seq - 1)
            return

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
    """Blocking facade: an `ExecClient` on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="jupyter-exec-client", daemon=True
        )
        self._thread.start()
        self.client: ExecClient
        self.service: ExecService | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @classmethod
    def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> SyncExecClient:
        self = cls()
        try:
            self.client = self._run(ExecClient.connect(url, token, **kwargs))
        except BaseException:
            self._stop_loop()
            raise
        return self

    @classmethod
    def embedded(cls, **service_config: Any) -> SyncExecClient:
        """A private in-process registry (processes default to `detached`)."""
        from .dispatch import ExecService, ServiceConfig
        from .registry import Registry

        self = cls()

        async def make() -> ExecClient:
            config = ServiceConfig(default_lifetime="detached", **service_config)
            self.service = ExecService(Registry(), config)
            return await ExecClient.embedded(self.service)

        self.client = self._run(make())
        return self

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(method(*args, **kwargs))

        return call

    def events(self, process_id: str, after_seq: int = 0) -> Iterator[ProcessEvent]:
        agen = self.client.events(process_id, after_seq)

        async def next_event() -> ProcessEvent:
            return await agen.__anext__()

        try:
            while True:
                try:
                    yield self._run(next_event())
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._run(agen.aclose(), timeout=5)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self.client.close(), timeout=5)
        if self.service is not None:
            with contextlib.suppress(Exception):
                self._run(self.service.aclose(), timeout=15)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def __enter__(self) -> SyncExecClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
