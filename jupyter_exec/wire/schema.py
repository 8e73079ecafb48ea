"""The wire schema: each result and notification of SPEC 4-5, both directions.

The server builds its messages with these functions and the client reads them
back with them, so every shape is defined once (no twin classes on the client
side); turning a message into bytes is the transport's business. Errors are
:mod:`jupyter_exec.wire.errors` (``to_wire`` / ``error_from_wire``). Plain data,
json and base64 only: no pydantic (params validation is server-side, in
:mod:`jupyter_exec.wire.protocol`) and no asyncio, so a client or ``jupyter-exec
ps`` pays almost nothing to import it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import (
    ClosedEvent,
    Event,
    ExitedEvent,
    OutputEvent,
    RemovedEvent,
    RestartedEvent,
    StartedEvent,
)
from .models import ProcessInfo

__all__ = [
    "Chunk",
    "ReadResult",
    "error_response",
    "event_from_notification",
    "event_notification",
    "notification",
    "request",
    "response",
]

RequestId = int | str


@dataclass(slots=True, frozen=True)
class Chunk:
    """One output chunk: its seq, stream (``stdout``, ``stderr``, ``pty``) and raw bytes."""

    seq: int
    stream: str
    data: bytes

    def wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "stream": self.stream, "chunk": _b64(self.data)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Chunk:
        return cls(data["seq"], data["stream"], base64.b64decode(data["chunk"]))


@dataclass(slots=True)
class ReadResult:
    """A ``process/read`` result (SPEC 4): chunks after the cursor and the state after them."""

    chunks: list[Chunk]
    next_seq: int
    first_seq: int
    exited: bool
    exit_code: int | None
    signal: str | None
    closed: bool
    failure: str | None
    #: Only with ``untilPattern``: whether the output matched.
    matched: bool | None = None
    #: The process was ended by its ``timeoutMs`` / exceeded one of its ``limits``.
    timed_out: bool = False
    limit_exceeded: str | None = None
    #: As in ``process/exited`` (SPEC 5): sandboxed, failed, and its output reads as a denial.
    sandbox_denied: bool = False

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    def wire(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "chunks": [c.wire() for c in self.chunks],
            "nextSeq": self.next_seq,
            "exited": self.exited,
            "exitCode": self.exit_code,
            "signal": self.signal,
            "closed": self.closed,
            "failure": self.failure,
            "firstSeq": self.first_seq,
            "timedOut": self.timed_out,
            "limitExceeded": self.limit_exceeded,
            "sandboxDenied": self.sandbox_denied,
        }
        if self.matched is not None:
            result["matched"] = self.matched
        return result

    @classmethod
    def from_wire(cls, r: Mapping[str, Any]) -> ReadResult:
        return cls(
            chunks=[Chunk.from_wire(c) for c in r["chunks"]],
            next_seq=r["nextSeq"],
            first_seq=r["firstSeq"],
            exited=r["exited"],
            exit_code=r["exitCode"],
            signal=r["signal"],
            closed=r["closed"],
            failure=r["failure"],
            matched=r.get("matched"),
            timed_out=bool(r.get("timedOut", False)),
            limit_exceeded=r.get("limitExceeded"),
            sandbox_denied=bool(r.get("sandboxDenied", False)),
        )


# -- the JSON-RPC envelope (SPEC 1) ------------------------------------------------


def request(req_id: RequestId, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def response(req_id: RequestId | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def error_response(req_id: RequestId | None, error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": error}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


# -- notifications (SPEC 5) -------------------------------------------------------------


def event_notification(event: Event) -> dict[str, Any]:
    """The notification for a registry event."""
    if isinstance(event, OutputEvent):
        return notification(
            "process/output",
            {
                "processId": event.process_id,
                "seq": event.seq,
                "stream": event.stream,
                "chunk": _b64(event.data),
            },
        )
    if isinstance(event, ExitedEvent):
        return notification(
            "process/exited",
            {
                "processId": event.process_id,
                "seq": event.seq,
                "exitCode": event.exit_code,
                "signal": event.signal,
                "sandboxDenied": event.sandbox_denied,
                "timedOut": event.timed_out,
                "limitExceeded": event.limit_exceeded,
            },
        )
    if isinstance(event, ClosedEvent):
        return notification("process/closed", {"processId": event.process_id, "seq": event.seq})
    if isinstance(event, RestartedEvent):
        return notification(
            "process/restarted",
            {
                "processId": event.process_id,
                "seq": event.seq,
                "restarts": event.restarts,
                "pid": event.pid,
                "exitCode": event.exit_code,
                "signal": event.signal,
            },
        )
    if isinstance(event, StartedEvent):
        return notification("process/started", {"process": event.info.wire()})
    return notification("process/removed", {"processId": event.process_id})


def event_from_notification(method: str, params: Mapping[str, Any]) -> Event | None:
    """The event a notification carries; None for methods that are not process events."""
    pid = params.get("processId", "")
    if method == "process/output":
        return OutputEvent(pid, params["seq"], params["stream"], base64.b64decode(params["chunk"]))
    if method == "process/exited":
        return ExitedEvent(
            pid,
            params["seq"],
            params["exitCode"],
            params.get("signal"),
            bool(params.get("timedOut", False)),
            params.get("limitExceeded"),
            bool(params.get("sandboxDenied", False)),
        )
    if method == "process/closed":
        return ClosedEvent(pid, params["seq"])
    if method == "process/restarted":
        return RestartedEvent(
            pid,
            params["seq"],
            params["restarts"],
            params["pid"],
            params.get("exitCode"),
            params.get("signal"),
        )
    if method == "process/started":
        return StartedEvent(ProcessInfo.from_wire(params["process"]))
    if method == "process/removed":
        return RemovedEvent(pid)
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
