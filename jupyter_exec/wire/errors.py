"""Errors and JSON-RPC codes: the one place wire error codes live, and the root
of every error jupyter-exec raises.

Hierarchy (catching `JupyterExecError` catches them all, connection loss
included, as websockets' `WebSocketException` does; the second base keeps
``except ConnectionError`` / ``RuntimeError`` / ``ValueError`` sites working)::

    JupyterExecError
    ├── ConnectionLostError         the other end went away (also ConnectionError)
    │   └── DaemonHandshakeError    the daemon refused the hello or closed at once
    ├── DaemonStartError            daemon/start.py: no daemon could run (also RuntimeError)
    ├── DaemonSettingsError         config.py: an unusable settings file (also ValueError)
    ├── ClientError                 rpc/context.py: a client answered our request with
    │                               an error
    ├── ProcessExitedError          frontends/handle.py: ended before its output
    │                               matched (also RuntimeError)
    ├── ExecProcessError            frontends/handle.py: ``check=True`` and a non-zero
    │                               exit (also subprocess.CalledProcessError)
    ├── NeverStartedError           frontends/handle.py: ``check=True`` and it never
    │                               started (SPEC 11; also RuntimeError)
    ├── CliError                    frontends/cli.py: a message and an exit status
    ├── UsageError                  transports/serve.py: a bad command line
    ├── UnsupportedPlatformError    core/linux.py: not on Linux (start-up refuses)
    └── ExecError (below)

The JSON-RPC errors::

    ExecError                       code, message -> JSON-RPC error object
    ├── ParseError                  -32700 malformed JSON (response id is null)
    ├── InvalidRequestError         -32600 bad envelope, handshake order, state
    │   ├── UnknownProcessError     -32600 ``unknown process id ID``
    │   ├── ProcessExistsError      -32600 ``process ID already exists``, data kind
    │   │                                  ``processExists``
    │   └── TooManyProcessesError   -32600 ``too many processes``, data kind
    │                                      ``tooManyProcesses``
    ├── MethodNotFoundError         -32601
    ├── InvalidParamsError          -32602 bad types, cwd, program, pattern, base64
    ├── FsError                     -32004 file-system method failed (OS message)
    ├── SandboxDeniedError          -32603 an ``fs/*`` write its sandbox refuses, as
    │                                      Codex's server says it (EROFS), data kind
    │                                      ``sandboxDenied``
    └── InternalError               -32603 a bug; the message hides internals

Every layer raises these; only ``dispatch`` turns them into wire errors, and
any other exception becomes ``InternalError`` there. A client turns a wire
error back into the same family with :func:`error_from_wire`: the class comes
from ``data.kind`` when the server sent one (so a caller can catch
``ProcessExistsError`` instead of matching message text), else from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, ClassVar

__all__ = [
    "ConnectionLostError",
    "DaemonHandshakeError",
    "ErrorCode",
    "ExecError",
    "FsError",
    "InternalError",
    "InvalidParamsError",
    "InvalidRequestError",
    "JupyterExecError",
    "MethodNotFoundError",
    "ParseError",
    "ProcessExistsError",
    "SandboxDeniedError",
    "TooManyProcessesError",
    "UnknownProcessError",
    "UnsupportedPlatformError",
    "error_from_wire",
]


class ErrorCode(IntEnum):
    """JSON-RPC 2.0 codes used on the wire (SPEC section 7)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    FS_ERROR = -32004


class JupyterExecError(Exception):
    """Root of every error jupyter-exec raises (module docstring draws the tree)."""


class ConnectionLostError(JupyterExecError, ConnectionError):
    """The other end of a connection went away (the client: while requests were
    pending; the server: before a client answered its request)."""


class UnsupportedPlatformError(JupyterExecError):
    """jupyter-exec started on an OS other than Linux (`core.linux.require_linux`)."""


class DaemonHandshakeError(ConnectionLostError):
    """The exec daemon refused the hello (another protocol version) or closed at once."""


class ExecError(JupyterExecError):
    """Root of every error that reaches a client as a JSON-RPC error."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    #: ``data.kind`` on the wire for errors a client must tell apart (None: by code only).
    kind: ClassVar[str | None] = None
    #: Client side: the code exactly as the server sent it (it may be one this
    #: version does not know); None for errors raised locally.
    remote_code: int | None = None

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_wire(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member for this exception."""
        error: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(ExecError):
    code = ErrorCode.PARSE_ERROR


class InvalidRequestError(ExecError):
    code = ErrorCode.INVALID_REQUEST


class UnknownProcessError(InvalidRequestError):
    def __init__(self, process_id: str) -> None:
        super().__init__(f"unknown process id {process_id}")
        self.process_id = process_id


class ProcessExistsError(InvalidRequestError):
    """``process/start`` with an id that is taken (running, or exited and still kept)."""

    kind = "processExists"

    def __init__(self, process_id: str) -> None:
        super().__init__(
            f"process {process_id} already exists", {"kind": self.kind, "processId": process_id}
        )
        self.process_id = process_id


class TooManyProcessesError(InvalidRequestError):
    """``process/start`` while `max_processes` are running (the REST mirror's 429)."""

    kind = "tooManyProcesses"

    def __init__(self, limit: int, front: str | None = None) -> None:
        data: dict[str, Any] = {"kind": self.kind, "limit": limit}
        message = "too many processes"
        if front is not None:  # SPEC 3: the limit is that front's
            data["front"] = front
            message += f": {limit} already running through {front} (max_processes)"
        super().__init__(message, data)
        self.limit = limit


class MethodNotFoundError(ExecError):
    code = ErrorCode.METHOD_NOT_FOUND


class InvalidParamsError(ExecError):
    code = ErrorCode.INVALID_PARAMS


class FsError(ExecError):
    code = ErrorCode.FS_ERROR


class SandboxDeniedError(ExecError):
    """An ``fs/*`` write outside what its sandbox allows (docs/sandbox.md).

    Codex's own exec-server runs such a write in its sandbox, where it fails
    with EROFS and answers -32603 ``Read-only file system (os error 30)``; this
    gives the same code and opening words (Codex shows "Failed to write
    file"), then the path and why.
    """

    code = ErrorCode.INTERNAL_ERROR
    kind = "sandboxDenied"

    def __init__(self, path: str, reason: str) -> None:
        message = f"Read-only file system (os error 30): {path} {reason}"
        super().__init__(message, {"kind": self.kind, "path": path, "reason": reason})
        self.path = path
        self.reason = reason


class InternalError(ExecError):
    code = ErrorCode.INTERNAL_ERROR


_BY_CODE: dict[int, type[ExecError]] = {
    int(cls.code): cls
    for cls in (
        ParseError,
        InvalidRequestError,
        MethodNotFoundError,
        InvalidParamsError,
        FsError,
        InternalError,
    )
}
_BY_KIND: dict[str, Callable[[Mapping[str, Any]], ExecError]] = {
    ProcessExistsError.kind: lambda data: ProcessExistsError(str(data.get("processId", ""))),
    TooManyProcessesError.kind: lambda data: TooManyProcessesError(
        int(data.get("limit", 0)), str(data["front"]) if "front" in data else None
    ),
    SandboxDeniedError.kind: lambda data: SandboxDeniedError(
        str(data.get("path", "")), str(data.get("reason", ""))
    ),
}


def error_from_wire(error: Mapping[str, Any]) -> ExecError:
    """The exception for a JSON-RPC ``error`` object a server sent (module docstring)."""
    code = error.get("code")
    code = code if isinstance(code, int) else int(ErrorCode.INTERNAL_ERROR)
    data = error.get("data")
    kind = data.get("kind") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(kind, str) and kind in _BY_KIND:
        exc = _BY_KIND[kind](data)
    else:
        exc = _BY_CODE.get(code, InternalError)(str(error.get("message", "")), data)
    exc.remote_code = code
    return exc
