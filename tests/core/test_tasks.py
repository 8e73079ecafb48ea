"""TaskOwner: no task outlives its owner, none is forgotten, a failure is logged."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest

from jupyter_exec.core.tasks import TaskOwner


def test_aclose_cancels_what_runs_and_awaits_every_task() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # its cleanup runs to the end before aclose returns
            ended.append(name)

    async def check() -> None:
        owner = TaskOwner("a test")
        tasks = [owner.start(forever("a")), owner.start(forever("b"))]
        await asyncio.sleep(0)
        assert len(owner) == 2
        await owner.aclose()
        assert sorted(ended) == ["a", "b"] and all(t.cancelled() for t in tasks)
        assert len(owner) == 0

    asyncio.run(check())


def test_aclose_without_cancel_lets_them_finish() -> None:
    async def check() -> None:
        owner = TaskOwner("a test")
        task = owner.start(asyncio.sleep(0.05, result="done"))
        await owner.aclose(cancel=False)
        assert task.result() == "done"

    asyncio.run(check())


def test_nothing_starts_after_aclose_and_the_coroutine_is_not_left_unawaited() -> None:
    async def check() -> None:
        owner = TaskOwner("a closed owner")
        await owner.aclose()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail
            with pytest.raises(RuntimeError, match="a closed owner is closed"):
                owner.start(asyncio.sleep(0))

    asyncio.run(check())


def test_a_failing_task_is_logged_and_on_done_sees_the_count_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: list[int] = []

    async def fail() -> None:
        raise ValueError("boom")

    async def check() -> None:
        owner = TaskOwner("the failing owner", on_done=lambda: counts.append(len(owner)))
        owner.start(fail())
        cancelled = owner.start(asyncio.sleep(3600))
        await asyncio.sleep(0.01)
        await owner.aclose()
        assert cancelled.cancelled()

    with caplog.at_level(logging.ERROR, logger="jupyter_exec.core.tasks"):
        asyncio.run(check())
    failures = [r for r in caplog.records if r.name == "jupyter_exec.core.tasks"]
    assert [r.getMessage() for r in failures] == ["a task of the failing owner failed"]
    assert failures[0].exc_info is not None and "boom" in str(failures[0].exc_info[1])
    assert counts == [1, 0]  # one callback per task, after it left the owner


def test_adopt_owns_a_server_handler_started_by_asyncio() -> None:
    """A connection handler of `asyncio.start_server` is cancelled and awaited by
    `aclose`; one arriving after it never runs its body."""
    ran: list[str] = []

    async def check() -> None:
        owner = TaskOwner("a test server")
        entered = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                with owner.adopt():
                    ran.append("in")
                    entered.set()
                    await reader.read()  # the client never writes: only aclose ends this
            finally:
                ran.append("out")
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(entered.wait(), 10)
        assert len(owner) == 1
        await owner.aclose()
        assert ran == ["in", "out"] and len(owner) == 0
        _, late = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(50):  # the late handler runs only its `finally`
            await asyncio.sleep(0.01)
            if ran.count("out") == 2:
                break
        assert ran == ["in", "out", "out"]
        for w in (writer, late):
            w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(check())


def test_aclose_returns_when_a_task_ended_but_its_callbacks_have_not_run() -> None:
    """A finished task whose done callback is still queued: a gather of finished tasks
    need not yield to the loop (3.12+), so aclose must not wait for that callback (it
    spun at 100 % CPU: `jupyter exec run --embedded` never exited under 3.13)."""

    async def quick() -> int:
        return 1

    async def check() -> None:
        owner = TaskOwner("a test")
        task = owner.start(quick())
        await asyncio.sleep(0)  # the task ran to its end; its done callback is queued
        assert task.done() and len(owner) == 1
        await owner.aclose()
        assert len(owner) == 0

    asyncio.run(check())
