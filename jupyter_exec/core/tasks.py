"""Tasks with an owner (STYLE.md): every background task belongs to a `TaskOwner`
that cancels and awaits it.

asyncio holds only a weak reference to a task: one nobody keeps may vanish
mid-run, and one nobody awaits hides its exception and outlives what it
worked for. anyio's `TaskGroup` (asyncio's on 3.11+) owns its tasks inside
one ``async with`` block, entered and left by the same task. The objects here
live across calls from many tasks (a connection is made in a transport's
callback and closed from another, the handover listener lives as long as the
daemon, a CLI session installs signal handlers), so each holds a `TaskOwner`:
`start` a coroutine as its task, `aclose` cancels what still runs and awaits
every one. A task that fails with an unexpected exception is logged as it
ends, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskOwner"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskOwner:
    """A set of tasks one object owns: started by it, cancelled and awaited by it."""

    def __init__(self, name: str, on_done: Callable[[], None] | None = None) -> None:
        #: Who owns them, for the log of a task that failed.
        self.name = name
        self._on_done = on_done
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        """Tasks still running."""
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` as a task of this owner. After `aclose` it is refused (closed,
        never run): nothing may start once its owner has stopped."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name} is closed: no new task")
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    @contextlib.contextmanager
    def adopt(self) -> Iterator[None]:
        """Own the running task for the block: a server's connection handler, which
        asyncio starts itself, is then cancelled and awaited with the others. After
        `aclose` the handler is cancelled at once."""
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            raise asyncio.CancelledError
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a task of %s failed", self.name, exc_info=task.exception())
        if self._on_done is not None:
            self._on_done()

    async def aclose(self, cancel: bool = True) -> None:
        """Refuse new tasks, cancel the running ones (unless `cancel` is False: then let
        them finish), and await every one; their exceptions were logged already."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            if cancel:
                for task in tasks:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Done, whether or not their done callbacks ran yet: a gather of finished
            # tasks need not yield to the loop (3.12+), so waiting for those would spin.
            self._tasks.difference_update(tasks)
