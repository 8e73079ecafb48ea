"""Newline-delimited JSON framing: stdio, the exec daemon's unix socket (SPEC 1).

A frame is one JSON message; it never holds a raw newline (JSON escapes them
inside strings, so a newline can only be whitespace between tokens). Reading
lines off a stream is I/O: `core.line_pump`.
"""

from __future__ import annotations

__all__ = ["as_line", "line_framing"]


def as_line(frame: str | bytes) -> bytes:
    """One frame as one line (frames are opaque: str or bytes)."""
    return (frame.encode() if isinstance(frame, str) else frame) + b"\n"


def line_framing(length: int) -> tuple[bytes, bytes]:
    """A message's framing as a line (codec.Framing): a newline after it."""
    return b"", b"\n"
