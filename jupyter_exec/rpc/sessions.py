"""Sessions (SPEC 2) and the routing of registry events to them (SPEC 5).

A session outlives its connection for `session_resume_seconds`, with its
cursors: a client that resumes carries on from the last seq it was sent. The
router does no encoding for subscribers: an event only wakes the outboxes
that follow that process, and each pulls from its own cursor. Watchers
(`process/list` with `watch`) get the lifecycle events as control messages,
except `exited`/`closed` of a process they follow, which come in seq order
from the cursor.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..wire.codec import encode_event
from ..wire.errors import InvalidRequestError
from ..wire.events import Event, OutputEvent, RemovedEvent, StartedEvent
from .outbox import Outbox

__all__ = ["Session", "Sessions"]


@dataclass(eq=False)
class Session:
    id: str
    outbox: Outbox | None = None
    #: process id -> last seq sent (the cursors, SPEC 5).
    cursors: dict[str, int] = field(default_factory=dict)
    watching: bool = False
    #: Which lifecycle events a watcher is told (None: all; a confined front's scope).
    sees: Callable[[Event], bool] | None = None
    expiry: asyncio.TimerHandle | None = None


class Sessions:
    """Every session of a service, who follows which process, and the event router."""

    def __init__(self, resume_seconds: float, on_expired: Callable[[Session], None]) -> None:
        self.resume_seconds = resume_seconds
        self._on_expired = on_expired
        self.by_id: dict[str, Session] = {}
        self._followers: dict[str, set[Session]] = {}

    def open(self, resume_id: str | None, outbox: Outbox) -> Session:
        """A new session, or a detached one resumed (its cursors come back, SPEC 2)."""
        if resume_id is not None:
            session = self.by_id.get(resume_id)
            if session is None:
                raise InvalidRequestError(f"unknown or expired session {resume_id}")
            if session.outbox is not None:
                raise InvalidRequestError(f"session {resume_id} is attached to another connection")
            if session.expiry is not None:
                session.expiry.cancel()
                session.expiry = None
        else:
            session = Session(uuid.uuid4().hex)
            self.by_id[session.id] = session
        session.outbox = outbox
        outbox.attach(session.cursors)
        return session

    def detach(self, session: Session) -> None:
        session.outbox = None
        loop = asyncio.get_running_loop()
        session.expiry = loop.call_later(self.resume_seconds, self._expire, session)

    def _expire(self, session: Session) -> None:
        self.by_id.pop(session.id, None)
        for process_id in session.cursors:
            self._followers.get(process_id, set()).discard(session)
        self._on_expired(session)

    def subscribe(self, session: Session, process_id: str, after_seq: int) -> None:
        """Follow from `after_seq` (or from where the cursor already is, if later)."""
        self._followers.setdefault(process_id, set()).add(session)
        if session.outbox is not None:
            session.outbox.follow(process_id, after_seq)
        else:
            session.cursors[process_id] = max(after_seq, session.cursors.get(process_id, 0))

    def unsubscribe(self, session: Session, process_id: str) -> None:
        session.cursors.pop(process_id, None)
        self._followers.get(process_id, set()).discard(session)

    def route(self, event: Event) -> None:
        """The registry's listener: wake followers; tell watchers."""
        if isinstance(event, StartedEvent | RemovedEvent):
            if isinstance(event, RemovedEvent):
                for session in self._followers.pop(event.process_id, set()):
                    session.cursors.pop(event.process_id, None)
            self._tell_watchers(event, set())
            return
        followers = self._followers.get(event.process_id, set())
        for session in followers:
            if session.outbox is not None:
                session.outbox.wake(event.process_id)
        if not isinstance(event, OutputEvent):
            self._tell_watchers(event, followers)

    def _tell_watchers(self, event: Event, skip: set[Session]) -> None:
        message: bytes | None = None
        for session in self.by_id.values():
            if not session.watching or session.outbox is None or session in skip:
                continue
            if session.sees is None or session.sees(event):
                message = message or encode_event(event)
                session.outbox.send(message)
