"""A client resumes its session through the next server and loses no line (SPEC 2, 3)."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.client import ExecClient
from tests.daemon.harness import daemons_stopped, start_server
from tests.daemon.test_server_restart import COUNTER
from tests.service import stop_process


class Seen:
    """process/output notifications of one process, by seq."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}

    def __call__(self, method: str, params: dict[str, Any]) -> None:
        if method == "process/output" and params["processId"] == "count":
            self.chunks[params["seq"]] = base64.b64decode(params["chunk"])

    @property
    def last(self) -> int:
        return max(self.chunks, default=0)


async def wait_for(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_session_resumes_through_the_next_server(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        first = start_server(tmp_path)
        try:
            seen = Seen()
            session = asyncio.run(_before(first.url, first.token, seen))
        finally:
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(30)
        time.sleep(1)
        second = start_server(tmp_path)
        try:
            asyncio.run(_after(second.url, second.token, session, seen))
        finally:
            stop_process(second.proc, 20)


async def _before(url: str, token: str, seen: Seen) -> str:
    client = await ExecClient.connect(url, token)
    client.listeners.append(seen)
    await client.start("count", [sys.executable, "-c", COUNTER])
    await wait_for(lambda: seen.last >= 10)
    return client.session_id  # the client "dies" with the server: no close


async def _after(url: str, token: str, session: str, seen: Seen) -> None:
    client = await ExecClient.connect(url, token, resume_session_id=session)
    assert client.session_id == session  # the daemon kept it while no server was up
    seen_before = seen.last
    client.listeners.append(seen)
    # Its subscription came back: live output arrives without subscribing again.
    await wait_for(lambda: seen.last > seen_before + 5)
    # What went out while the relay was dying is read back from the last seq seen.
    after = seen_before
    while after < seen.last:
        chunks = (await client.read("count", after)).chunks
        for c in chunks:
            seen.chunks.setdefault(c.seq, c.data)
        after = chunks[-1].seq
    data = b"".join(seen.chunks[s] for s in sorted(seen.chunks))
    assert sorted(seen.chunks) == list(range(1, seen.last + 1))
    got = [int(n) for n in re.findall(rb"^(\d+)$", data, re.MULTILINE)]
    assert got == list(range(len(got))) and len(got) > 30
    await client.terminate("count")
    assert (await client.wait("count", timeout=30)).exit_code == 143
    await client.close()
