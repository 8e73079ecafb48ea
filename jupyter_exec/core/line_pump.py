"""Newline-delimited frames read off a stream into a connection (stdio, the daemon socket).

The framing itself is plain data (`wire.lines`); this is the reading, with
asyncio: a line over the stream's limit is discarded and refused, never buffered.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["pump_lines"]


async def pump_lines(reader: asyncio.StreamReader, connection: Any, limit: int) -> None:
    """Feed newline-delimited frames to a connection until EOF (stdio, the daemon socket)."""
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                connection.receive(exc.partial)
            return
        except asyncio.LimitOverrunError:
            await _discard_line(reader)
            connection.refuse_oversized()
            continue
        if line.strip():
            connection.receive(line)
            await connection.ready()


async def _discard_line(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return
