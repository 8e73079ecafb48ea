"""One websocket client of an `ExecService` (the `websockets` library).

Shared by the standalone server (serve.py) and the exec daemon's handed-over
Jupyter websockets (daemon/handover.py), so both speak SPEC 1 the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rpc.dispatch import ExecService
from ..wire.rules import FrontRules

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

#: Bytes a connection may buffer before `send` waits: several output frames in flight.
WRITE_LIMIT = 1 << 20


async def serve_websocket(
    service: ExecService,
    ws: ServerConnection,
    allowed_actions: frozenset[str] | None = None,
    rules: FrontRules | None = None,
) -> None:
    """Feed frames in, write messages out, until the client or the service goes.

    `rules`: the front's the client came through (None: the service's own).
    """
    from websockets.exceptions import ConnectionClosed

    async def write(message: bytes) -> None:
        await ws.send(message, text=True)  # UTF-8 JSON already: no decode, no copy

    connection = service.connect(write, allowed_actions, rules)
    try:
        async for frame in ws:
            connection.receive(frame)
            await connection.ready()
    except ConnectionClosed:
        pass
    finally:
        await connection.aclose()
