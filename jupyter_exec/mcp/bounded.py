"""Output bounded for a model's context (SPEC 10): head and tail kept, the middle named.

Reads every page after a cursor (`ExecClient.pages`), keeping the first
whole chunks within `max_chars / 2` bytes and the last `max_chars / 2` bytes;
what lies between is replaced by one line that says how many bytes were left
out and which `read_output(after_seq=...)` returns them, starting exactly
where the head ends: an agent pages through any output without a gap or a
repeat by keeping the heads. tty output is rendered as a terminal shows it
(`\\r` redraws collapsed, ANSI stripped, render.py); pipe output is decoded
as UTF-8.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..client.exec_client import END_CURSOR, ExecClient
from ..render.terminal import collapse_progress

__all__ = ["DEFAULT_MAX_CHARS", "Bounded", "collect"]


DEFAULT_MAX_CHARS = 20_000


@dataclass
class Bounded:
    text: str
    truncated: bool
    omitted_bytes: int
    next_seq: int
    exited: bool
    exit_code: int | None
    signal: str | None
    timed_out: bool

    def structured(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code if self.exited else None,
            "signal": self.signal,
            "running": not self.exited,
            "output": self.text,
            "truncated": self.truncated,
            "omitted_bytes": self.omitted_bytes,
            "next_seq": self.next_seq,
            "timed_out": self.timed_out,
        }


class _Window:
    """Head, tail and size of a byte stream seen once, chunk by chunk."""

    def __init__(self, max_chars: int, after_seq: int) -> None:
        self.max_chars = max_chars
        self.half = max_chars // 2
        self.whole: list[bytes] | None = []
        self.head = bytearray()
        self.head_seq = after_seq  # the last chunk entirely in the head
        self.head_full = False  # a chunk did not fit: nothing more goes in
        self.tail: deque[bytes] = deque()
        self.tail_bytes = 0
        self.total = 0
        self.tty = False

    def add(self, seq: int, stream: str, data: bytes) -> None:
        self.tty = self.tty or stream == "pty"
        self.total += len(data)
        if self.whole is not None:
            self.whole.append(data)
            if self.total > self.max_chars:
                self.whole = None
        if not self.head_full:
            if len(self.head) + len(data) <= self.half:
                self.head += data
                self.head_seq = seq
            else:
                # The head ends where a chunk ends, so that `read_output(after_seq=
                # head_seq)` continues it exactly; unless not one whole chunk fits:
                # then it shows that chunk's start, which such a read repeats.
                if not self.head:
                    self.head += data[: self.half]
                self.head_full = True
        self.tail.append(data)
        self.tail_bytes += len(data)
        while self.tail and self.tail_bytes - len(self.tail[0]) >= self.half:
            self.tail_bytes -= len(self.tail.popleft())

    def text(self, process_id: str) -> tuple[str, int]:
        """The bounded text and how many bytes it leaves out."""
        if self.whole is not None:
            return self._render(b"".join(self.whole)), 0
        tail = b"".join(self.tail)[-self.half :]
        omitted = self.total - len(self.head) - len(tail)
        note = (
            f"\n[... {omitted} bytes left out; read them with "
            f"read_output(process_id={process_id!r}, after_seq={self.head_seq}) ...]\n"
        )
        return self._render(bytes(self.head)) + note + self._render(tail), omitted

    def _render(self, data: bytes) -> str:
        text = data.decode("utf-8", errors="replace")
        if not self.tty:
            return text
        # As the screen shows it; trailing blanks (a redraw's padding) carry nothing.
        return "\n".join(line.rstrip() for line in collapse_progress(text).split("\n"))


async def collect(
    client: ExecClient, process_id: str, after_seq: int, upto: int | None, max_chars: int
) -> Bounded:
    """The output with `after_seq < seq <= upto` (None: all there is now), bounded."""
    if upto is None:  # now: a process that keeps printing does not keep this scan going
        upto = (await client.read(process_id, END_CURSOR)).next_seq - 1
    window = _Window(max_chars, after_seq)
    cursor = after_seq
    async with contextlib.aclosing(client.pages(process_id, after_seq)) as pages:
        async for page in pages:
            last = page
            chunks = [c for c in page.chunks if c.seq <= upto]
            for c in chunks:
                window.add(c.seq, c.stream, c.data)
                cursor = c.seq
            if len(chunks) < len(page.chunks):  # past `upto`: the rest is for the next call
                break
    text, omitted = window.text(process_id)
    return Bounded(
        text=text,
        truncated=omitted > 0,
        omitted_bytes=omitted,
        next_seq=cursor + 1 if cursor > after_seq or last.chunks else last.next_seq,
        exited=last.exited,
        exit_code=last.exit_code,
        signal=last.signal,
        timed_out=last.timed_out,
    )
