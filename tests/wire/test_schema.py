"""schema.py and errors.py: one wire shape per result, notification and typed error.

Every shape goes server -> wire -> client and comes back equal; a typed error
is recognised by its data, so a client never matches message text.
"""

from __future__ import annotations

import json

import pytest

from jupyter_exec.wire.errors import (
    ErrorCode,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    ProcessExistsError,
    TooManyProcessesError,
    UnknownProcessError,
    error_from_wire,
)
from jupyter_exec.wire.events import (
    ClosedEvent,
    ExitedEvent,
    OutputEvent,
    RemovedEvent,
    StartedEvent,
)
from jupyter_exec.wire.models import ProcessInfo
from jupyter_exec.wire.schema import Chunk, ReadResult, event_from_notification, event_notification

from ..service import embedded


def info(**changes: object) -> ProcessInfo:
    base = ProcessInfo(
        process_id="train", argv=["python", "-c", "print(1)\nprint(2)"], cwd="/", tty=False,
        pid=12, label=None, lifetime="detached", state="running", started_at=1_000,
        exited_at=None, exit_code=None, signal=None, next_seq=3, first_seq=1, output_bytes=9,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_process_info_round_trips_in_camel_case_and_ignores_unknown_members() -> None:
    wire = info().wire()
    assert wire["processId"] == "train" and wire["pipeStdin"] is False
    assert wire["nextSeq"] == 3 and "next_seq" not in wire
    assert ProcessInfo.from_wire(json.loads(json.dumps(wire))) == info()
    newer = {**wire, "cgroup": {"kind": "none"}}  # a newer server's extra member
    assert ProcessInfo.from_wire(newer) == info()
    older = {k: v for k, v in wire.items() if k not in ("failure", "pipeStdin")}
    assert ProcessInfo.from_wire(older) == info()  # optional members default
    with pytest.raises(TypeError):
        ProcessInfo.from_wire({"processId": "x"})  # required members missing: loud


def test_process_info_keeps_its_own_argv() -> None:
    argv = ["sleep", "1"]
    row = ProcessInfo(**{**info().__dict__, "argv": argv})
    argv.append("oops")  # the registry's own list changing later
    assert row.argv == ["sleep", "1"]


@pytest.mark.parametrize("matched", [None, True, False])
def test_read_result_round_trips(matched: bool | None) -> None:
    result = ReadResult(
        chunks=[Chunk(1, "stdout", b"a\xff"), Chunk(2, "stderr", b"")],
        next_seq=3, first_seq=1, exited=True, exit_code=143, signal="SIGTERM",
        closed=False, failure=None, matched=matched,
    )  # fmt: skip
    wire = json.loads(json.dumps(result.wire()))
    assert ("matched" in wire) == (matched is not None)
    assert wire["chunks"][0] == {"seq": 1, "stream": "stdout", "chunk": "Yf8="}
    assert ReadResult.from_wire(wire) == result
    assert result.data == b"a\xff"


EVENTS = [
    OutputEvent("p", 1, "pty", b"\x1b[31mred\n"),
    ExitedEvent("p", 2, 130, "SIGINT"),
    ClosedEvent("p", 3),
    StartedEvent(info()),
    RemovedEvent("p"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_its_notification(event: object) -> None:
    message = json.loads(json.dumps(event_notification(event)))  # type: ignore[arg-type]
    assert message["jsonrpc"] == "2.0" and "id" not in message
    assert event_from_notification(message["method"], message["params"]) == event


def test_other_notifications_are_not_process_events() -> None:
    assert event_from_notification("fs/changed", {"path": "/x"}) is None


def test_errors_come_back_typed_by_kind_then_by_code() -> None:
    exists = error_from_wire(ProcessExistsError("train").to_wire())
    assert isinstance(exists, ProcessExistsError) and isinstance(exists, InvalidRequestError)
    assert (exists.process_id, exists.message) == ("train", "process train already exists")
    assert exists.remote_code == ErrorCode.INVALID_REQUEST
    full = error_from_wire(TooManyProcessesError(3).to_wire())
    assert isinstance(full, TooManyProcessesError) and (full.limit, full.message) == (
        3,
        "too many processes",
    )
    unknown = error_from_wire(UnknownProcessError("ghost").to_wire())
    assert type(unknown) is InvalidRequestError and unknown.message == "unknown process id ghost"
    params = error_from_wire({"code": -32602, "message": "invalid argv", "data": {"x": 1}})
    assert isinstance(params, InvalidParamsError) and params.data == {"x": 1}
    foreign = error_from_wire({"code": -32000, "message": "sandbox denied"})
    assert isinstance(foreign, InternalError) and foreign.remote_code == -32000
    assert foreign.message == "sandbox denied"
    odd = error_from_wire({"code": "x", "message": 5, "data": {"kind": "noSuchKind"}})
    assert isinstance(odd, InternalError) and odd.message == "5"


async def test_a_duplicate_start_raises_process_exists_on_the_client(tmp_path) -> None:
    async with embedded(tmp_path) as (_service, client):
        await client.start("dup", ["sleep", "30"])
        with pytest.raises(ProcessExistsError) as caught:
            await client.start("dup", ["true"])
        assert caught.value.process_id == "dup"
        assert [i.state for i in await client.list()] == ["running"]  # the first is unharmed
        assert await client.terminate("dup", 500)
        assert (await client.wait("dup", 10)).exit_code == 128 + 15
