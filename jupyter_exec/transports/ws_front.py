"""Websocket clients of an `ExecService`, on websockets' sans-I/O `ServerProtocol`.

Shared by the standalone server (serve.py) and the exec daemon's handed-over
Jupyter websockets (daemon/handover.py), so both speak SPEC 1 the same way.
The library's public sans-I/O core parses requests and frames and writes
handshakes, frames and closes; this module is its asyncio face: the
transport, flow control, keepalive pings, timeouts. So a socket accepted here
and one adopted from Jupyter with the request already read are served alike,
and nothing leans on the library's asyncio `Server`, whose constructor
changed between websockets 16 and 17.

It is also the short path for output (docs/benchmarks.md): the service
builds each message inside its text frame (`text_frame`, RFC 6455 5.2: a
server's frames are unmasked, and no extension is negotiated), so 43 KB of
output are copied once between the encoder and the socket instead of once
more by `send_text`, and go to the transport at once; a writer waits only
while the transport holds more than `WRITE_LIMIT` bytes the client has not
taken. Every other frame (pong, ping, close) is the library's, flushed as
soon as it is made, so frames never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from http import HTTPStatus

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..rpc.dispatch import ExecService, ServerConnection
from ..wire.rules import FrontRules

__all__ = [
    "CLOSE_TIMEOUT",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "WRITE_LIMIT",
    "Check",
    "WebSocketClient",
    "WebSocketClients",
    "text_frame",
]


log = logging.getLogger("jupyter_exec.transports.ws")

#: Bytes the transport may buffer before a writer waits: several output frames in flight.
WRITE_LIMIT = 1 << 20
#: How long a client may take to send its upgrade request.
OPEN_TIMEOUT = 10.0
#: How long closing waits for the client's close frame and end of stream.
CLOSE_TIMEOUT = 10.0
#: Keepalive (websockets' defaults): a ping this often; no pong by the next one closes.
PING_INTERVAL = 20.0

#: The opening-handshake gate: None accepts the request, else (status, body).
Check = Callable[[Request], tuple[HTTPStatus, str] | None]


class WebSocketClient(asyncio.Protocol):
    """One websocket client, from its upgrade request to its close.

    `rules` are the front's it came through (None: the service's own); `head`
    is what was already read from the socket (a handed-over request), fed
    before anything the socket itself delivers.
    """

    def __init__(
        self,
        clients: WebSocketClients,
        allowed_actions: frozenset[str] | None,
        rules: FrontRules | None,
        head: bytes = b"",
    ) -> None:
        self._clients = clients
        self._allowed = allowed_actions
        self._rules = rules
        self._head = head
        self._ws = ServerProtocol(max_size=clients.max_message_bytes, logger=log)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._dropping = False
        self._pinged = False
        self._pings = 0
        self._fragments: list[bytes] = []
        self._text = True  # the message being received is a text one
        #: Messages received and not yet handed to the service (reading pauses meanwhile).
        self._inbox: deque[bytes] = deque()
        self._arrived = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.opened: asyncio.Future[None] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_LIMIT)
        self._clients.started(self)
        self._timer = self._loop.call_later(OPEN_TIMEOUT, self._open_timed_out)
        if self._head:
            self.data_received(self._head)

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, Frame) and self._ws.state is State.OPEN and self.opened.done():
                self._frame(event)
        self._flush()
        if self._ws.close_expected():
            self._drop_later(self._clients.close_timeout)
        if self._inbox and self._transport is not None:
            self._transport.pause_reading()  # until the service took them (backpressure)

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()
        self._ws.data_to_send()  # nowhere to send it
        if self._timer is not None:
            self._timer.cancel()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("the client left before the handshake"))
            self.opened.exception()  # retrieved: nobody need wait for it
        if not self.closed.done():
            self.closed.set_result(None)
        self._arrived.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- the service's side -----------------------------------------------------------

    async def write(self, frame: bytes) -> None:
        """Send one text frame (`text_frame` framing); wait while the client lags."""
        if self._ws.state is not State.OPEN or self._transport is None:
            raise ConnectionError("the websocket is closed")
        self._transport.write(frame)
        if not self._writable.is_set():
            await self._writable.wait()
            if self.closed.done():
                raise ConnectionError("the websocket is closed")

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Start the closing handshake; the connection drops after `CLOSE_TIMEOUT` at most."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(code, reason)
            self._flush()
            self._drop_later(self._clients.close_timeout)
        elif self._ws.state is State.CONNECTING and self._transport is not None:
            self._transport.abort()

    async def serve(self) -> None:
        """Once open, hand messages to a service connection until the websocket closes."""
        try:
            await self.opened
        except ConnectionError:
            return
        service = self._clients.service
        connection = service.connect(self.write, self._allowed, self._rules, text_frame)
        try:
            await self._pump(connection)
        finally:
            await connection.aclose()
            self.close(CloseCode.GOING_AWAY)  # if still open: the service let go of it

    async def _pump(self, connection: ServerConnection) -> None:
        while not self.closed.done():
            while self._inbox:
                connection.receive(self._inbox.popleft())
                await connection.ready()
            if self._transport is not None and not self.closed.done():
                self._transport.resume_reading()
            self._arrived.clear()
            await self._arrived.wait()

    # -- the protocol's events ----------------------------------------------------------

    def _answer(self, request: Request) -> None:
        refusal = self._clients.check(request) if self._clients.check is not None else None
        response = self._ws.reject(*refusal) if refusal is not None else self._ws.accept(request)
        self._ws.send_response(response)
        if self._ws.state is State.OPEN:
            self.opened.set_result(None)
            self._schedule(PING_INTERVAL, self._keepalive)
        else:
            self.opened.set_exception(ConnectionError(f"refused: {response.status_code}"))
            self.opened.exception()
            self._drop_later(self._clients.close_timeout)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self._pinged = False
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            return  # a ping (the protocol answered it) or a close
        # SPEC 1: a message is one frame or its fragments; text and binary alike.
        if frame.opcode is not Opcode.CONT:
            self._text = frame.opcode is Opcode.TEXT
        self._fragments.append(bytes(frame.data))  # bytes already: no copy
        if not frame.fin:
            return
        message = self._fragments[0] if len(self._fragments) == 1 else b"".join(self._fragments)
        self._fragments.clear()
        if self._text:
            try:
                message.decode()  # RFC 6455 8.1: a text message is UTF-8, else 1007
            except UnicodeDecodeError as exc:
                self._ws.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        self._inbox.append(message)
        self._arrived.set()

    def _keepalive(self) -> None:
        if self._ws.state is not State.OPEN:
            return
        if self._pinged:  # no pong since the last ping: the client is gone
            self._ws.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()
            self._drop_later(self._clients.close_timeout)
            return
        self._pings += 1
        self._pinged = True
        self._ws.send_ping(struct.pack("!I", self._pings))
        self._flush()
        self._schedule(PING_INTERVAL, self._keepalive)

    # -- the transport ----------------------------------------------------------------

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._ws.data_to_send()
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the protocol's end of stream: half-close
                transport.write_eof()
            else:
                transport.close()

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)

    def _drop_later(self, delay: float) -> None:
        """A client that does not finish closing in time is cut off."""
        if self._transport is not None and not self._dropping:
            self._dropping = True
            self._schedule(delay, self._transport.abort)

    def _open_timed_out(self) -> None:
        if self._ws.state is State.CONNECTING and self._transport is not None:
            log.info("a websocket client sent no upgrade request in %.0f s", OPEN_TIMEOUT)
            self._transport.abort()


def text_frame(length: int) -> tuple[bytes, bytes]:
    """The header of a final, unmasked text frame of `length` bytes (RFC 6455 5.2)."""
    if length < 126:
        return bytes((0x81, length)), b""
    if length < 1 << 16:
        return _HEADER_16.pack(0x81, 126, length), b""
    return _HEADER_64.pack(0x81, 127, length), b""


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class WebSocketClients:
    """The websocket clients of one service: started, served, counted and closed together."""

    def __init__(
        self,
        service: ExecService,
        max_message_bytes: int,
        check: Check | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.service = service
        self.max_message_bytes = max_message_bytes
        self.check = check
        self.close_timeout = close_timeout
        self._tasks: dict[WebSocketClient, asyncio.Task[None]] = {}

    @property
    def count(self) -> int:
        """Clients connected (the exec daemon counts them for its idle exit)."""
        return len(self._tasks)

    def accept(self) -> WebSocketClient:
        """A protocol for `loop.create_server`: every client may do everything."""
        return WebSocketClient(self, None, None)

    def adopt(
        self, allowed_actions: frozenset[str] | None, rules: FrontRules, head: bytes
    ) -> WebSocketClient:
        """A protocol for a socket whose upgrade request `head` was read by someone else."""
        return WebSocketClient(self, allowed_actions, rules, head)

    def started(self, client: WebSocketClient) -> None:
        task = asyncio.create_task(self._serve(client))
        self._tasks[client] = task

    async def _serve(self, client: WebSocketClient) -> None:
        try:
            await client.serve()
        except Exception:
            log.warning("a websocket client failed", exc_info=True)
            client.close(CloseCode.INTERNAL_ERROR)
        finally:
            self._tasks.pop(client, None)

    async def aclose(self, reason: str) -> None:
        """Close every client (1001 going away) and wait until they are gone."""
        for client in list(self._tasks):
            client.close(CloseCode.GOING_AWAY, reason)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self.close_timeout + 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
