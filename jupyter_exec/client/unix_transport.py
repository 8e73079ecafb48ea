"""The client side of the exec daemon's unix socket (daemon/server.py).

`open_daemon` does the hello and returns the raw line streams (the Jupyter
relay forwards them untouched); `connect_daemon` wraps them in an
`ExecClient` (the CLI and magics with no Jupyter server, and the extension's
own REST and activity calls); `open_handover`/`hand_over` pass a client's
websocket to the daemon. No tornado, no server modules.

Every connection but a stop-on-close hold sends its front's rules (`front`:
wire/rules.py, SPEC 3); the daemon applies them to each of its requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..daemon import paths, sockets
from ..wire.errors import DaemonHandshakeError
from ..wire.lines import as_line
from ..wire.rules import FrontRules
from .exec_client import ExecClient, _closer

__all__ = [
    "HANDOVER_TIMEOUT",
    "LINE_LIMIT",
    "DaemonHandshakeError",
    "DaemonStreams",
    "connect_daemon",
    "daemon_front",
    "hand_over",
    "open_daemon",
    "open_handover",
]


#: Longest line the client side accepts: a `process/read` of `max_read_bytes`
#: in base64, with room to spare.
LINE_LIMIT = 64 << 20
#: How long a handover (connect, send, the daemon's answer) may take.
HANDOVER_TIMEOUT = 10.0


@dataclass
class DaemonStreams:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: The daemon's hello answer: `jupyterExecDaemon`, `version`, `pid`.
    hello: dict[str, Any]


async def open_daemon(
    path: Path,
    allowed_actions: Iterable[str] | None = None,
    *,
    front: FrontRules | None = None,
    stop_on_close: bool = False,
) -> DaemonStreams:
    """Connect and say hello with `front`'s rules; raises OSError when nobody listens there.

    Without `front` the daemon applies its fallback rules (daemon/server.py):
    fit for a hold or a shutdown, not for starting processes.
    """
    address, dir_fd = paths.sun_path(path)
    try:
        reader, writer = await asyncio.open_unix_connection(address, limit=LINE_LIMIT)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    hello: dict[str, Any] = {
        "jupyterExecDaemon": paths.daemon_protocol(),
        "allowedActions": None if allowed_actions is None else sorted(allowed_actions),
    }
    if front is not None:
        hello["front"] = front.to_wire()
    if stop_on_close:
        hello["stopOnClose"] = True
    writer.write(as_line(json.dumps(hello)))
    await writer.drain()
    answer_line = await reader.readline()
    try:
        answer = json.loads(answer_line)
    except ValueError:
        writer.close()
        raise DaemonHandshakeError(f"the exec daemon at {path} closed the connection") from None
    if "error" in answer:
        writer.close()
        raise DaemonHandshakeError(str(answer["error"]))
    return DaemonStreams(reader, writer, answer)


def daemon_front(name: str) -> FrontRules:
    """The rules of a client that talks to the daemon itself (the CLI, the magics, MCP
    stdio with no server up): its own cwd as root, its own environment, and detached
    processes, which outlive it as they would a server."""
    return FrontRules.here(name, default_lifetime="detached")


async def connect_daemon(
    path: Path,
    *,
    front: FrontRules | None = None,
    client_name: str = "jupyter-exec",
    resume_session_id: str | None = None,
    allowed_actions: Iterable[str] | None = None,
) -> ExecClient:
    """An initialized `ExecClient` over the daemon's socket, under `front`'s rules."""
    streams = await open_daemon(path, allowed_actions, front=front)
    writer = streams.writer

    async def send(text: str) -> None:
        writer.write(as_line(text))
        await writer.drain()

    async def close() -> None:
        writer.close()

    client = ExecClient(send, close)
    reading = asyncio.create_task(client._pump(_lines(streams.reader)))
    client._close = _closer(close, reading)
    await client.initialize(client_name, resume_session_id)
    return client


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readline()
        if not line:
            return
        yield line


def open_handover(path: Path) -> socket.socket | None:
    """A connection to the daemon's handover socket; None if it has none (an older daemon).

    Blocking (the extension calls it in a thread), before it detaches the
    client's socket from tornado: a refusal here leaves the relay to serve it.
    """
    return sockets.connect(path, HANDOVER_TIMEOUT)


def hand_over(
    channel: socket.socket,
    client: socket.socket,
    request_head: bytes,
    allowed_actions: Iterable[str],
    front: FrontRules,
) -> None:
    """Give `client` (a socket whose upgrade request was read) to the daemon; blocking.

    The daemon serves it (daemon/handover.py) once the caller has closed its
    own descriptor of `client`, then `channel`, in that order, under `front`'s
    rules. Raises DaemonHandshakeError if the daemon refused it.
    """
    hello = {
        "jupyterExecDaemon": paths.daemon_protocol(),
        "allowedActions": sorted(allowed_actions),
        "front": front.to_wire(),
        "request": request_head.decode("latin-1"),
    }
    socket.send_fds(channel, [as_line(json.dumps(hello))], [client.fileno()])
    answer = channel.makefile("rb").readline()
    try:
        error = json.loads(answer).get("error")
    except ValueError:
        error = "the exec daemon closed the handover"
    if error is not None:
        raise DaemonHandshakeError(str(error))
