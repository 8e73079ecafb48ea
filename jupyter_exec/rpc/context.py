"""What a method handler is given (SPEC 4): its caller, its front's rules, the registry.

Method families (`process_methods`, `fs_methods`, `environment`, ...) take a
`CallContext` and return a result or raise an `ExecError`; each declares its
table of `Method`s (handler + needed action); `dispatch` builds the context and
the service grows through `add_methods`. Nothing here imports `dispatch`, so a family
plugs in without importing it back.

`sandbox_policies` is where `process/start` and ``fs/*`` learn which sandbox
policies a request runs under (docs/sandbox.md): the front's
`default_sandbox`, its `agent_sandbox` when the caller is an agent, and the
request's own, which may be stricter than the front's, never looser. An agent
is a client whose `initialize` clientName starts with one of `AGENT_CLIENTS`
(Codex sends ``codex-environment``; our MCP faces ``jupyter-exec-mcp...``), or
a request carrying a Codex-only field (`envPolicy`). The name is the client's
word: the policy guards against what an agent's commands and patches do, not
against a client that lies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..core.registry import Registry
from ..core.tasks import TaskOwner
from ..wire.errors import InvalidParamsError, JupyterExecError
from ..wire.rules import FrontRules
from ..wire.sandbox import SandboxPolicy, looser_than
from .sessions import Session, Sessions

__all__ = [
    "AGENT_CLIENTS",
    "EXECUTE",
    "READ",
    "CallContext",
    "ClientError",
    "Handler",
    "Method",
    "Outlet",
]


AGENT_CLIENTS = ("codex", "jupyter-exec-mcp")


class ClientError(JupyterExecError):
    """The client answered a request of ours (`Outlet.ask`) with an error."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Outlet(Protocol):
    """What a method may do with its caller's connection."""

    def notify(self, message: dict[str, Any]) -> None:
        """Send a notification (after any response queued before it)."""

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await `callback` when the connection closes (stop background work)."""

    async def ask(self, method: str, params: Any, timeout: float | None) -> Any:
        """A request to the client (server-to-client JSON-RPC, e.g. Codex's
        `network/policyRequest`): its result; `ClientError` if it answered with an
        error, TimeoutError after `timeout` s, ConnectionError if it is gone."""

    async def drained(self) -> None:
        """Wait while the client has more unsent messages than its limit (backpressure
        for a method that streams notifications)."""


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
    #: The service's background work that outlives this request and its connection
    #: (e.g. a network proxy that stops with its process); awaited when the service closes.
    tasks: TaskOwner
    #: The client's `initialize` name (agents: `AGENT_CLIENTS`).
    client_name: str = "unknown"
    #: Callbacks run right after the response is queued (e.g. start's auto-subscribe).
    after_response: list[Callable[[], None]] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def root_dir(self) -> Path:
        return self.rules.root_dir

    def sandbox_policies(
        self, requested: SandboxPolicy | None, codex_fields: bool = False
    ) -> list[SandboxPolicy]:
        """Every policy this request runs under (module docstring); -32602 if it asks
        for a looser one than its front's."""
        agent = codex_fields or self.client_name.startswith(AGENT_CLIENTS)
        policies = self.rules.sandbox_policies(agent)
        if requested is None:
            return list(policies.values())
        for setting, policy in policies.items():
            refusal = looser_than(requested, policy, setting)
            if refusal is not None:
                raise InvalidParamsError(refusal)
        return [*policies.values(), requested]


Handler = Callable[[CallContext, Any], Awaitable[Any]]

#: The actions of Jupyter authorization on resource ``exec`` (jupyter/handlers.py):
#: a connection is given the ones its user holds (None: all of them).
READ = "read"
EXECUTE = "execute"


class Method(NamedTuple):
    """A method's handler and the action its caller needs: each family declares its
    methods as ``{name: Method(handler, READ | EXECUTE)}`` beside the handlers, so
    reading a handler's entry tells who may call it; `ExecService.add_methods` takes them.
    `READ` is for methods that only look (a read-only client may call them)."""

    handler: Handler
    action: str
