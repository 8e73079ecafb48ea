"""presentation.py and its HTML twin html_render.py: status lines, durations, sizes, ps
tables and the view header, as text and as HTML (each table test checks both); SPEC 11's
states, restarts and queues in the `ps` and `queue` tables."""

from __future__ import annotations

from typing import Any

import pytest

from jupyter_exec.render.html_render import ps_html, view_html
from jupyter_exec.render.presentation import (
    format_bytes,
    format_duration,
    format_queue,
    format_restarts,
    format_status,
    gap_line,
    one_line,
    ps_text,
    queue_text,
)
from jupyter_exec.render.terminal import TerminalLog
from jupyter_exec.wire.models import ProcessInfo, QueueInfo


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (3.21, "3.2s"), (42, "42s"), (185, "3m 05s"), (7380, "2h 03m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_status() -> None:
    assert format_status("running", None, None, 3.2) == "running 3.2s"
    assert format_status("exited", 0, None, 1.0) == "exited 0 after 1.0s"
    assert format_status("closed", 143, "SIGTERM", 2.0) == "killed by SIGTERM after 2.0s"


def test_gap_line_is_a_line_of_its_own() -> None:
    """Where a retention limit dropped output (the REST download, `jupyter exec logs`)."""
    line = b"[jupyter-exec: output seqs 1-523 dropped by a retention limit]\n"
    assert gap_line(range(1, 524)) == gap_line(range(1, 524), b"\n") == line
    # Output that ended mid-line (a gap after chunks a stopped log still holds).
    mid_line = b"\n[jupyter-exec: output seq 4 dropped by a retention limit]\n"
    assert gap_line(range(4, 5), b"x") == mid_line


def test_ps_table() -> None:
    info = ProcessInfo(
        process_id="train", argv=["python", "train.py"], cwd="/", tty=False, pid=1, label=None,
        lifetime="detached", state="closed", started_at=1_000, exited_at=4_000, exit_code=143,
        signal="SIGTERM", next_seq=3, first_seq=1, output_bytes=0,
    )  # fmt: skip
    text = ps_text([info])
    assert text.splitlines()[0].split() == ["ID", "STATE", "EXIT", "RUNTIME", "COMMAND"]
    assert "train  closed  143 (SIGTERM)  3.0s     python train.py" in text
    assert "<td style='text-align:left'>train</td>" in ps_html([info])
    assert ps_html([]) == "<i>no processes</i>"


def test_ps_table_keeps_one_row_per_process_for_multi_line_commands() -> None:
    script = ProcessInfo(
        process_id="s1", argv=["bash", "-c", "echo one\r\necho two\n\x1b[31m"], cwd="/",
        tty=False, pid=1, label=None, lifetime="detached", state="running", started_at=0,
        exited_at=None, exit_code=None, signal=None, next_seq=1, first_seq=1, output_bytes=0,
    )  # fmt: skip
    labelled = ProcessInfo(**{**script.__dict__, "process_id": "s2", "label": "a\nb"})
    text = ps_text([script, labelled])
    assert len(text.splitlines()) == 3  # header + one row each
    assert "bash -c 'echo one⏎echo two⏎\\x1b[31m'" in text
    assert text.splitlines()[2].endswith("  a⏎b")
    narrow = ps_text([script], width=60)
    assert all(len(row) <= 60 for row in narrow.splitlines())
    assert narrow.splitlines()[1].endswith("…")
    assert ps_text([script], width=5).splitlines()[1].endswith("…")  # never below 20 columns
    assert "echo one⏎echo two" in ps_html([script])


def test_one_line_cuts_with_an_ellipsis() -> None:
    assert one_line("abc", 3) == "abc"
    assert one_line("abcd", 3) == "ab…"
    assert one_line("a\tb\x7f") == "a\\x09b\\x7f"


def _served(**changes: object) -> ProcessInfo:
    """A running server with SPEC 11 usage and ports (two addresses of one port)."""
    info = ProcessInfo(
        process_id="web", argv=["python", "-m", "http.server"], cwd="/", tty=False, pid=7,
        label=None, lifetime="detached", state="running", started_at=0, exited_at=None,
        exit_code=None, signal=None, next_seq=5, first_seq=1, output_bytes=10,
        ports=[
            {"port": 8000, "address": "0.0.0.0", "pid": 8, "url": "/base/proxy/8000/"},
            {"port": 8000, "address": "::", "pid": 8, "url": "/base/proxy/8000/"},
        ],
        usage={"cpuPercent": 45.2, "cpuSeconds": 12.3, "rssBytes": 215 << 20,
               "peakRssBytes": 300 << 20, "processes": 3},
    )  # fmt: skip
    return ProcessInfo(**{**info.__dict__, **changes})


def test_ps_shows_usage_ports_and_a_cut_log() -> None:
    running, ended = (
        _served(),
        _served(
            process_id="old", state="closed", exited_at=5_000, exit_code=0, ports=[], first_seq=9
        ),
    )
    header, first, second = ps_text([running, ended]).splitlines()
    assert header.split() == [
        "ID", "STATE", "EXIT", "RUNTIME", "CPU", "MEM", "PROCS", "PORTS", "COMMAND"
    ]  # fmt: skip
    assert "45% 12s" in first and "215M" in first and "  3  " in first and "8000" in first
    assert "closed, log cut" in second and "12s" in second and "peak 300M" in second
    table = ps_html([running, ended])
    assert '<a href="/base/proxy/8000/" target="_blank"' in table and table.count(":8000<") == 1
    assert "peak 300M" in table


def test_view_header_links_each_port_once_and_says_what_it_costs() -> None:
    log = TerminalLog()
    header = view_html(_served(), log, 3.0)
    assert header.count('href="/base/proxy/8000/"') == 1
    assert "cpu 45% · 215M · 3 processes" in header
    plain = view_html(_served(ports=[{"port": 9000, "address": "::1", "pid": 8}]), log, 3.0)
    assert " · :9000" in plain and "href" not in plain  # no Jupyter: no link
    ended = view_html(_served(state="exited", exit_code=0, exited_at=3000, ports=[]), log, 3.0)
    assert "cpu 12.3s · peak 300M" in ended


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (512, "512B"), (48 << 10, "48K"), (5 << 19, "2.5M"), (215 << 20, "215M"),
     (int(1.25 * (1 << 30)), "1.2G")],
)  # fmt: skip
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


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
