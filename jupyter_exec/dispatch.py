"""Sessions, connections and the method table: frame in -> registry call -> frame out.

Transports (the tornado handler, the standalone websocket and stdio servers,
the in-process client) create one `Connection` per client and feed it frames;
the connection answers through the `write` coroutine it was given. This is the
one place where exceptions become JSON-RPC errors (SPEC 7).

Flow control (SPEC 5): every connection has one outgoing queue: responses go
first, then the processes' notifications, one process after another, each in
seq order. Responses are always queued; output notifications are dropped once
the queue holds more than `ServiceConfig.notification_queue_bytes` (only from
processes that still have output queued), so a slow client sees a seq gap and
recovers with `process/read` while the process and other clients go on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import environment, fs_methods, limits
from ._version import __version__
from .errors import ExecError, InternalError, InvalidRequestError, MethodNotFoundError
from .events import ClosedEvent, Event, ExitedEvent, OutputEvent, RemovedEvent, StartedEvent
from .models import Lifetime
from .protocol import (
    InitializeParams,
    ListParams,
    ProcessParams,
    ReadParams,
    RequestId,
    ResizeParams,
    SignalParams,
    StartParams,
    SubscribeParams,
    TerminateParams,
    WriteParams,
    error_response,
    parse_message,
    parse_params,
    request_id_of,
    response,
)
from .registry import ReadOutcome, Registry
from .schema import ReadResult, event_notification

log = logging.getLogger(__name__)

Write = Callable[[str], Awaitable[None]]

#: Methods that only look. Under Jupyter authorization every other method needs
#: the `execute` action on resource `exec` (handlers.py).
READ_ONLY_METHODS = frozenset(
    {
        "process/read",
        "process/list",
        "process/subscribe",
        "process/unsubscribe",
        "environment/info",
        "environmentConfig/read",
        "fs/getMetadata",
        "fs/readFile",
        "fs/readDirectory",
        "fs/watchMissing",
    }
)


@dataclass
class ServiceConfig:
    default_lifetime: Lifetime = "connection"
    session_resume_seconds: float = 30.0
    max_message_bytes: int = 16 << 20
    notification_queue_bytes: int = 8 << 20
    #: Requests of one connection running at once; beyond it the transport stops
    #: reading that client (with the queue limit above, this bounds its memory).
    max_requests_in_flight: int = 256


@dataclass
class CallContext:
    """What a method handler may know about its caller."""

    service: ExecService
    connection: Connection
    session_id: str
    root_dir: Path
    #: Callbacks run right after the response is queued (e.g. start's auto-subscribe).
    after_response: list[Callable[[], None]] = field(default_factory=list)


Handler = Callable[[CallContext, Any], Awaitable[Any]]


@dataclass(eq=False)
class Session:
    """Survives its connection for `session_resume_seconds` (SPEC 2 resume)."""

    id: str
    connection: Connection | None = None
    #: process id -> highest seq sent, so notifications only ever move forward.
    subscriptions: dict[str, int] = field(default_factory=dict)
    watching: bool = False
    expiry: asyncio.TimerHandle | None = None


class ExecService:
    """Server-wide: the registry, the sessions, the method table and event routing."""

    def __init__(self, registry: Registry, config: ServiceConfig | None = None) -> None:
        self.registry = registry
        self.config = config or ServiceConfig()
        self.sessions: dict[str, Session] = {}
        self.methods: dict[str, Handler] = dict(PROCESS_METHODS)
        self.capabilities: dict[str, Any] = {
            "processes": True,
            "tty": True,
            "untilPattern": True,
            "resume": True,
            "watch": True,
        }
        self._install_extra_methods()
        self._subscribers: dict[str, set[Session]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        registry.add_listener(self._route)

    def _install_extra_methods(self) -> None:
        self.methods.update(fs_methods.FS_METHODS)
        self.methods.update(environment.ENVIRONMENT_METHODS)
        self.capabilities.update(fs_methods.CAPABILITIES)
        self.capabilities.update(environment.CAPABILITIES)
        self.capabilities.update(limits.CAPABILITIES)

    @property
    def root_dir(self) -> Path:
        return self.registry.config.root_dir

    def connect(self, write: Write, allowed_actions: frozenset[str] | None = None) -> Connection:
        """A new client. `allowed_actions` None means everything is allowed."""
        return Connection(self, write, allowed_actions)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task this service owns (awaited at `aclose`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for session in list(self.sessions.values()):
            if session.connection is not None:
                await session.connection.aclose()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.registry.remove_listener(self._route)
        await self.registry.aclose()

    # -- sessions -------------------------------------------------------------

    def open_session(self, resume_id: str | None, connection: Connection) -> Session:
        if resume_id is not None:
            session = self.sessions.get(resume_id)
            if session is None:
                raise InvalidRequestError(f"unknown or expired session {resume_id}")
            if session.connection is not None:
                raise InvalidRequestError(f"session {resume_id} is attached to another connection")
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None
        else:
            session = Session(uuid.uuid4().hex)
            self.sessions[session.id] = session
        session.connection = connection
        return session

    def detach_session(self, session: Session) -> None:
        session.connection = None
        loop = asyncio.get_running_loop()
        delay = self.config.session_resume_seconds
        session.expiry = loop.call_later(delay, self._expire, session)

    def _expire(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        for process_id in session.subscriptions:
            self._subscribers.get(process_id, set()).discard(session)
        self.registry.terminate_owned_by(session.id)

    def subscribe(self, session: Session, process_id: str, after_seq: int) -> int:
        """Replay retained chunks after `after_seq`, then follow live (SPEC 4)."""
        proc = self.registry.get(process_id)
        self._subscribers.setdefault(process_id, set()).add(session)
        last = max(after_seq, session.subscriptions.get(process_id, 0))
        session.subscriptions[process_id] = last
        for event in proc.replay(last):
            self._send_event(session, event)
        return proc.next_seq

    def unsubscribe(self, session: Session, process_id: str) -> None:
        session.subscriptions.pop(process_id, None)
        self._subscribers.get(process_id, set()).discard(session)

    # -- event routing --------------------------------------------------------

    def _route(self, event: Event) -> None:
        """Fan one registry event out; its JSON is encoded once for all receivers."""
        if isinstance(event, StartedEvent | RemovedEvent):
            targets = self._watchers()
            if isinstance(event, RemovedEvent):
                for session in self._subscribers.pop(event.process_id, set()):
                    session.subscriptions.pop(event.process_id, None)
        else:
            targets = set(self._subscribers.get(event.process_id, ()))
            if not isinstance(event, OutputEvent):
                targets.update(self._watchers())
        if targets:
            text = encode_event(event)
            for session in targets:
                self._send_event(session, event, text)

    def _watchers(self) -> set[Session]:
        return {s for s in self.sessions.values() if s.watching}

    def _send_event(self, session: Session, event: Event, text: str | None = None) -> None:
        conn = session.connection
        if conn is None:
            return
        if isinstance(event, OutputEvent | ExitedEvent | ClosedEvent):
            last = session.subscriptions.get(event.process_id, 0)
            if event.seq <= last:
                return
            if event.process_id in session.subscriptions:
                session.subscriptions[event.process_id] = event.seq
        text = text if text is not None else encode_event(event)
        conn.notify(text, droppable=isinstance(event, OutputEvent), lane=event.process_id)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def encode_event(event: Event) -> str:
    """`encode(event_notification(event))`, byte for byte, built faster for output.

    Output is most of the traffic: its base64 payload needs no escaping, so the
    text is assembled around it instead of json.dumps scanning every byte.
    """
    if isinstance(event, OutputEvent):
        return "".join(
            (
                '{"jsonrpc":"2.0","method":"process/output","params":{"processId":',
                json.dumps(event.process_id),
                ',"seq":',
                str(event.seq),
                ',"stream":',
                json.dumps(event.stream),
                ',"chunk":"',
                base64.b64encode(event.data).decode("ascii"),
                '"}}',
            )
        )
    return encode(event_notification(event))


class Connection:
    """One client: handshake state, concurrent requests, one bounded outgoing queue."""

    def __init__(
        self, service: ExecService, write: Write, allowed_actions: frozenset[str] | None = None
    ) -> None:
        self.service = service
        self._write = write
        self.allowed_actions = allowed_actions
        self.session: Session | None = None
        self._initialized = False
        # Outgoing: responses and other messages in `_control`, written first;
        # each process's notifications in a lane of their own (seq order), the
        # lanes taken in turn, so a flood never queues ahead of another
        # process's output (a tty echo) or of a response.
        self._control: deque[str] = deque()
        self._lanes: dict[str, deque[tuple[str, bool]]] = {}
        self._queued_bytes = 0
        self._output_bytes = 0  # the droppable part of `_queued_bytes`
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.dropped_notifications = 0
        self._close_callbacks: list[Callable[[], Awaitable[None]]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._writer = asyncio.create_task(self._write_loop())

    # -- outgoing -------------------------------------------------------------

    def _enqueue(
        self, message: dict[str, Any] | str, lane: str | None = None, output: bool = False
    ) -> None:
        if self._closed:
            return
        text = message if isinstance(message, str) else encode(message)
        self._queued_bytes += len(text)
        if lane is None:
            self._control.append(text)
        else:
            queue = self._lanes.get(lane)
            if queue is None:
                queue = self._lanes[lane] = deque()
            queue.append((text, output))
            if output:
                self._output_bytes += len(text)
        self._wake.set()
        self._check_room()

    def notify(
        self, message: dict[str, Any] | str, droppable: bool = True, lane: str | None = None
    ) -> None:
        """Queue a notification, or drop it if this client has fallen too far behind.

        `lane` is the process the notification is about: its notifications keep
        their order, and while the queue is over its limit a droppable one is
        dropped only if that process has others still queued (a flood loses its
        output, a quiet process next to it does not). Process events other than
        output (`exited`, `closed`, `started`, `removed`) are small and never
        dropped: a client that only listens (as Codex's does, it never calls
        `process/read`) would otherwise wait forever for the end of a process
        that printed faster than it reads.
        """
        if (
            droppable
            and self._queued_bytes > self.service.config.notification_queue_bytes
            and (lane is None or self._lanes.get(lane))
        ):
            self.dropped_notifications += 1
            return
        self._enqueue(message, lane, output=droppable and lane is not None)

    def _next_message(self) -> str | None:
        """Responses first, then one notification of each process in turn."""
        if self._control:
            return self._control.popleft()
        if not self._lanes:
            return None
        lane, queue = next(iter(self._lanes.items()))
        text, output = queue.popleft()
        del self._lanes[lane]
        if queue:
            self._lanes[lane] = queue  # to the back of the round
        if output:
            self._output_bytes -= len(text)
        return text

    async def _write_loop(self) -> None:
        while True:
            text = self._next_message()
            if text is None:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._queued_bytes -= len(text)
            self._check_room()
            try:
                await self._write(text)
            except Exception:  # the transport is gone; its close will follow
                log.debug("write failed; closing connection", exc_info=True)
                self._closed = True
                self._room.set()
                return

    def _check_room(self, *_: object) -> None:
        config = self.service.config
        full = (
            # Output is bounded by dropping it; what counts is what cannot be dropped.
            self._queued_bytes - self._output_bytes > config.notification_queue_bytes
            or len(self._tasks) >= config.max_requests_in_flight
        )
        if full and not self._closed:
            self._room.clear()
        else:
            self._room.set()

    async def ready(self) -> None:
        """Backpressure: transports await this after each frame before reading the next.

        It lets the frame's request run, then waits while this client has more
        than `notification_queue_bytes` of responses (and other messages that
        are never dropped) it has not taken or
        `max_requests_in_flight` requests running. A client that sends without
        reading is then no longer read (its socket fills up, TCP pushes back)
        instead of growing the server's memory; other clients are unaffected.
        """
        await asyncio.sleep(0)
        await self._room.wait()

    # -- incoming -------------------------------------------------------------

    def receive(self, frame: str | bytes) -> None:
        """Handle one frame without blocking: handshake inline, requests as tasks."""
        if self._closed:
            return
        if len(frame) > self.service.config.max_message_bytes:
            self.refuse_oversized()
            return
        try:
            request = parse_message(frame)
        except ExecError as exc:
            self._error(request_id_of(frame), exc)
            return
        method, params, req_id = request.method, request.params, request.id
        if method == "initialized":
            self._initialized = self.session is not None
            if not request.is_notification:  # sent as a request: it still gets an answer
                self._enqueue(response(req_id, {}))
            return
        if request.is_notification:
            return  # unknown notifications are ignored (JSON-RPC 2.0)
        if method == "initialize":
            self._guard(req_id, lambda: self._initialize(params))
            return
        handler = self.service.methods.get(method)
        if handler is None:
            self._error(req_id, MethodNotFoundError(f"method {method!r} not found"))
            return
        if self.session is None:
            msg = "client must call initialize before using process methods"
            self._error(req_id, InvalidRequestError(msg))
            return
        if not self._initialized:
            msg = "client must send initialized before using process methods"
            self._error(req_id, InvalidRequestError(msg))
            return
        if not self._may_call(method):
            msg = f"permission denied: {method} needs the execute permission on exec"
            self._error(req_id, InvalidRequestError(msg))
            return
        ctx = CallContext(self.service, self, self.session.id, self.service.root_dir)
        task = asyncio.create_task(self._call(req_id, handler, ctx, params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._check_room)
        self._check_room()

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Awaited when this connection closes (method modules stop their background work)."""
        self._close_callbacks.append(callback)

    def _may_call(self, method: str) -> bool:
        allowed = self.allowed_actions
        return allowed is None or "execute" in allowed or method in READ_ONLY_METHODS

    def refuse_oversized(self) -> None:
        """SPEC 7: a frame over `max_message_bytes` is refused; the connection goes on."""
        limit = self.service.config.max_message_bytes
        self._error(None, InvalidRequestError(f"message larger than {limit} bytes refused"))

    def _guard(self, req_id: RequestId | None, fn: Callable[[], Any]) -> None:
        try:
            self._enqueue(response(req_id, fn()))
        except ExecError as exc:
            self._error(req_id, exc)

    def _initialize(self, params: Any) -> dict[str, Any]:
        if self.session is not None:
            raise InvalidRequestError("initialize may only be sent once per connection")
        p = parse_params(InitializeParams, params)
        self.session = self.service.open_session(p.resume_session_id, self)
        ctx = CallContext(self.service, self, self.session.id, self.service.root_dir)
        return {
            "sessionId": self.session.id,
            "serverInfo": {"name": "jupyter-exec", "version": __version__},
            "capabilities": self.service.capabilities,
            # Codex reads its capabilities from here, and skips `environment/info`.
            "environmentInfo": environment.environment_info(ctx),
        }

    async def _call(
        self, req_id: RequestId | None, handler: Handler, ctx: CallContext, params: Any
    ) -> None:
        try:
            result = await handler(ctx, params)
        except ExecError as exc:
            self._error(req_id, exc)
            return
        except Exception:
            log.exception("internal error in a request handler")
            self._error(req_id, InternalError("internal server error"))
            return
        self._enqueue(response(req_id, result))
        for callback in ctx.after_response:
            callback()

    def _error(self, req_id: RequestId | None, exc: ExecError) -> None:
        self._enqueue(error_response(req_id, exc.to_wire()))

    async def aclose(self) -> None:
        """The transport closed: stop requests, detach the session (it may resume)."""
        if self._closed and self._writer.done():
            return
        self._closed = True
        self._room.set()
        for task in list(self._tasks):
            task.cancel()
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._tasks, self._writer, return_exceptions=True)
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("connection close callback failed")
        if self.session is not None and self.session.connection is self:
            self.service.detach_session(self.session)


# -- process/* handlers (SPEC 4) ------------------------------------------------


def _session(ctx: CallContext) -> Session:
    return ctx.service.sessions[ctx.session_id]


async def _start(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(StartParams, params)
    service = ctx.service
    service.registry.start(p, ctx.session_id, service.config.default_lifetime)
    session = _session(ctx)
    ctx.after_response.append(lambda: _subscribe_if_kept(service, session, p.process_id))
    return {"processId": p.process_id, "sandboxType": "none"}


def _subscribe_if_kept(service: ExecService, session: Session, process_id: str) -> None:
    if service.registry.find(process_id) is not None:
        service.subscribe(session, process_id, 0)


async def _read(ctx: CallContext, params: Any) -> dict[str, Any]:
    outcome = await ctx.service.registry.read(parse_params(ReadParams, params))
    return read_result(outcome)


def read_result(outcome: ReadOutcome) -> dict[str, Any]:
    info = outcome.info
    return ReadResult(
        chunks=outcome.chunks,
        next_seq=outcome.next_seq,
        first_seq=info.first_seq,
        exited=info.state != "running",
        exit_code=info.exit_code,
        signal=info.signal,
        closed=info.state == "closed",
        failure=info.failure,
        matched=outcome.matched,
        timed_out=info.timed_out,
        limit_exceeded=info.limit_exceeded,
    ).wire()


async def _write(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(WriteParams, params)
    status = ctx.service.registry.write(p.process_id, p.data(), p.eof, p.write_id)
    return {"status": status}


async def _signal(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(SignalParams, params)
    ctx.service.registry.signal(p.process_id, p.signum())
    return {}


async def _terminate(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(TerminateParams, params)
    return {"running": ctx.service.registry.terminate(p.process_id, p.grace_ms / 1000)}


async def _resize(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ResizeParams, params)
    ctx.service.registry.resize(p.process_id, p.rows, p.cols)
    return {}


async def _subscribe(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(SubscribeParams, params)
    service, session = ctx.service, _session(ctx)
    service.registry.get(p.process_id)  # unknown id: error before anything is sent
    next_seq = service.registry.get(p.process_id).next_seq
    ctx.after_response.append(lambda: _subscribe_replay(service, session, p))
    return {"nextSeq": next_seq}


def _subscribe_replay(service: ExecService, session: Session, p: SubscribeParams) -> None:
    with contextlib.suppress(ExecError):
        service.subscribe(session, p.process_id, p.after_seq)


async def _unsubscribe(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ProcessParams, params)
    ctx.service.registry.get(p.process_id)
    ctx.service.unsubscribe(_session(ctx), p.process_id)
    return {}


async def _remove(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Terminate if running, then forget the process now (so its id can be reused)."""
    p = parse_params(ProcessParams, params)
    await ctx.service.registry.remove(p.process_id)
    return {}


async def _list(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ListParams, params)
    if p.watch:
        _session(ctx).watching = True
    return {"processes": [info.wire() for info in ctx.service.registry.list_processes()]}


PROCESS_METHODS: dict[str, Handler] = {
    "process/start": _start,
    "process/read": _read,
    "process/write": _write,
    "process/signal": _signal,
    "process/terminate": _terminate,
    "process/resize": _resize,
    "process/subscribe": _subscribe,
    "process/unsubscribe": _unsubscribe,
    "process/list": _list,
    "process/remove": _remove,
}
