"""SPEC 11 durability: restarts, queues and `after` go on across a SIGKILL of the exec daemon."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from jupyter_exec.client import ClosedEvent, ExecClient, ExitedEvent, OutputEvent, RestartedEvent
from jupyter_exec.daemon.persist import FLUSH_SECONDS, Persister
from jupyter_exec.daemon.start import ensure_daemon
from tests.daemon.harness import daemon_pid, kill_daemon
from tests.daemon.test_daemon import client, read_all
from tests.daemon.test_persist import successor
from tests.wire import embedded


async def until(c: ExecClient, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listed = {p.process_id: p for p in await c.list()}
        if check(listed):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, {k: (p.state, p.restarts) for k, p in listed.items()}
        await asyncio.sleep(0.05)


def test_backoff_queue_and_dependency_keep_their_places_across_a_daemon_sigkill(
    runtime: Path,
) -> None:
    ensure_daemon(runtime)
    first = daemon_pid(runtime)

    async def before() -> None:
        c = await client(runtime)
        policy = {"policy": "on-failure", "maxRestarts": 2, "delayMs": 1000}
        await c.start("crash", ["sh", "-c", "echo run; exit 5"], restart=policy)
        await c.start("slot", ["sh", "-c", "sleep 3; echo slot"], queue="gpu")
        await c.start("waiter", ["echo", "queued"], queue="gpu")
        await c.start("dep", ["sh", "-c", "sleep 3; echo dep"])
        await c.start("eval", ["echo", "evaluated"], after=["dep"])
        await c.queue_set("other", 3)
        # The second run ended: it waits 2 s for its third (delay doubled).
        await until(c, lambda p: p["crash"].restarts == 1 and p["crash"].state == "restarting")
        listed = {p.process_id: p for p in await c.list()}
        assert (listed["waiter"].state, listed["waiter"].pid) == ("queued", None)
        assert (listed["eval"].state, listed["eval"].pid) == ("queued", None)
        await c.close()

    asyncio.run(before())
    kill_daemon(runtime)
    ensure_daemon(runtime)
    assert daemon_pid(runtime) not in (None, first)

    async def after() -> None:
        c = await client(runtime)
        listed = {p.process_id: p for p in await c.list()}
        assert listed["crash"].restarts >= 1 and listed["crash"].restart_policy is not None
        assert listed["crash"].state in ("restarting", "running", "exited", "closed")
        assert listed["waiter"].queue == "gpu" and listed["eval"].after == ["dep"]
        queues = {q.name: q for q in await c.queues()}
        assert queues["other"].parallel == 3 and queues["gpu"].parallel == 1
        events = [e async for e in c.events("crash", 0)]
        kinds = [type(e).__name__ for e in events]
        assert kinds == [
            "OutputEvent", "RestartedEvent", "OutputEvent", "RestartedEvent", "OutputEvent",
            "ExitedEvent", "ClosedEvent",
        ]  # fmt: skip
        assert [e.seq for e in events] == list(range(1, 8))  # one stream, no seq twice
        restarts = [e for e in events if isinstance(e, RestartedEvent)]
        assert [(r.restarts, r.exit_code) for r in restarts] == [(1, 5), (2, 5)]
        assert isinstance(events[5], ExitedEvent) and events[5].exit_code == 5
        assert all(e.data == b"run\n" for e in events if isinstance(e, OutputEvent))
        assert isinstance(events[-1], ClosedEvent)
        for pid in ("slot", "waiter", "dep", "eval"):
            assert (await c.wait(pid, timeout=30)).exit_code == 0, pid
        listed = {p.process_id: p for p in await c.list()}
        assert listed["waiter"].started_at >= listed["slot"].exited_at  # in its place
        assert listed["eval"].started_at >= listed["dep"].exited_at
        assert await read_all(c, "waiter") == b"queued\n"  # once: not lost, not doubled
        assert await read_all(c, "eval") == b"evaluated\n"
        await c.close()

    asyncio.run(after())


async def test_a_successor_registry_takes_up_the_queue_its_limits_and_the_restarts(
    tmp_path: Path,
) -> None:
    """In one loop (test_persist.py's way): what the records alone bring back."""
    async with embedded(tmp_path, durable_logs=True) as (service, c):
        persister = Persister(service.registry, tmp_path / "procs")
        policy = {"policy": "on-failure", "maxRestarts": 1, "delayMs": 10}
        await c.start("r", ["sh", "-c", "echo run; exit 2"], restart=policy)
        await c.wait("r", 30)
        await c.start("slot", ["sleep", "30"], queue="q")
        await c.start("w", ["echo", "waited"], queue="q")
        await c.queue_set("wide", 4)
        await asyncio.sleep(FLUSH_SECONDS * 4)
        persister.close()
        for part in ("procs", "logs"):
            shutil.copytree(tmp_path / part, tmp_path / "next" / part)
    (tmp_path / "next" / "queues.json").write_text((tmp_path / "queues.json").read_text())
    async with successor(tmp_path / "next") as (_, c, count):
        assert count == 3
        events = [e async for e in c.events("r", 0)]
        assert [type(e).__name__ for e in events] == [
            "OutputEvent", "RestartedEvent", "OutputEvent", "ExitedEvent", "ClosedEvent",
        ]  # fmt: skip
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        listed = {p.process_id: p for p in await c.list()}
        assert (listed["r"].restarts, listed["r"].exit_code) == (1, 2)
        assert listed["slot"].state == "lost"  # nothing held it: its slot is free
        assert (await c.wait("w", 30)).exit_code == 0
        assert await read_all(c, "w") == b"waited\n"
        assert {q.name: q.parallel for q in await c.queues()} == {"q": 1, "wide": 4}
    (tmp_path / "next" / "queues.json").write_text("{not json")
    async with successor(tmp_path / "next") as (_, c, _count):
        assert await c.queues() == []  # unreadable: forgotten (each has 1 slot again)
