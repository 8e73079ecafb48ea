"""presentation.py and its HTML twin html_render.py: status lines, durations, sizes, ps
tables and the view header, as text and as HTML (each table test checks both)."""

from __future__ import annotations

import pytest

from jupyter_exec.render.html_render import ps_html, view_html
from jupyter_exec.render.presentation import (
    format_bytes,
    format_duration,
    format_status,
    one_line,
    ps_text,
)
from jupyter_exec.render.terminal import TerminalLog
from jupyter_exec.wire.models import ProcessInfo


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
