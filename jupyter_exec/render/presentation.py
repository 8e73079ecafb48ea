"""How a process is shown as text: status lines, exit endings, ``ps`` tables, the line
that says where a retention limit dropped output (`gap_line`).

Shared by the CLI, the magics, the handle, the live view and the REST download. Plain functions
over :class:`~jupyter_exec.wire.models.ProcessInfo`, no I/O; HTML versions are in
:mod:`jupyter_exec.render.html_render`, the terminal emulator in
:mod:`jupyter_exec.render.terminal`.
"""

from __future__ import annotations

import re
import shlex
import signal as _signal
import time
from typing import TYPE_CHECKING

from ..wire.models import ProcessInfo, QueueInfo

if TYPE_CHECKING:
    from .terminal import TerminalLog

__all__ = [
    "PS_HEADER",
    "ending",
    "format_bytes",
    "format_duration",
    "format_ports",
    "format_queue",
    "format_restarts",
    "format_status",
    "format_usage",
    "gap_line",
    "not_running_text",
    "one_line",
    "process_runtime",
    "ps_columns",
    "ps_rows",
    "ps_text",
    "queue_text",
    "returncode",
    "view_text",
]

PS_HEADER = (
    "ID", "STATE", "EXIT", "RESTARTS", "RUNTIME", "CPU", "MEM", "PROCS", "PORTS", "QUEUE",
    "COMMAND",
)  # fmt: skip
#: A row of the ``ps`` table, one cell per `PS_HEADER` column.
PsRow = tuple[str, str, str, str, str, str, str, str, str, str, str]
#: Columns shown only when a row has a value there.
OPTIONAL_COLUMNS = ("RESTARTS", "CPU", "MEM", "PROCS", "PORTS", "QUEUE")
#: States in which a process has not ended (SPEC 11 adds `queued` and `restarting`).
LIVE_STATES = ("running", "queued", "restarting")
#: The narrowest COMMAND column a width limit leaves (the table may then wrap).
MIN_COMMAND_WIDTH = 20
_NEWLINES = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m 05s``, ``2h 03m``: short and monotonic in width."""
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def format_bytes(size: int) -> str:
    """``512B``, ``48K``, ``215M``, ``1.2G``: a byte count in four characters or so."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)}B"
    return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"


def format_usage(info: ProcessInfo) -> tuple[str, str, str]:
    """SPEC 11 `usage` as (CPU, MEM, PROCS) cells: ``45% 12s``, ``215M``, ``3`` while it
    runs; the CPU time and ``peak 215M`` once it ended; empty cells before a sample."""
    usage = info.usage
    if not usage:
        return "", "", ""
    cpu_time = format_duration(usage.get("cpuSeconds", 0.0))
    if info.state == "running":
        cpu = f"{usage.get('cpuPercent', 0.0):.0f}% {cpu_time}"
        return cpu, format_bytes(usage.get("rssBytes", 0)), str(usage.get("processes", ""))
    peak = usage.get("peakRssBytes", 0)  # 0: it ended before a sample saw it
    return cpu_time, f"peak {format_bytes(peak)}" if peak else "", ""


def format_ports(info: ProcessInfo) -> str:
    """SPEC 11 `ports` as ``8000,8888``: each port once, whichever address."""
    return ",".join(str(p) for p in sorted({int(p["port"]) for p in info.ports}))


def gap_line(seqs: range, last: bytes = b"") -> bytes:
    """The line that stands where a retention limit dropped `seqs` (SPEC 4 `firstSeq`, 6):
    in the REST download's body, on ``jupyter exec logs``' stderr. On a line of its own:
    a newline first unless the byte before it, `last`, was one (or there was none)."""
    which = f"seq {seqs.start}" if len(seqs) == 1 else f"seqs {seqs.start}-{seqs[-1]}"
    line = f"[jupyter-exec: output {which} dropped by a retention limit]\n".encode()
    return line if last in (b"", b"\n") else b"\n" + line


def format_status(
    state: str, exit_code: int | None, signal: str | None, runtime: float | None
) -> str:
    """The status line of a live view or a ``ps`` row.

    ``running 3.2s`` / ``exited 0 after 3.2s`` / ``killed by SIGTERM after 2.0s`` /
    ``never started`` (SPEC 11: ended with no exit code, its `failure` says why).
    """
    if state in LIVE_STATES:
        return f"{state} {format_duration(runtime)}" if runtime is not None else state
    if signal:
        text = f"killed by {signal}"
    elif exit_code is not None:
        text = f"exited {exit_code}"
    elif state in ("exited", "closed"):
        return "never started"
    else:
        text = state
    return f"{text} after {format_duration(runtime)}" if runtime is not None else text


def process_runtime(info: ProcessInfo, now_ms: float | None = None) -> float:
    """Seconds from start to exit (or to now while running)."""
    end = info.exited_at if info.exited_at is not None else (now_ms or time.time() * 1000)
    return max(0.0, (end - info.started_at) / 1000)


def not_running_text(process_id: str, state: str) -> str:
    """What a terminate that found no run to stop did, by the state it found: a queued
    process ends without starting and one between two runs restarts no more (SPEC 11)."""
    if state == "queued":
        return f"{process_id} was queued: it ends without starting"
    if state == "restarting":
        return f"{process_id} was waiting to restart: it restarts no more"
    return f"{process_id} was not running"


def returncode(exit_code: int | None, signal: str | None) -> int | None:
    """SPEC 5's exit code (128+N on signal N) as ``subprocess`` has it: -N on signal N."""
    if exit_code is None:
        return None
    if signal and exit_code > 128:
        return -(exit_code - 128)
    return exit_code


def ending(code: int) -> str:
    """How a process ended, from its ``subprocess``-style return code, for sentences."""
    if code < 0:
        try:
            return f"was killed by {_signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def one_line(text: str, width: int | None = None) -> str:
    """``text`` fit for one table row: newlines as ``⏎``, other control characters
    escaped (``\\x1b``), and cut to ``width`` characters with an ellipsis."""
    text = _NEWLINES.sub("⏎", text)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if width is not None and len(text) > width:
        return text[: max(width - 1, 0)] + "…"
    return text


def format_restarts(info: ProcessInfo) -> str:
    """SPEC 11 restarts as ``2/10`` (of its policy's most), ``2`` past a ``never``
    policy, empty for a process without restarts nor a policy that makes any."""
    policy = info.restart_policy or {}
    if policy.get("policy") in ("on-failure", "always"):
        return f"{info.restarts}/{policy.get('maxRestarts', '?')}"
    return str(info.restarts) if info.restarts else ""


def format_queue(info: ProcessInfo) -> str:
    """SPEC 11 `queue` and `after` as ``gpu``, ``after train-1,train-2``, or both; past
    two dependencies, how many more (``after lr-1,lr-2 +4``: a sweep stays one row)."""
    more = f" +{len(info.after) - 2}" if len(info.after) > 2 else ""
    after = f"after {','.join(info.after[:2])}{more}" if info.after else ""
    return ", ".join(part for part in (info.queue or "", after) if part)


def ps_rows(infos: list[ProcessInfo]) -> list[PsRow]:
    """One row per process, every cell on one line (:func:`one_line`). A log whose
    start a retention limit cut (``firstSeq`` > 1) says so in its state. A process
    that never started (SPEC 11: a failed dependency) has no runtime."""
    rows: list[PsRow] = []
    for info in infos:
        exit_text = "" if info.exit_code is None else str(info.exit_code)
        if info.signal:
            exit_text = f"{exit_text} ({info.signal})"
        elif info.exit_code is None and info.state in ("exited", "closed") and info.failure:
            exit_text = "never started"
        command = info.label or shlex.join(info.argv)
        state = f"{info.state}, log cut" if info.first_seq > 1 else info.state
        waited = info.state == "queued" or (info.pid is None and exit_text == "never started")
        runtime = "" if waited else format_duration(process_runtime(info))
        rows.append(
            (one_line(info.process_id), state, exit_text, format_restarts(info), runtime,
             *format_usage(info), format_ports(info), one_line(format_queue(info)),
             one_line(command))
        )  # fmt: skip
    return rows


def ps_columns(rows: list[PsRow]) -> list[int]:
    """The columns of `PS_HEADER` worth showing: `OPTIONAL_COLUMNS` only when a row has
    a value there (an older server sends no usage; few processes listen, restart or queue)."""
    optional = {PS_HEADER.index(name) for name in OPTIONAL_COLUMNS}
    return [i for i in range(len(PS_HEADER)) if i not in optional or any(row[i] for row in rows)]


def ps_text(infos: list[ProcessInfo], width: int | None = None) -> str:
    """The ``ps`` table; with ``width`` (a terminal's columns) long commands are cut to fit."""
    full = ps_rows(infos)
    shown = ps_columns(full)
    rows = [[row[i] for i in shown] for row in [PS_HEADER, *full]]
    last = len(shown) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(last)]
    room = None if width is None else max(width - sum(widths) - 2 * last, MIN_COMMAND_WIDTH)
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:last], widths, strict=True))
        + "  "
        + one_line(row[last], room)
        for row in rows
    )


QUEUE_HEADER = ("QUEUE", "PARALLEL", "RUNNING", "QUEUED")


def queue_text(queues: list[QueueInfo]) -> str:
    """SPEC 11 `queue/list` as a table: one row per queue, under `QUEUE_HEADER`."""
    rows: list[tuple[str, ...]] = [QUEUE_HEADER]
    rows += [(q.name, str(q.parallel), str(q.running), str(q.queued)) for q in queues]
    widths = [max(len(one_line(row[i])) for row in rows) for i in range(len(QUEUE_HEADER) - 1)]
    return "\n".join(
        "  ".join(one_line(cell).ljust(w) for cell, w in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def view_text(info: ProcessInfo, log: TerminalLog, runtime: float, lines: int = 20) -> str:
    """The plain-text face of a live view: the last ``lines`` lines and a status line."""
    status = format_status(info.state, info.exit_code, info.signal, runtime)
    return "\n".join([*log.text().splitlines()[-lines:], f"[{info.process_id}: {status}]"])
