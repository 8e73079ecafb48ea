"""JSON-RPC envelope and method params (SPEC 1, 2, 4). Validation only, no I/O.

Params models accept unknown fields (Codex clients send `metadata`,
`managedNetwork`, ...) and reject wrong types without coercion, so `"1"` is never a number and
`1.5` never a seq.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from .errors import InvalidParamsError, InvalidRequestError, ParseError
from .models import SIGNALS, Lifetime, RestartPolicyName
from .sandbox import from_wire
from .schema import RequestId as RequestId
from .schema import error_response as error_response
from .schema import notification as notification
from .schema import response as response

NonNegative = Annotated[int, Field(strict=True, ge=0, le=2**53)]
Positive = Annotated[int, Field(strict=True, ge=1, le=10_000)]
ProcessId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
#: A mode name, ``{"mode", "network"?, "writableRoots"?}`` or Codex's object (wire/sandbox.py),
#: parsed into a `SandboxPolicy` (its InvalidParamsError names the member); None: the front's.
Sandbox = Annotated[Any, BeforeValidator(from_wire)]


class Params(BaseModel):
    """Base for method params: camelCase aliases, unknown fields ignored, strict types."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", strict=True
    )


class InitializeParams(Params):
    client_name: str = "unknown"
    resume_session_id: str | None = None


class Size(Params):
    rows: Positive = 24
    cols: Positive = 80


class EnvPolicy(Params):
    """Codex's environment recipe (SPEC 4, `process/start`)."""

    inherit: Literal["all", "core", "none"] = "all"
    ignore_default_excludes: bool = True
    exclude: list[str] = []
    include_only: list[str] = []
    set: dict[str, str] = {}


class Limits(Params):
    """Per-process resource limits (SPEC 4 `process/start` `limits`; see limits.py)."""

    memory_bytes: Annotated[int, Field(strict=True, ge=1 << 20, le=2**53)] | None = None
    cpu_seconds: Annotated[int, Field(strict=True, ge=1, le=2**31)] | None = None


#: SPEC 11 `origin.kind`: where a process was started from.
OriginKind = Literal["notebook", "console", "agent", "cli", "panel", "client"]


class Origin(Params):
    """SPEC 11 `origin`: sent by our fronts at `process/start`; else from the clientName."""

    kind: OriginKind
    name: Annotated[str, StringConstraints(strict=True, max_length=1024)] = ""


#: SPEC 11: a queue's name.
QueueName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
#: Most restarts a policy may ask for, and the longest first delay (SPEC 11's cap).
MAX_RESTARTS = 1_000_000
MAX_RESTART_DELAY_MS = 60_000


class RestartSpec(Params):
    """SPEC 11 `process/start` `restart`: when a run that ended is started again."""

    policy: RestartPolicyName
    max_restarts: Annotated[int, Field(strict=True, ge=0, le=MAX_RESTARTS)] = 10
    #: The first delay; it doubles after each restart up to 60 s (core/scheduler.py).
    delay_ms: Annotated[int, Field(strict=True, ge=0, le=MAX_RESTART_DELAY_MS)] = 1000

    def wire(self) -> dict[str, Any]:
        return {"policy": self.policy, "maxRestarts": self.max_restarts, "delayMs": self.delay_ms}


class StartParams(Params):
    process_id: ProcessId
    argv: Annotated[list[str], Field(min_length=1)]
    cwd: str | None = None
    env: dict[str, str] | None = None
    inherit_env: bool = False
    env_policy: EnvPolicy | None = None
    tty: bool = False
    pipe_stdin: bool = False
    arg0: str | None = None
    size: Size | None = None
    lifetime: Lifetime | None = None
    label: str | None = None
    metadata: dict[str, Any] | None = None
    #: Wall-clock limit: terminated as by `process/terminate` when it passes.
    timeout_ms: Annotated[int, Field(strict=True, ge=1, le=2**53)] | None = None
    limits: Limits | None = None
    sandbox: Sandbox = None
    origin: Origin | None = None
    #: SPEC 11: restart policy, queue and dependencies (core/scheduler.py).
    restart: RestartSpec | None = None
    queue: QueueName | None = None
    after: Annotated[list[ProcessId], Field(max_length=10_000)] = []

    @property
    def scheduled(self) -> bool:
        """Whether the scheduler runs it (SPEC 11); a Codex client's start never is."""
        return self.restart is not None or self.queue is not None or bool(self.after)


class ProcessParams(Params):
    process_id: ProcessId


class ReadParams(ProcessParams):
    after_seq: NonNegative = 0
    max_bytes: NonNegative | None = None
    wait_ms: NonNegative = 0
    until_pattern: str | None = None
    #: Return once no new output came for this long (after the first chunk).
    until_idle_ms: NonNegative | None = None

    def compiled_pattern(self) -> re.Pattern[str] | None:
        if self.until_pattern is None:
            return None
        try:
            return re.compile(self.until_pattern)
        # OverflowError: a repeat count too large; RecursionError: too deeply nested.
        except (re.error, OverflowError, RecursionError) as exc:
            raise InvalidParamsError(
                f"untilPattern is not a valid regular expression: {exc}"
            ) from None


class WriteParams(ProcessParams):
    chunk: str = ""
    write_id: str | int | None = None
    eof: bool = False

    def data(self) -> bytes:
        try:
            return base64.b64decode(self.chunk, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParamsError("chunk is not valid base64") from None


class SignalParams(ProcessParams):
    signal: str

    def signum(self) -> int:
        try:
            return int(SIGNALS[self.signal])
        except KeyError:
            names = ", ".join(SIGNALS)
            raise InvalidParamsError(
                f"unknown signal {self.signal!r}; use one of {names}"
            ) from None


class TerminateParams(ProcessParams):
    grace_ms: NonNegative = 3000


class ResizeParams(ProcessParams):
    rows: Positive
    cols: Positive


class SubscribeParams(ProcessParams):
    after_seq: NonNegative = 0


class WaitParams(Params):
    """SPEC 11 `process/wait`: until every one has exited, or `timeoutMs` passed."""

    process_ids: Annotated[list[ProcessId], Field(min_length=1, max_length=10_000)]
    #: None: as long as a long-poll may wait (registry.MAX_WAIT_SECONDS).
    timeout_ms: NonNegative | None = None


class QueueSetParams(Params):
    """SPEC 11 `queue/set`: how many of a queue's processes may run at once."""

    name: QueueName
    parallel: Annotated[int, Field(strict=True, ge=1, le=1_000_000)]


class ListParams(Params):
    watch: bool = False


P = TypeVar("P", bound=Params)


def parse_params(model: type[P], params: Any) -> P:
    """Validate `params` into `model`, turning pydantic's report into one clear -32602."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParamsError("params must be an object")
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise InvalidParamsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "params"
    return f"invalid {where}: {err['msg']}"


class Request(BaseModel):
    """A parsed incoming message: a request (has `id`) or a notification."""

    id: RequestId | None
    method: str
    params: Any
    is_notification: bool


def _loads(frame: str | bytes) -> Any:
    """orjson (fast); the stdlib where orjson refuses (NaN) or differs (an id past
    64 bits, which orjson makes a float). So a frame means what `json.loads` says.
    """
    try:
        msg = orjson.loads(frame)
    except ValueError:
        pass
    else:
        if not (isinstance(msg, dict) and isinstance(msg.get("id"), float)):
            return msg
    try:
        return json.loads(frame)
    except (ValueError, RecursionError):
        raise ParseError("message is not valid JSON") from None


def parse_message(frame: str | bytes) -> Request:
    """Parse one frame into a Request, or raise ParseError/InvalidRequestError (SPEC 1, 7)."""
    msg = _loads(frame)
    if isinstance(msg, list):
        raise InvalidRequestError("batch requests are not supported")
    if not isinstance(msg, dict):
        raise InvalidRequestError("message must be a JSON object")
    req_id = msg.get("id")
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, int | str)):
        raise InvalidRequestError("id must be a number or a string")
    method = msg.get("method")
    if not isinstance(method, str):
        if "result" in msg or "error" in msg:
            raise InvalidRequestError("the server does not accept responses")
        raise InvalidRequestError("method must be a string")
    return Request(
        id=req_id, method=method, params=msg.get("params"), is_notification="id" not in msg
    )


def request_id_of(frame: str | bytes) -> RequestId | None:
    """Best-effort id of a frame that failed validation, so the error can carry it."""
    try:
        msg = _loads(frame)
    except ParseError:
        return None
    if isinstance(msg, dict):
        rid = msg.get("id")
        if isinstance(rid, int | str) and not isinstance(rid, bool):
            return rid
    return None
