"""core/launch.py and the schedule in a process record (SPEC 11): what a successor needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jupyter_exec.core.launch import Launch
from jupyter_exec.core.record import ProcessRecord, ProcessSetup, ScheduleRecord
from jupyter_exec.core.sandbox import Confinement
from jupyter_exec.wire.protocol import Limits


def test_a_scheduled_record_reads_back_whole_with_its_log_where_it_is_now(tmp_path: Path) -> None:
    log = tmp_path / "old" / "abc.log"
    launch = Launch(
        "/bin/sh", ["sh", "-c", "exit 3"], "/tmp", {"A": "1"}, False, True, 24, 80,
        Limits(memory_bytes=1 << 30), Confinement("read-only", False, ("/tmp",)), log,
    )  # fmt: skip
    setup = ProcessSetup(
        "p", ["sh"], "/tmp", False, True, None, "detached", None, "m",
        restart={"policy": "always", "maxRestarts": 3, "delayMs": 10}, queue="q", after=["a"],
    )  # fmt: skip
    schedule = ScheduleRecord(launch, 7, 40, 123, [[5, 1, 42, 3, None]])
    record = ProcessRecord(setup, log, 100, schedule=schedule)
    back = ProcessRecord.from_record(json.loads(json.dumps(record.to_record())), tmp_path)
    assert back.setup == setup and back.log == tmp_path / "abc.log"
    assert back.schedule is not None
    assert back.schedule.launch == Launch(**{**vars(launch), "log_path": tmp_path / "abc.log"})
    assert (back.schedule.order, back.schedule.delay_ms, back.schedule.run_started_at) == (
        7, 40, 123,
    )  # fmt: skip
    assert back.schedule.restarted == [[5, 1, 42, 3, None]]
    assert launch.key(0) == "abc" and launch.key(2) == "abc.2"


@pytest.mark.parametrize(
    "broken",
    [{"launch": None}, {"launch": {}}, {"order": "first"}, {"restarted": [[1, 2]]}],
)
def test_an_unreadable_schedule_is_refused(tmp_path: Path, broken: dict[str, object]) -> None:
    setup = ProcessSetup("p", ["sh"], "/tmp", False, False, None, "detached", None, "m")
    launch = Launch("/bin/sh", ["sh"], "/tmp", {}, False, False, 24, 80, None, None, tmp_path)
    data = ProcessRecord(setup, tmp_path / "x.log", 1).to_record()
    data["schedule"] = ScheduleRecord(launch, 1).to_record()
    ProcessRecord.from_record(data)  # whole, it reads
    data["schedule"].update(broken)
    with pytest.raises((KeyError, TypeError, ValueError)):
        ProcessRecord.from_record(data)


def test_a_record_with_an_unknown_restart_policy_is_refused(tmp_path: Path) -> None:
    setup = ProcessSetup("p", ["sh"], "/tmp", False, False, None, "detached", None, "m")
    data = ProcessRecord(setup, tmp_path / "x.log", 1).to_record()
    data["restart"] = {"policy": "sometimes"}
    with pytest.raises(ValueError, match="policy"):
        ProcessRecord.from_record(data)
