"""What a method handler is given (SPEC 4): its caller, its front's rules, the registry.

Method families (`process_methods`, `fs_methods`, `environment`) take a
`CallContext` and return a result or raise an `ExecError`; `dispatch` builds
the context and owns the table. Nothing here imports `dispatch`, so a family
plugs in without importing it back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.registry import Registry
from ..wire.rules import FrontRules
from .sessions import Session, Sessions


class Outlet(Protocol):
    """What a method may do with its caller's connection."""

    def notify(self, message: dict[str, Any]) -> None:
        """Send a notification (after any response queued before it)."""

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await `callback` when the connection closes (stop background work)."""


@dataclass
class CallContext:
    """What a method handler may know about its caller."""

    registry: Registry
    sessions: Sessions
    session: Session
    connection: Outlet
    #: The rules of the front this request came through (SPEC 3): every use of a
    #: root, confinement, limit or base environment reads them from here.
    rules: FrontRules
    #: The client's `initialize` name (agents: `process_methods.AGENT_CLIENTS`).
    client_name: str = "unknown"
    #: Callbacks run right after the response is queued (e.g. start's auto-subscribe).
    after_response: list[Callable[[], None]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def root_dir(self) -> Path:
        return self.rules.root_dir


Handler = Callable[[CallContext, Any], Awaitable[Any]]
