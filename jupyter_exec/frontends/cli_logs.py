"""``jupyter exec logs [-f] [--tail N] [--after SEQ] ID``: a process's output, as it is.

Kept out of cli.py (which stays about commands). Stdout gets the process's
output byte for byte (docs/cli.md), so ``logs ID > file`` or ``| grep`` sees
only what the process wrote. Output a retention limit dropped (SPEC 4
`firstSeq`, 6) is not passed over in silence: where it is missing, `gap_line`
goes to stderr, the line the REST download puts in its body. Every read goes
through `ExecClient.pages` and `Page.with_gaps`, with ``-f`` too (long-polls),
so ``-f`` says a gap where plain ``logs`` does. `write_out` is the raw writer
the other commands that copy output (``run``, ``attach``) use as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..render.presentation import gap_line

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient, Page

__all__ = ["FOLLOW_WAIT_MS", "add_logs_parser", "logs_command", "write_out"]

#: `logs -f`: how long one read waits for output (a long-poll; it returns at the first).
FOLLOW_WAIT_MS = 30_000


def add_logs_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``logs`` subcommand on `sub` (argparse's subparsers action)."""
    logs: argparse.ArgumentParser = sub.add_parser("logs", help="print a process's output")
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep following until it ends")
    logs.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")
    logs.add_argument("--after", type=int, default=0, metavar="SEQ", help="only after SEQ")
    return logs


def write_out(data: bytes, stream: str = "stdout") -> None:
    """All of `data` to fd 1 (or 2 for ``stderr``), unbuffered: the two stay in order."""
    fd = 2 if stream == "stderr" else 1
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def logs_command(client: ExecClient, args: argparse.Namespace) -> int:
    """Write the output (module docstring); 2 for a bad line, 1 when the server is lost."""
    after, out = args.after, _LogsOutput()
    if args.tail is not None:
        if args.tail < 0:
            return _fail(f"--tail {args.tail}: the number of lines must be 0 or more", 2)
        after = await _write_tail(client, args.id, after, args.tail, out)
    if args.follow:
        with _leave_on_interrupt():
            if not await _follow(client, args, after, out):
                return _fail("lost the server, and found none again", 1)
        return 0
    async for page in client.pages(args.id, after):
        out.page(page)
    return 0


class _LogsOutput:
    """The process's output to stdout, and `gap_line` to stderr where some was dropped."""

    def __init__(self) -> None:
        self.last = b""  # the last byte written to stdout
        try:  # one file (a terminal, `2>&1`): the line goes on a line of its own there
            self.shared = os.path.samestat(os.fstat(1), os.fstat(2))
        except OSError:
            self.shared = False

    def page(self, page: Page) -> None:
        for piece in page.with_gaps():
            if isinstance(piece, range):
                write_out(gap_line(piece, self.last if self.shared else b""), "stderr")
                self.last = b"\n" if self.shared else self.last
            else:
                self.data(piece.data)

    def data(self, data: bytes) -> None:
        if data:
            write_out(data)
            self.last = data[-1:]


async def _follow(
    client: ExecClient, args: argparse.Namespace, after: int, out: _LogsOutput
) -> bool:
    """`logs -f` until the process closes (True), page by page, through a restart or
    crash of the server too: its processes live on in the exec daemon, so reconnect (to
    the next server, or to the daemon itself) and go on from the last seq read, so
    nothing is written twice, and output dropped meanwhile is said as ever. False when
    no server came back."""
    own: ExecClient | None = None
    try:
        while True:
            try:
                pages = client.pages(args.id, after, wait_ms=FOLLOW_WAIT_MS, follow=True)
                async for page in pages:
                    out.page(page)
                    after = page.cursor
                return True
            except ConnectionError:
                if own is not None:
                    await own.close()
                from .cli_daemon import reconnect

                own = await reconnect(args.url, args.token)
                if own is None:
                    return False
                client = own
    finally:
        if own is not None:
            await own.close()


async def _write_tail(
    client: ExecClient, process_id: str, after: int, lines: int, out: _LogsOutput
) -> int:
    """Write the last ``lines`` lines there are now, as ``tail -n`` does; the seq to go
    on after. One pass counts newlines page by page; the chunk where the lines begin
    is read again to write it from there."""
    counts: list[tuple[int, int]] = []  # (seq, newlines in chunk), oldest first
    open_line = 0  # 1 when the output ends in a line without its newline yet
    async for page in client.pages(process_id, after):
        counts.extend((c.seq, c.data.count(b"\n")) for c in page.chunks)
        if page.chunks:
            open_line = 0 if page.chunks[-1].data.endswith(b"\n") else 1
    if lines == 0:
        return counts[-1][0] if counts else after
    seen = open_line
    for seq, count in reversed(counts):
        seen += count
        if seen > lines:  # this chunk holds the newline just before the last `lines` lines
            chunk = (await client.read(process_id, seq - 1, max_bytes=1)).chunks[0]
            cut = -1
            for _ in range(seen - lines):
                cut = chunk.data.index(b"\n", cut + 1)
            out.data(chunk.data[cut + 1 :])
            return seq
    return after  # fewer lines than that: all of them (and the gaps before them)


@contextlib.contextmanager
def _leave_on_interrupt() -> Iterator[None]:
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        yield


def _fail(message: str, status: int) -> int:
    print(f"jupyter exec logs: {message}", file=sys.stderr)
    return status
