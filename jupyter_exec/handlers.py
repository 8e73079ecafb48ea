"""Tornado handlers: the `api/exec/ws` websocket and the REST mirror (SPEC 1, 8).

Parse, authorize, hand to `dispatch`/the registry, write. Authentication is
Jupyter's own (token header, `?token=`, cookie) and authorization uses the
resource `exec`: a connection needs `read`; methods that change something
(start, write, signal, terminate, resize, fs writes) also need `execute`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web, websocket

from .dispatch import Connection, ExecService
from .errors import (
    ExecError,
    InvalidParamsError,
    InvalidRequestError,
    TooManyProcessesError,
    UnknownProcessError,
)
from .mcp_http import McpHandler
from .protocol import StartParams, parse_params

AUTH_RESOURCE = "exec"


class ExecWebSocketHandler(WebSocketMixin, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE
    connection: Connection | None = None
    _flushing: Awaitable[None] | None = None

    def initialize(self, service: ExecService) -> None:
        """The route table's kwargs: the app's service (nothing reaches back into the app)."""
        self.service = service

    @property
    def max_message_size(self) -> int:
        return self.service.config.max_message_bytes

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        can = self.authorizer.is_authorized
        if not await ensure_async(can(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403, "not authorized to read exec")
        self._may_execute = bool(await ensure_async(can(self, user, "execute", AUTH_RESOURCE)))
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.set_nodelay(True)  # small frames (a response, an exit) go out at once
        actions = {"read", "execute"} if self._may_execute else {"read"}
        self.connection = self.service.connect(self._send, allowed_actions=frozenset(actions))

    async def _send(self, message: bytes) -> None:
        """Write one message; wait for the one before it to be flushed (the drain).

        Tornado wraps each write's flush in a new task, so awaiting every
        message would cost a trip round the event loop each; with one in
        flight the wait is usually over already, and memory stays two
        messages beyond the socket. bytes with binary=False: a text frame.
        """
        before, self._flushing = self._flushing, self.write_message(message)
        if before is not None:
            await before

    async def on_message(self, message: str | bytes) -> None:
        # Tornado reads the next message only when this returns: backpressure (dispatch).
        if self.connection is not None:
            self.connection.receive(message)
            await self.connection.ready()

    def on_close(self) -> None:
        super().on_close()
        if self.connection is not None:
            connection, self.connection = self.connection, None
            self.service.spawn(connection.aclose())


_STATUS = [
    (UnknownProcessError, 404),
    (TooManyProcessesError, 429),
    (InvalidParamsError, 400),
    (InvalidRequestError, 409),
]


def _http_error(exc: ExecError) -> web.HTTPError:
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    return web.HTTPError(status, exc.message, reason=exc.message if status < 500 else None)


class ExecAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, service: ExecService) -> None:
        self.service = service

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class ProcessesHandler(ExecAPIHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        self.write_json([info.wire() for info in self.service.registry.list_processes()])

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body is not valid JSON") from None
        try:
            params = parse_params(StartParams, body)
            info = self.service.registry.start(params, None, self.service.config.default_lifetime)
        except ExecError as exc:
            raise _http_error(exc) from None
        self.set_header("Location", self.request.path.rstrip("/") + "/" + params.process_id)
        self.write_json(info.wire(), 201)


class ProcessHandler(ExecAPIHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self, process_id: str) -> None:
        try:
            self.write_json(self.service.registry.get(process_id).info().wire())
        except ExecError as exc:
            raise _http_error(exc) from None

    @web.authenticated
    @authorized(action="execute")
    async def delete(self, process_id: str) -> None:
        try:
            await self.service.registry.remove(process_id)
        except ExecError as exc:
            raise _http_error(exc) from None
        self.set_status(204)
        self.finish()


class OutputHandler(ExecAPIHandler):
    """The raw bytes of a process's output, streamed from memory and log."""

    @web.authenticated
    @authorized(action="read")
    async def get(self, process_id: str) -> None:
        try:
            proc = self.service.registry.get(process_id)
            after = int(self.get_argument("afterSeq", "0"))
        except ValueError:
            raise web.HTTPError(400, "afterSeq must be a non-negative integer") from None
        except ExecError as exc:
            raise _http_error(exc) from None
        stream = self.get_argument("stream", None)
        if after < 0 or stream not in (None, "stdout", "stderr", "pty"):
            raise web.HTTPError(400, "afterSeq must be >= 0 and stream one of stdout, stderr, pty")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{process_id}.log"')
        while True:
            chunks = proc.store.read(after, 1 << 20)
            if not chunks:
                break
            after = chunks[-1].seq
            self.write(b"".join(c.data for c in chunks if stream is None or c.stream == stream))
            await self.flush()
        self.finish()


def handlers(service: ExecService) -> list[tuple[str, type[Any], dict[str, Any]]]:
    """The route table; each handler gets ``service`` at construction (``initialize``)."""
    process = r"/api/exec/processes/(?P<process_id>[^/]+)"
    kwargs = {"service": service}
    return [
        (r"/api/exec/ws", ExecWebSocketHandler, kwargs),
        (r"/api/exec/mcp", McpHandler, kwargs),
        (r"/api/exec/processes/?", ProcessesHandler, kwargs),
        (process + r"/output", OutputHandler, kwargs),
        (process + r"/?", ProcessHandler, kwargs),
    ]
