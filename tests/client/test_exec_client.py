"""`ExecClient.pages` and its sync twin: the one cursor reader (SPEC 4 `process/read`).

A real standalone server over websockets, one shared process that printed more
than 2 MiB of numbered lines (several 1-MiB pages), and an embedded service
whose retention drops output (the `firstSeq` gap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.client import PAGE_BYTES, ExecClient, OutputEvent, SyncExecClient
from jupyter_exec.client.exec_client import Chunk, ClosedEvent, ExitedEvent, Page
from jupyter_exec.wire.errors import InvalidParamsError, InvalidRequestError
from tests.service import NUMBERED, Standalone, assert_numbered, embedded, py, standalone


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with standalone(cwd=tmp_path_factory.mktemp("pages")) as s:
        yield s


@pytest.fixture(scope="module")
def sync(server: Standalone) -> Iterator[SyncExecClient]:
    client = SyncExecClient.connect(server.bare_url, server.token)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def numbered(sync: SyncExecClient) -> str:
    """The id of a closed process whose output is `NUMBERED`'s lines."""
    sync.start("numbered", NUMBERED, lifetime="detached")
    assert sync.wait("numbered", 60).exit_code == 0
    return "numbered"


def text_of(pages: list[Page]) -> str:
    return b"".join(page.data for page in pages).decode()


def test_sync_pages_read_every_line_once_across_1_mib_pages(
    sync: SyncExecClient, numbered: str
) -> None:
    pages = list(sync.pages(numbered))
    assert_numbered(text_of(pages))
    assert len(pages) >= 4 and all(len(page.data) <= PAGE_BYTES for page in pages)
    # Each page continues from the one before's nextSeq - 1: no chunk skipped or read twice.
    assert [p.after_seq for p in pages] == [0] + [p.next_seq - 1 for p in pages[:-1]]
    last = pages[-1]  # nothing more now; it says how the process ended
    assert not last.chunks and last.closed and last.exit_code == 0
    assert not any(page.dropped for page in pages)


async def test_async_pages_continue_any_cursor_in_small_pages(
    server: Standalone, numbered: str
) -> None:
    async with await ExecClient.connect(server.bare_url, server.token) as client:
        first = await client.read(numbered, 0, max_bytes=1)  # at least one chunk, always
        assert len(first.chunks) == 1
        pages = [
            page async for page in client.pages(numbered, first.next_seq - 1, max_bytes=300_000)
        ]
        assert_numbered(first.data.decode() + text_of(pages))
        assert all(len(page.chunks) >= 1 for page in pages[:-1])


def test_follow_reads_a_closed_process_to_its_end_first(
    sync: SyncExecClient, numbered: str
) -> None:
    start = time.monotonic()
    pages = list(sync.pages(numbered, wait_ms=10_000, follow=True))
    assert time.monotonic() - start < 8  # no read waited: there was output, then the end
    assert pages[0].closed and pages[0].chunks  # closed already, with pages left to read
    assert_numbered(text_of(pages))
    assert pages[-1].closed and not pages[-1].chunks


async def test_follow_waits_for_output_and_ends_when_closed(server: Standalone) -> None:
    async with await ExecClient.connect(server.bare_url, server.token) as client:
        code = "import time\nprint('a', flush=True)\ntime.sleep(1)\nprint('b')"
        await client.start("slow", py(code))
        pages = [page async for page in client.pages("slow", wait_ms=200, follow=True)]
        assert text_of(pages) == "a\nb\n"
        assert any(not page.chunks and not page.exited for page in pages)  # yielded while quiet
        ends = [page for page in pages if page.closed and not page.chunks]
        assert ends == [pages[-1]] and pages[-1].exit_code == 0


async def test_wait_ms_waits_for_the_first_page_only(server: Standalone) -> None:
    async with await ExecClient.connect(server.bare_url, server.token) as client:
        code = "import os, time\ntime.sleep(0.3)\nos.write(1, b'late\\n')\ntime.sleep(30)"
        await client.start("late", py(code))
        try:
            start = time.monotonic()
            pages = [page async for page in client.pages("late", wait_ms=10_000)]
            assert text_of(pages) == "late\n"
            # It waited for the output, not after it: the last (empty) read came back at once.
            assert time.monotonic() - start < 8 and not pages[-1].exited
        finally:
            await client.terminate("late", 0)


async def test_output_dropped_by_retention_is_reported_once_and_not_looped_on(
    tmp_path: Path,
) -> None:
    limits = {"retained_bytes_per_process": 1000, "log_bytes_per_process": 0}
    async with embedded(tmp_path, **limits) as (_, client):
        code = "import sys, time\nfor i in range(50):\n    print('%03d' % i + '.' * 95, flush=True); time.sleep(0.002)"
        await client.start("p", py(code))
        await client.wait("p", 10)
        for follow in (False, True):
            pages = [page async for page in client.pages("p", max_bytes=100, follow=follow)]
            first = pages[0]
            assert len(first.dropped) > 0 and first.dropped == range(1, first.first_seq)
            assert first.chunks[0].seq >= first.first_seq
            assert not any(page.dropped for page in pages[1:])
            assert text_of(pages).endswith("049" + "." * 95 + "\n")
            assert pages[-1].closed and not pages[-1].chunks


def test_a_gap_after_chunks_the_log_still_holds_is_told_where_it_is() -> None:
    """A log that stopped growing (a full disk) keeps its chunks below `firstSeq`; later
    chunks memory let go are the gap, between those and the first chunk still held."""

    def page(after: int, seqs: list[int], first_seq: int) -> Page:
        chunks = [Chunk(seq, "stdout", b"%d\n" % seq) for seq in seqs]
        next_seq = (seqs or [after])[-1] + 1
        return Page(chunks, next_seq, first_seq, True, 0, None, True, None, after_seq=after)

    def pieces(p: Page) -> list[int | range]:
        return [x if isinstance(x, range) else x.seq for x in p.with_gaps()]

    straddling = page(0, [1, 2, 3, 9, 10], 9)
    assert pieces(straddling) == [1, 2, 3, range(4, 9), 9, 10]
    assert straddling.dropped == range(4, 9)
    below = page(0, [1, 2, 3], 9)  # the page ends before the gap: the next one tells it
    assert pieces(below) == [1, 2, 3] and not below.dropped
    assert pieces(page(3, [9], 9)) == [range(4, 9), 9]
    assert pieces(page(3, [], 9)) == [range(4, 9)]  # nothing left after it
    whole = page(0, [1, 2], 1)
    assert pieces(whole) == [1, 2] and whole.dropped == range(1, 1)


async def test_bad_ids_and_cursors_are_clear_errors_and_the_client_goes_on(
    server: Standalone, sync: SyncExecClient
) -> None:
    async with await ExecClient.connect(server.bare_url, server.token) as client:
        with pytest.raises(InvalidRequestError, match="unknown process id nosuch"):
            [page async for page in client.pages("nosuch")]
        with pytest.raises(InvalidParamsError, match="afterSeq"):
            [page async for page in client.pages("numbered", -1)]
        assert "numbered" in {info.process_id for info in await client.list()}
    with pytest.raises(InvalidRequestError, match="unknown process id nosuch"):
        list(sync.pages("nosuch"))
    assert "numbered" in {info.process_id for info in sync.list()}


def test_events_recover_what_the_subscription_no_longer_holds(
    sync: SyncExecClient, numbered: str
) -> None:
    """`events()` replays memory (1 MiB), and fills the rest from `pages()`."""
    events = list(sync.events(numbered))
    output = b"".join(e.data for e in events if isinstance(e, OutputEvent))
    assert_numbered(output.decode())
    assert isinstance(events[-2], ExitedEvent) and isinstance(events[-1], ClosedEvent)
    assert [e.seq for e in events] == sorted({e.seq for e in events})


async def test_events_of_a_process_that_restarted_and_ended_before_they_were_asked(
    server: Standalone,
) -> None:
    """The starting connection is subscribed at once (SPEC 4): what came before
    `events()` is kept for it. Each restart is yielded in its place (`process/read`
    cannot give one back), and the end at once, not after the idle check."""
    from jupyter_exec.client.exec_client import IDLE_CHECK_SECONDS, RestartedEvent

    async with await ExecClient.connect(server.bare_url, server.token) as client:
        policy = {"policy": "on-failure", "maxRestarts": 2, "delayMs": 0}
        await client.start("early", ["sh", "-c", "echo run; exit 3"], restart=policy)
        await client.wait("early", 30)
        await asyncio.sleep(0.2)  # its closed has come too, to no `events()` yet
        started = time.monotonic()
        events = [event async for event in client.events("early")]
        assert time.monotonic() - started < IDLE_CHECK_SECONDS / 2
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "OutputEvent", "RestartedEvent", "OutputEvent", "RestartedEvent", "OutputEvent",
        "ExitedEvent", "ClosedEvent",
    ]  # fmt: skip
    assert [e.seq for e in events] == list(range(1, 8))  # one stream, no gap
    restarts = [e for e in events if isinstance(e, RestartedEvent)]
    assert [(r.restarts, r.exit_code) for r in restarts] == [(1, 3), (2, 3)]
