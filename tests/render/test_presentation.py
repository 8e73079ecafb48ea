"""The `ps` table and the `queue` table as text: SPEC 11's states, restarts and queues."""

from __future__ import annotations

from typing import Any

from jupyter_exec.render.html_render import ps_html, view_html
from jupyter_exec.render.presentation import (
    format_queue,
    format_restarts,
    format_status,
    ps_text,
    queue_text,
)
from jupyter_exec.render.terminal import TerminalLog
from jupyter_exec.wire.models import ProcessInfo, QueueInfo


def info(process_id: str, state: str = "running", **fields: Any) -> ProcessInfo:
    base: dict[str, Any] = {
        "process_id": process_id, "argv": ["python", "train.py"], "cwd": "/", "tty": False,
        "pid": 42, "label": None, "lifetime": "detached", "state": state,
        "started_at": 1_000, "exited_at": None, "exit_code": None, "signal": None,
        "next_seq": 1, "first_seq": 1, "output_bytes": 0,
    }  # fmt: skip
    base.update(fields)
    return ProcessInfo(**base)


def rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines()}


def test_a_table_without_scheduling_has_no_restarts_or_queue_column() -> None:
    header = ps_text([info("plain", exited_at=3_000)]).splitlines()[0]
    assert header.split() == ["ID", "STATE", "EXIT", "RUNTIME", "COMMAND"]


def test_queued_restarting_and_never_started_rows() -> None:
    policy = {"policy": "on-failure", "maxRestarts": 10, "delayMs": 1000}
    table = ps_text(
        [
            info("lr-1", queue="gpu", exited_at=3_000),
            info("lr-2", "queued", pid=None, queue="gpu"),
            info("eval", "queued", pid=None, after=["lr-1", "lr-2", "lr-3", "lr-4"]),
            info("worker", "restarting", pid=None, restart_policy=policy, restarts=2),
            info(
                "report",
                "closed",
                pid=None,
                after=["broken"],
                exited_at=2_000,
                failure="dependency broken failed: exit code 1",
            ),
        ]
    )
    header, *_ = table.splitlines()
    assert header.split() == [
        "ID", "STATE", "EXIT", "RESTARTS", "RUNTIME", "QUEUE", "COMMAND"
    ]  # fmt: skip
    found = rows(table)
    assert found["lr-1"].split()[1:5] == ["running", "2.0s", "gpu", "python"]
    assert found["lr-2"].split()[1:4] == ["queued", "gpu", "python"]  # no runtime while it waits
    assert "after lr-1,lr-2 +2" in found["eval"]  # a sweep's evaluation stays one row
    assert found["worker"].split()[1:3] == ["restarting", "2/10"]
    assert "never started" in found["report"] and "after broken" in found["report"]


def test_format_restarts_and_queue() -> None:
    assert format_restarts(info("a")) == ""
    assert (
        format_restarts(info("a", restart_policy={"policy": "always", "maxRestarts": 3})) == "0/3"
    )
    assert format_restarts(info("a", restart_policy={"policy": "never"}, restarts=0)) == ""
    assert format_restarts(info("a", restarts=4)) == "4"
    assert format_queue(info("a", queue="gpu", after=["x"])) == "gpu, after x"
    assert format_queue(info("a")) == ""


def test_status_of_a_waiting_process_is_its_state_and_time() -> None:
    assert format_status("queued", None, None, 2.5) == "queued 2.5s"
    assert format_status("restarting", 1, None, None) == "restarting"
    assert format_status("closed", None, None, 3.0) == "never started"  # no exit code
    assert format_status("lost", None, None, None) == "lost"


def test_html_faces_show_the_same_facts() -> None:
    worker = info("worker", restart_policy={"policy": "always", "maxRestarts": 5}, restarts=1,
                  queue="gpu", after=["setup"])  # fmt: skip
    header = view_html(worker, TerminalLog(), 1.0)
    assert " · restarts 1/5 · queue gpu · after setup" in header
    assert "#1a73e8" in view_html(info("w", "queued", pid=None), TerminalLog(), 0.0)  # live colour
    table = ps_html([worker])
    assert (
        "<th style='text-align:left'>restarts</th>" in table
        and "<td style='text-align:left'>1/5" in table
    )


def test_queue_table() -> None:
    text = queue_text([QueueInfo("gpu", 1, 1, 5), QueueInfo("cpu\x1b", 4, 0, 0)])
    assert text.splitlines() == [
        "QUEUE    PARALLEL  RUNNING  QUEUED",
        "gpu      1         1        5",
        "cpu\\x1b  4         0        0",
    ]
