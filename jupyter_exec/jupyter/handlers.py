"""Tornado handlers: the `api/exec/ws` websocket and the REST mirror (SPEC 1, 8).

Authenticate, authorize, hand each websocket to the exec daemon (or relay it,
relay.py); nothing else.
Authentication is Jupyter's own (token header, `?token=`, cookie) and
authorization uses the resource `exec`: a connection needs `read`; methods
that change something (start, write, signal, terminate, resize, fs writes)
also need `execute`, which the daemon enforces from the relay's hello.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import iostream, web, websocket

from ..client.unix_transport import DaemonStreams
from ..render.presentation import gap_line
from ..wire.errors import (
    ExecError,
    InvalidParamsError,
    InvalidRequestError,
    TooManyProcessesError,
    UnknownProcessError,
)
from .mcp_http import McpHandler
from .relay import DaemonLink

__all__ = [
    "AUTH_RESOURCE",
    "FIRST_SEQ_HEADER",
    "ExecAPIHandler",
    "ExecWebSocketHandler",
    "OutputHandler",
    "ProcessHandler",
    "ProcessesHandler",
    "ShutdownHandler",
    "handlers",
]


AUTH_RESOURCE = "exec"
#: The output download's `firstSeq` (SPEC 4) as the download began.
FIRST_SEQ_HEADER = "X-Exec-First-Seq"


class ExecWebSocketHandler(WebSocketMixin, JupyterHandler, websocket.WebSocketHandler):
    """One client websocket: handed to the daemon, or relayed 1:1 to a daemon connection."""

    auth_resource = AUTH_RESOURCE
    daemon: DaemonStreams | None = None
    _forward: asyncio.Task[None] | None = None

    def initialize(self, link: DaemonLink, max_message_bytes: int, relay: bool) -> None:
        self.link = link
        self._max_message_bytes = max_message_bytes
        self._relay = relay

    @property
    def max_message_size(self) -> int:
        return self._max_message_bytes

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        can = self.authorizer.is_authorized
        if not await ensure_async(can(self, user, "read", AUTH_RESOURCE)):
            raise web.HTTPError(403, "not authorized to read exec")
        self._may_execute = bool(await ensure_async(can(self, user, "execute", AUTH_RESOURCE)))
        if not await self._hand_over():
            await super().get(*args, **kwargs)

    def _actions(self) -> frozenset[str]:
        return frozenset({"read", "execute"} if self._may_execute else {"read"})

    async def _hand_over(self) -> bool:
        """Give the client's socket to the daemon (daemon/handover.py); False: relay it.

        Relayed instead: TLS (the daemon cannot continue tornado's session),
        `relay_websockets`, a daemon without a handover socket, and requests
        tornado would refuse (it answers those itself).
        """
        stream = getattr(self.request.connection, "stream", None)
        if self._relay or type(stream) is not iostream.IOStream or not self._valid_upgrade():
            return False
        try:
            channel = await self.link.handover_channel()
        except Exception as exc:  # the relay path reports it to the client
            self.log.debug("jupyter-exec: no handover: %s", exc)
            return False
        if channel is None:
            return False
        detached = self.detach()
        early = _unread(detached)
        try:
            await self.link.hand_over(
                channel, detached.socket, self._request_head() + early, self._actions()
            )
        except Exception as exc:
            self.log.error("jupyter-exec: handing a websocket to the exec daemon failed: %s", exc)
        finally:
            detached.close()  # our descriptor only: the daemon holds its own,
            channel.close()  # and starts the handshake once this closes
        return True

    def _valid_upgrade(self) -> bool:
        """A websocket upgrade tornado would accept (a subset: the rest is relayed).

        tornado's own checks (WebSocketHandler.get) answer whatever fails here:
        a request handed over passed Jupyter's `check_origin`, or has no Origin
        and is not marked cross-site, which tornado also accepts.
        """
        headers = self.request.headers
        connection = {part.strip().lower() for part in headers.get("Connection", "").split(",")}
        origin = headers.get("Origin")
        same_site = headers.get("Sec-Fetch-Site") in (None, "same-origin", "none")
        return (
            self.request.version == "HTTP/1.1"
            and headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in connection
            and (self.check_origin(origin) if origin is not None else same_site)
        )

    def _request_head(self) -> bytes:
        """The upgrade request as the client sent it, minus its credentials."""
        url = urlsplit(self.request.uri or "/")
        query = urlencode([(k, v) for k, v in parse_qsl(url.query, True) if k != "token"])
        lines = [f"{self.request.method} {urlunsplit(url._replace(query=query))} HTTP/1.1"]
        lines += [
            f"{name}: {value}"
            for name, value in self.request.headers.get_all()
            if name.lower() not in ("cookie", "authorization")
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.set_nodelay(True)  # small frames (a response, an exit) go out at once
        try:
            self.daemon = await self.link.open(self._actions())
        except Exception as exc:
            self.log.error("jupyter-exec: cannot reach the exec daemon: %s", exc)
            self.close(1011, "the exec daemon is not available")
            return
        self._forward = asyncio.create_task(self._from_daemon(self.daemon))

    async def _from_daemon(self, daemon: DaemonStreams) -> None:
        """Daemon lines out as text frames, unparsed; at most one write in flight.

        Tornado wraps each write's flush in a new task, so awaiting every write
        would cost a trip round the event loop each: the previous one is awaited
        instead (usually done by then), and nothing more is read from the daemon
        meanwhile, so flow control holds end to end.
        """
        flushing: Awaitable[None] | None = None
        try:
            while line := await daemon.reader.readline():
                before, flushing = flushing, self.write_message(line[:-1])
                if before is not None:
                    await before
        except (websocket.WebSocketClosedError, ConnectionError, ValueError):
            pass  # the client left, the daemon left, or a line over the limit
        finally:
            self.close()

    async def on_message(self, message: str | bytes) -> None:
        # Tornado reads the next message only when this returns: backpressure.
        if self.daemon is None:
            return
        data = message.encode() if isinstance(message, str) else message
        # A newline in JSON can only be whitespace: keep the frame one line.
        self.daemon.writer.write(data.replace(b"\n", b" ") + b"\n")
        try:
            await self.daemon.writer.drain()
        except ConnectionError:
            self.close()

    def on_close(self) -> None:
        super().on_close()
        if self._forward is not None:
            self._forward.cancel()
        if self.daemon is not None:
            # The daemon detaches the session (resumable for session_resume_seconds).
            self.daemon.writer.close()


def _unread(stream: iostream.IOStream) -> bytes:
    """What tornado read past the request: frames sent before the 101 go along with it.

    (A client should wait for the 101; tornado itself would read them as
    frames.) tornado's private buffer: b"" should it ever change shape.
    """
    try:
        return bytes(stream._read_buffer[: stream._read_buffer_size])
    except (AttributeError, TypeError):
        return b""


_STATUS = [
    (UnknownProcessError, 404),
    (TooManyProcessesError, 429),
    (InvalidParamsError, 400),
    (InvalidRequestError, 409),
]


def _http_error(exc: ExecError) -> web.HTTPError:
    """The daemon's typed error (errors.error_from_wire) as an HTTP status (SPEC 8)."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    return web.HTTPError(status, exc.message, reason=exc.message if status < 500 else None)


class ExecAPIHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, link: DaemonLink) -> None:
        self.link = link

    async def call(self, method: str, params: Any) -> Any:
        try:
            return await self.link.request(method, params)
        except ExecError as exc:
            raise _http_error(exc) from None

    async def find(self, process_id: str) -> dict[str, Any]:
        """ProcessInfo of one process, or 404."""
        for info in (await self.call("process/list", {}))["processes"]:
            if info["processId"] == process_id:
                return dict(info)
        raise web.HTTPError(404, f"unknown process id {process_id}")

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class ProcessesHandler(ExecAPIHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        self.write_json((await self.call("process/list", {}))["processes"])

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object of process/start params")
        process_id = (await self.call("process/start", body))["processId"]
        self.set_header("Location", self.request.path.rstrip("/") + "/" + process_id)
        self.write_json(await self.find(process_id), 201)


class ProcessHandler(ExecAPIHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self, process_id: str) -> None:
        self.write_json(await self.find(process_id))

    @web.authenticated
    @authorized(action="execute")
    async def delete(self, process_id: str) -> None:
        await self.find(process_id)
        await self.call("process/remove", {"processId": process_id})
        self.set_status(204)
        self.finish()


class OutputHandler(ExecAPIHandler):
    """The raw bytes of a process's output, streamed from the daemon page by page
    (`ExecClient.pages` on the REST connection, as every other reader pages).

    Output a retention limit dropped is not passed over in silence (SPEC 4
    `firstSeq`, 6): where it is missing the download holds one line of its own,
    `gap_line`, and the `X-Exec-First-Seq` header gives `firstSeq` as the download
    began (`afterSeq + 1 <` it: output after the cursor was dropped).
    """

    @web.authenticated
    @authorized(action="read")
    async def get(self, process_id: str) -> None:
        try:
            after = int(self.get_argument("afterSeq", "0"))
        except ValueError:
            raise web.HTTPError(400, "afterSeq must be a non-negative integer") from None
        stream = self.get_argument("stream", None)
        if after < 0 or stream not in (None, "stdout", "stderr", "pty"):
            raise web.HTTPError(400, "afterSeq must be >= 0 and stream one of stdout, stderr, pty")
        await self.find(process_id)
        content_type = "application/octet-stream"
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{process_id}.log"')
        client = await self.link.shared_client()
        first, last = True, b""  # last: the last byte sent (a gap's line starts a line)
        try:
            async for page in client.pages(process_id, after):
                if first:  # nothing is sent yet: headers may still change
                    self.set_header(FIRST_SEQ_HEADER, str(page.first_seq))
                    first = False
                wanted: list[bytes] = []
                for piece in page.with_gaps():
                    if isinstance(piece, range):
                        wanted.append(gap_line(piece, last))
                    elif stream is None or piece.stream == stream:
                        wanted.append(piece.data)
                    else:
                        continue
                    last = wanted[-1][-1:] or last
                if wanted:
                    self.write(b"".join(wanted))
                    await self.flush()
        except ExecError as exc:
            raise _http_error(exc) from None
        self.finish(set_content_type=content_type)  # APIHandler says JSON if nothing was sent


class ShutdownHandler(ExecAPIHandler):
    """`POST api/exec/shutdown`: stop every process and the exec daemon (docs/daemon.md)."""

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        self.write_json({"stopped": await self.link.shutdown()})


def handlers(
    link: DaemonLink, max_message_bytes: int, relay_websockets: bool = False
) -> list[tuple[str, type[Any], dict[str, Any]]]:
    process = r"/api/exec/processes/(?P<process_id>[^/]+)"
    rest = {"link": link}
    return [
        (
            r"/api/exec/ws",
            ExecWebSocketHandler,
            {**rest, "max_message_bytes": max_message_bytes, "relay": relay_websockets},
        ),
        (r"/api/exec/mcp", McpHandler, rest),
        (r"/api/exec/processes/?", ProcessesHandler, rest),
        (process + r"/output", OutputHandler, rest),
        (process + r"/?", ProcessHandler, rest),
        (r"/api/exec/shutdown", ShutdownHandler, rest),
    ]
