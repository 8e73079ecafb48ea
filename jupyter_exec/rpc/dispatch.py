"""The service and its connections: frame in -> method table -> response out.

Transports (the tornado handler, the standalone websocket and stdio servers,
the in-process client) create one `Connection` per client with
`service.connect(write)` and feed it frames with `receive`; everything the
connection sends goes through `write`, one encoded message (UTF-8 JSON bytes)
per call, in the order the connection's `Outbox` decides (SPEC 5: responses
first, then every subscription's cursor in turn, losslessly). This is the one
place where exceptions become JSON-RPC errors (SPEC 7).

Method families are tables of `context.Handler`: `process_methods`,
`fs_methods`, `environment`. None of them imports this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .._version import __version__
from ..core import limits, sandbox
from ..core.registry import Registry
from ..wire.codec import Framing, encode
from ..wire.errors import ExecError, InternalError, InvalidRequestError, MethodNotFoundError
from ..wire.protocol import (
    InitializeParams,
    RequestId,
    error_response,
    parse_message,
    parse_params,
    request_id_of,
    response,
)
from ..wire.rules import FrontRules
from . import discovery, environment, fs_methods, fs_stream, fs_walk, http_methods, network_proxy
from .context import CallContext, ClientError, Handler
from .outbox import Outbox, Write
from .process_methods import PROCESS_METHODS
from .sessions import Session, Sessions

log = logging.getLogger(__name__)

__all__ = ["READ_ONLY_METHODS", "Connection", "ExecService", "ServiceConfig", "Write"]

#: Methods that only look. Under Jupyter authorization every other method needs
#: the `execute` action on resource `exec` (handlers.py).
READ_ONLY_METHODS = frozenset(
    {
        "process/read",
        "process/list",
        "process/wait",
        "queue/list",
        "process/subscribe",
        "process/unsubscribe",
        "environment/info",
        "environment/status",
        "environmentConfig/read",
        "fs/walk",
        "capabilityRoots/discoverV1",
        "capabilities/discoverV2",
        "fs/getMetadata",
        "fs/readFile",
        "fs/readDirectory",
        "fs/watchMissing",
        "daemon/settings",
    }
)


def _this_process() -> FrontRules:
    return FrontRules("this exec server", Path.cwd().resolve())


@dataclass
class ServiceConfig:
    #: The rules of a connection that brings none of its own (SPEC 3): an in-process
    #: service's one front (serve.py, embedded.py) sets them here.
    rules: FrontRules = field(default_factory=_this_process)
    session_resume_seconds: float = 30.0
    max_message_bytes: int = 16 << 20
    #: Responses (and watchers' events) waiting for one client beyond which the
    #: transport stops reading its requests. Output is never queued (SPEC 5).
    control_queue_bytes: int = 8 << 20
    #: Requests of one connection running at once; beyond it the transport stops
    #: reading that client (with the limit above, this bounds its memory).
    max_requests_in_flight: int = 256


class ExecService:
    """Server-wide: the registry, the sessions, the method table."""

    def __init__(self, registry: Registry, config: ServiceConfig | None = None) -> None:
        self.registry = registry
        self.config = config or ServiceConfig()
        self.sessions = Sessions(self.config.session_resume_seconds, self._session_expired)
        self.methods: dict[str, Handler] = {
            **PROCESS_METHODS,
            **fs_methods.FS_METHODS,
            **environment.ENVIRONMENT_METHODS,
            **fs_walk.WALK_METHODS,
            **fs_stream.STREAM_METHODS,
            **discovery.DISCOVERY_METHODS,
            **http_methods.HTTP_METHODS,
        }
        self.capabilities: dict[str, Any] = {
            "processes": True,
            "tty": True,
            "untilPattern": True,
            "resume": True,
            "watch": True,
            "scheduling": True,  # SPEC 11 restart, queue, after
            **fs_methods.CAPABILITIES,
            **environment.CAPABILITIES,
            **http_methods.CAPABILITIES,
            **network_proxy.CAPABILITIES,
            **limits.CAPABILITIES,
        }
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        registry.add_listener(self.sessions.route)

    def connect(
        self,
        write: Write,
        allowed_actions: frozenset[str] | None = None,
        rules: FrontRules | None = None,
        framing: Framing | None = None,
    ) -> Connection:
        """A new client. `allowed_actions` None means everything is allowed; `rules`
        are its front's (None: the service's own, `ServiceConfig.rules`); `write`
        gets messages framed by `framing` (codec.py) if given."""
        connection = Connection(self, write, allowed_actions, rules or self.config.rules, framing)
        self._connections.add(connection)
        return connection

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task this service owns (awaited at `aclose`)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _session_expired(self, session: Session) -> None:
        self.registry.terminate_owned_by(session.id)

    def forget(self, connection: Connection) -> None:
        self._connections.discard(connection)

    async def aclose(self) -> None:
        for connection in list(self._connections):
            await connection.aclose()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.registry.remove_listener(self.sessions.route)
        await self.registry.aclose()


class Connection:
    """One client: handshake state, concurrent requests, its outbox."""

    def __init__(
        self,
        service: ExecService,
        write: Write,
        allowed_actions: frozenset[str] | None,
        rules: FrontRules,
        framing: Framing | None = None,
    ) -> None:
        self.service = service
        self.allowed_actions = allowed_actions
        self.rules = rules
        self.session: Session | None = None
        self.client_name = "unknown"
        self._initialized = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._close_callbacks: list[Callable[[], Awaitable[None]]] = []
        #: Our requests to the client awaiting its answer, by id (`ask`).
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._asked = 0
        self._slots = asyncio.Event()  # set while fewer than max_requests_in_flight run
        self._slots.set()
        self.outbox = Outbox(
            write, service.registry.find, service.config.control_queue_bytes, framing
        )

    # -- outgoing -------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if not self._closed:
            self.outbox.send(encode(message))

    def notify(self, message: dict[str, Any]) -> None:
        """A notification of a method family (e.g. `fs/missingChanged`), never dropped."""
        self._send(message)

    async def drained(self) -> None:
        """Outlet: wait while this client's queued messages exceed `control_queue_bytes`."""
        if not self._closed and not self.outbox.failed:
            await self.outbox.room.wait()

    def _check_slots(self, *_: object) -> None:
        if len(self._tasks) >= self.service.config.max_requests_in_flight and not self._closed:
            self._slots.clear()
        else:
            self._slots.set()

    async def ready(self) -> None:
        """Backpressure: transports await this after each frame before reading the next.

        It lets the frame's request run, then waits while this client has more
        than `control_queue_bytes` of responses it has not taken, or
        `max_requests_in_flight` requests running. A client that sends without
        reading is then no longer read (its socket fills up, TCP pushes back)
        instead of growing the server's memory; other clients are unaffected.
        """
        await asyncio.sleep(0)
        await self._slots.wait()
        if not self._closed and not self.outbox.failed:
            await self.outbox.room.wait()

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
            if not self._answered(frame):
                self._error(request_id_of(frame), exc)
            return
        method, params, req_id = request.method, request.params, request.id
        if method == "initialized":
            self._initialized = self.session is not None
            if not request.is_notification:  # sent as a request: it still gets an answer
                self._send(response(req_id, {}))
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
        refusal = self._refusal(method)
        if refusal is not None:
            self._error(req_id, InvalidRequestError(refusal))
            return
        task = asyncio.create_task(self._call(req_id, handler, self._context(), params))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._check_slots)
        self._check_slots()

    def _refusal(self, method: str) -> str | None:
        """Why `method` may not run now (SPEC 2 handshake, authorization), or None."""
        if self.session is None:
            return "client must call initialize before using process methods"
        if not self._initialized:
            return "client must send initialized before using process methods"
        allowed = self.allowed_actions
        if allowed is None or "execute" in allowed or method in READ_ONLY_METHODS:
            return None
        return f"permission denied: {method} needs the execute permission on exec"

    def _context(self) -> CallContext:
        service = self.service
        assert self.session is not None
        return CallContext(
            registry=service.registry,
            sessions=service.sessions,
            session=self.session,
            connection=self,
            rules=self.rules,
            client_name=self.client_name,
        )

    # -- requests to the client (e.g. `network/policyRequest`) ------------------------

    async def ask(self, method: str, params: Any, timeout: float | None) -> Any:
        """Send a request to the client and await its result (Outlet; docstring there)."""
        if self._closed:
            raise ConnectionError("the client is gone")
        self._asked += 1
        request_id = self._asked
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def _answered(self, frame: str | bytes) -> bool:
        """If `frame` answers one of our `ask`s, hand it over; else False."""
        if not self._pending:
            return False
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(message, dict) or "method" in message:
            return False
        future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return False
        error = message.get("error")
        if "result" in message:
            future.set_result(message["result"])
        elif isinstance(error, dict):
            future.set_exception(ClientError(error.get("code"), str(error.get("message"))))
        else:
            return False
        return True

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Awaited when this connection closes (method modules stop their background work)."""
        self._close_callbacks.append(callback)

    def refuse_oversized(self) -> None:
        """SPEC 7: a frame over `max_message_bytes` is refused; the connection goes on."""
        limit = self.service.config.max_message_bytes
        self._error(None, InvalidRequestError(f"message larger than {limit} bytes refused"))

    def _guard(self, req_id: RequestId | None, fn: Callable[[], Any]) -> None:
        try:
            self._send(response(req_id, fn()))
        except ExecError as exc:
            self._error(req_id, exc)

    def _initialize(self, params: Any) -> dict[str, Any]:
        if self.session is not None:
            raise InvalidRequestError("initialize may only be sent once per connection")
        p = parse_params(InitializeParams, params)
        self.session = self.service.sessions.open(p.resume_session_id, self.outbox)
        self.client_name = p.client_name
        return {
            "sessionId": self.session.id,
            "serverInfo": {"name": "jupyter-exec", "version": __version__},
            # The sandbox's are probed once, at the first handshake (core/sandbox.py).
            "capabilities": {**self.service.capabilities, **sandbox.capabilities()},
            # Codex reads its capabilities from here, and skips `environment/info`.
            "environmentInfo": environment.environment_info(self._context()),
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
        self._send(response(req_id, result))
        for callback in ctx.after_response:
            callback()

    def _error(self, req_id: RequestId | None, exc: ExecError) -> None:
        self._send(error_response(req_id, exc.to_wire()))

    async def aclose(self) -> None:
        """The transport closed: stop requests, detach the session (it may resume)."""
        if self._closed:
            return
        self._closed = True
        self._slots.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the client is gone"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.outbox.aclose()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("connection close callback failed")
        if self.session is not None and self.session.outbox is self.outbox:
            self.service.sessions.detach(self.session)
        self.service.forget(self)
