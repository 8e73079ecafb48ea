"""What a method handler is given (SPEC 4): its caller, the registry, the sessions.

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
from ..wire.models import Lifetime
from ..wire.sandbox import SandboxPolicy
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
    root_dir: Path
    default_lifetime: Lifetime
    #: The front's sandbox policies by setting name (`default_sandbox`, `agent_sandbox`).
    default_sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    agent_sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    #: The client's `initialize` name (agents: `process_methods.AGENT_CLIENTS`).
    client_name: str = "unknown"
    #: Callbacks run right after the response is queued (e.g. start's auto-subscribe).
    after_response: list[Callable[[], None]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.session.id


Handler = Callable[[CallContext, Any], Awaitable[Any]]
