"""Newline-delimited JSON framing: stdio, the exec daemon's unix socket (SPEC 1).

A frame is one JSON message; it never holds a raw newline (JSON escapes them
inside strings, so a newline can only be whitespace between tokens).
"""

from __future__ import annotations

import asyncio
from typing import Any


def as_line(frame: str | bytes) -> bytes:
    """One frame as one line (frames are opaque: str or bytes)."""
    return (frame.encode() if isinstance(frame, str) else frame) + b"\n"


def line_framing(length: int) -> tuple[bytes, bytes]:
    """A message's framing as a line (codec.Framing): a newline after it."""
    return b"", b"\n"


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
