"""Errors and JSON-RPC codes: the one place wire error codes live.

Hierarchy::

    ExecError                       code, message -> JSON-RPC error object
    ├── ParseError                  -32700 malformed JSON (response id is null)
    ├── InvalidRequestError         -32600 bad envelope, handshake order, state
    │   ├── UnknownProcessError     -32600 ``unknown process id ID``
    │   └── TooManyProcessesError   -32600 ``too many processes``
    ├── MethodNotFoundError         -32601
    ├── InvalidParamsError          -32602 bad types, cwd, program, pattern, base64
    ├── FsError                     -32004 file-system method failed (OS message)
    └── InternalError               -32603 a bug; the message hides internals

Every layer raises these; only ``dispatch`` turns them into wire errors, and
any other exception becomes ``InternalError`` there.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """JSON-RPC 2.0 codes used on the wire (SPEC section 7)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    FS_ERROR = -32004


class ExecError(Exception):
    """Root of every error that reaches a client as a JSON-RPC error."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

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


class TooManyProcessesError(InvalidRequestError):
    def __init__(self, limit: int) -> None:
        super().__init__("too many processes")
        self.limit = limit


class MethodNotFoundError(ExecError):
    code = ErrorCode.METHOD_NOT_FOUND


class InvalidParamsError(ExecError):
    code = ErrorCode.INVALID_PARAMS


class FsError(ExecError):
    code = ErrorCode.FS_ERROR


class InternalError(ExecError):
    code = ErrorCode.INTERNAL_ERROR
