"""core/record.py: one process record, its JSON round trip, and the shapes 0.3.0 wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core.record import RECORD_VERSION, ExitRecord, ProcessRecord, ProcessSetup
from jupyter_exec.core.sandbox import Confinement
from jupyter_exec.wire.protocol import Limits

LOG = Path("/state/logs/0123abcd.log")

#: What 0.3.0's `registry.held_meta` handed the holder (every key it wrote).
HELD_030: dict[str, Any] = {
    "front": "jupyter",
    "processId": "srv",
    "argv": ["python", "-m", "http.server"],
    "cwd": "/home/u",
    "tty": False,
    "pipeStdin": True,
    "label": "web",
    "lifetime": "connection",
    "owner": "session-1",
    "marker": "reg/srv",
    "timeoutMs": 60000,
    "limits": {"memoryBytes": 1 << 30, "cpuSeconds": 5},
    "sandbox": {"mode": "workspace-write", "network": False, "writable": ["/home/u"]},
    "origin": {"kind": "notebook", "name": "a.ipynb"},
    "log": str(LOG),
    "startedAt": 1765000000000,
}

#: What 0.3.0's `Persister.track` wrote to disk, with the exit it added later.
DISK_030: dict[str, Any] = {
    "processId": "build",
    "argv": ["make"],
    "cwd": "/home/u",
    "tty": True,
    "pipeStdin": True,
    "pid": 4242,
    "pidStartTime": 987654,
    "label": None,
    "lifetime": "detached",
    "startedAt": 1765000000000,
    "sandbox": None,
    "origin": None,
    "log": LOG.name,
    "exit": {
        "exitCode": 137,
        "signal": "SIGKILL",
        "exitedAt": 1765000001000,
        "timedOut": True,
        "limitExceeded": "memory",
    },
}


def full_record() -> ProcessRecord:
    setup = ProcessSetup(
        process_id="p",
        argv=["sh", "-c", "echo hi"],
        cwd="/tmp",
        tty=True,
        pipe_stdin=True,
        label="a label",
        lifetime="connection",
        owner="session-9",
        marker="reg/p",
        timeout_ms=1500,
        limits=Limits.model_validate({"memoryBytes": 1 << 28, "cpuSeconds": 3}),
        sandbox=Confinement("read-only", True, ("/w",), ("/r",), ("/h",)),
        origin={"kind": "terminal", "name": "t1"},
        front="mcp",
    )
    end = ExitRecord(1, None, 1765000002000, True, "cpu", True)
    return ProcessRecord(setup, LOG, 1765000000000, 77, 1234, end)


def test_a_record_round_trips_through_json_with_every_field() -> None:
    record = full_record()
    data = json.loads(json.dumps(record.to_record()))
    assert data["version"] == RECORD_VERSION
    assert ProcessRecord.from_record(data) == record
    running = ProcessRecord(record.setup, LOG, 5)  # as the holder gets it: before the spawn
    assert ProcessRecord.from_record(json.loads(json.dumps(running.to_record()))) == running


def test_the_holder_reads_one_key_itself_and_it_keeps_its_name() -> None:
    assert full_record().to_record()["marker"] == "reg/p"  # daemon/holder.py reads "marker"


def test_0_3_0_held_meta_reads_with_every_field() -> None:
    record = ProcessRecord.from_record(HELD_030)
    s = record.setup
    assert (s.process_id, s.argv, s.cwd, s.tty, s.pipe_stdin) == (
        "srv", ["python", "-m", "http.server"], "/home/u", False, True,
    )  # fmt: skip
    assert (s.label, s.lifetime, s.owner, s.marker, s.timeout_ms, s.front) == (
        "web", "connection", "session-1", "reg/srv", 60000, "jupyter",
    )  # fmt: skip
    assert s.limits is not None and s.limits.memory_bytes == 1 << 30
    assert s.sandbox == Confinement("workspace-write", False, ("/home/u",))
    assert s.origin == {"kind": "notebook", "name": "a.ipynb"}
    assert (record.log, record.started_at, record.pid, record.exit) == (
        LOG, 1765000000000, None, None,
    )  # fmt: skip


def test_0_3_0_disk_record_reads_its_log_from_the_logs_dir_and_its_exit() -> None:
    record = ProcessRecord.from_record(DISK_030, Path("/now/logs"))
    assert record.log == Path("/now/logs") / LOG.name
    assert (record.pid, record.pid_start_time) == (4242, 987654)
    assert record.exit == ExitRecord(137, "SIGKILL", 1765000001000, True, "memory", False)
    s = record.setup
    assert (s.tty, s.lifetime, s.owner, s.marker, s.limits, s.sandbox, s.front) == (
        True, "detached", None, "", None, None, "",
    )  # fmt: skip
    # Re-written, it is the new shape, and it still reads the same.
    again = ProcessRecord.from_record(record.to_record(), Path("/now/logs"))
    assert again == record


def test_a_full_log_path_on_disk_is_taken_by_its_name_in_the_logs_dir() -> None:
    """The state directory may have moved since (a new home): the log is the one here."""
    data = full_record().to_record()
    assert ProcessRecord.from_record(data, Path("/moved")).log == Path("/moved/0123abcd.log")


def test_a_newer_record_reads_for_what_this_version_knows() -> None:
    data = {**full_record().to_record(), "version": RECORD_VERSION + 1, "aFutureField": {"n": 1}}
    assert ProcessRecord.from_record(data) == full_record()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"version": "2"}, ValueError, "version"),
        ({"version": 0}, ValueError, "version"),
        ({"log": "relative.log"}, ValueError, "full path"),
        ({"log": "/"}, ValueError, "names no file"),
        ({"log": 7}, ValueError, "'log'"),
        ({"processId": ""}, ValueError, "'processId'"),
        ({"lifetime": "forever"}, ValueError, "lifetime"),
        ({"startedAt": "soon"}, ValueError, "soon"),
        ({"pid": True}, ValueError, "True"),
        ({"exit": {"signal": None}}, KeyError, "exitCode"),
        ({"limits": {"memoryBytes": -1}}, ValueError, "memoryBytes"),
        ({"sandbox": {"network": True}}, KeyError, "mode"),
    ],
)
def test_a_bad_record_is_refused_with_a_clear_error(
    change: dict[str, Any], error: type[Exception], message: str
) -> None:
    data = {**full_record().to_record(), **change}
    with pytest.raises(error, match=message):
        ProcessRecord.from_record(data)


def test_a_record_that_is_no_object_or_lacks_a_key_is_refused() -> None:
    with pytest.raises(TypeError, match="JSON object, not list"):
        ProcessRecord.from_record([])  # type: ignore[arg-type]
    data = full_record().to_record()
    del data["argv"]
    with pytest.raises(KeyError, match="argv"):
        ProcessRecord.from_record(data)
