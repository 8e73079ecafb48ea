"""The service and its connections: frame in -> method table -> response out.

Transports (the tornado handler, the standalone websocket and stdio servers,
the in-process client) create one `ServerConnection` per client (the server's
end; `frontends.connection.Connection` is a front's end of a server) with
`service.connect(write)` and feed it frames with `receive`; everything the
connection sends goes through `write`, one encoded message (UTF-8 JSON bytes)
per call, in the order the connection's `Outbox` decides (SPEC 5: responses
first, then every subscription's cursor in turn, losslessly). This is the one
place where exceptions become JSON-RPC errors (SPEC 7).

Method families declare tables of `context.Method` (handler + the action a
caller needs) beside their handlers: `process_methods`, `fs_methods`,
`environment`, ...; the service grows only through `add_methods`. None of them
imports this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from .._version import __version__
from ..core import limits, sandbox
from ..core.registry import Registry
from ..core.tasks import TaskOwner
from ..wire.codec import Framing, encode
from ..wire.errors import (
    ConnectionLostError,
    ExecError,
    InternalError,
    InvalidRequestError,
    MethodNotFoundError,
)
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
from .context import EXECUTE, READ, CallContext, ClientError, Handler, Method
from .outbox import Outbox, Write
from .process_methods import PROCESS_METHODS
from .sessions import Session, Sessions

log = logging.getLogger(__name__)

__all__ = ["ExecService", "ServerConnection", "ServiceConfig", "Write"]


@dataclass
class ServiceConfig:
    """No defaults here: `service.build_service` fills every field from config.py."""

    #: The rules of a connection that brings none of its own (SPEC 3): an in-process
    #: service's one front (serve.py, embedded.py) sets them here.
    rules: FrontRules
    session_resume_seconds: float
    max_message_bytes: int
    #: Responses (and watchers' events) waiting for one client beyond which the
    #: transport stops reading its requests. Output is never queued (SPEC 5).
    control_queue_bytes: int
    #: Requests of one connection running at once; beyond it the transport stops
    #: reading that client (with the limit above, this bounds its memory).
    max_requests_in_flight: int


class ExecService:
    """Server-wide: the registry, the sessions, the method table."""

    def __init__(self, registry: Registry, config: ServiceConfig) -> None:
        self.registry = registry
        self.config = config
        self.sessions = Sessions(self.config.session_resume_seconds, self._session_expired)
        self._methods: dict[str, Method] = {}
        for family in (
            PROCESS_METHODS,
            fs_methods.FS_METHODS,
            environment.ENVIRONMENT_METHODS,
            fs_walk.WALK_METHODS,
            fs_stream.STREAM_METHODS,
            discovery.DISCOVERY_METHODS,
            http_methods.HTTP_METHODS,
        ):
            self.add_methods(family)
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
        self._connections: set[ServerConnection] = set()
        #: Work a request leaves running past its connection (`CallContext.tasks`).
        self.tasks = TaskOwner("the exec service")
        registry.add_listener(self.sessions.route)

    @property
    def methods(self) -> Mapping[str, Method]:
        """Every method this service answers, with the action its caller needs."""
        return MappingProxyType(self._methods)

    def add_methods(self, methods: Mapping[str, Method]) -> None:
        """Grow the method table by a family's declared methods (a layer above adds its
        own this way, e.g. the daemon's `daemon/*`). A name already taken is a bug:
        it would silently replace a handler and its permission."""
        taken = self._methods.keys() & methods.keys()
        if taken:
            raise ValueError(f"methods already defined: {', '.join(sorted(taken))}")
        for name, method in methods.items():
            if method.action not in (READ, EXECUTE):
                raise ValueError(f"{name}: unknown action {method.action!r}")
        self._methods.update(methods)

    def connect(
        self,
        write: Write,
        allowed_actions: frozenset[str] | None = None,
        rules: FrontRules | None = None,
        framing: Framing | None = None,
    ) -> ServerConnection:
        """A new client. `allowed_actions` None means everything is allowed; `rules`
        are its front's (None: the service's own, `ServiceConfig.rules`); `write`
        gets messages framed by `framing` (codec.py) if given."""
        rules = rules or self.config.rules
        connection = ServerConnection(self, write, allowed_actions, rules, framing)
        self._connections.add(connection)
        return connection

    def _session_expired(self, session: Session) -> None:
        self.registry.terminate_owned_by(session.id)

    def forget(self, connection: ServerConnection) -> None:
        self._connections.discard(connection)

    async def aclose(self) -> None:
        for connection in list(self._connections):
            await connection.aclose()
        self.registry.remove_listener(self.sessions.route)
        await self.registry.aclose()
        await self.tasks.aclose()


class ServerConnection:
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
        #: Its requests running (each a task: SPEC 1, they run concurrently).
        self._tasks = TaskOwner("a client connection", on_done=self._check_slots)
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

    def _check_slots(self) -> None:
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
        declared = self.service.methods.get(method)
        if declared is None:
            self._error(req_id, MethodNotFoundError(f"method {method!r} not found"))
            return
        refusal = self._refusal(method, declared.action)
        if refusal is not None:
            self._error(req_id, InvalidRequestError(refusal))
            return
        self._tasks.start(self._call(req_id, declared.handler, self._context(), params))
        self._check_slots()

    def _refusal(self, method: str, action: str) -> str | None:
        """Why `method` (needing `action`) may not run now (SPEC 2 handshake,
        authorization), or None. Every connection may read: its transport let it in."""
        if self.session is None:
            return "client must call initialize before using process methods"
        if not self._initialized:
            return "client must send initialized before using process methods"
        allowed = self.allowed_actions
        if allowed is None or action == READ or action in allowed:
            return None
        return f"permission denied: {method} needs the {action} permission on exec"

    def _context(self) -> CallContext:
        service = self.service
        assert self.session is not None
        return CallContext(
            registry=service.registry,
            sessions=service.sessions,
            session=self.session,
            connection=self,
            rules=self.rules,
            tasks=service.tasks,
            client_name=self.client_name,
        )

    # -- requests to the client (e.g. `network/policyRequest`) ------------------------

    async def ask(self, method: str, params: Any, timeout: float | None) -> Any:
        """Send a request to the client and await its result (Outlet; docstring there)."""
        if self._closed:
            raise ConnectionLostError("the client is gone")
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
                future.set_exception(ConnectionLostError("the client is gone"))
        await self._tasks.aclose()
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
