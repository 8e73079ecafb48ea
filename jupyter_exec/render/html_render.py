"""HTML faces of processes: the live view / handle summary and the ``%ps`` table.

Inline styles only (a notebook output has no stylesheet of ours), JupyterLab
CSS variables with fallbacks, every string escaped. The text versions are in
:mod:`jupyter_exec.render.presentation`.
"""

from __future__ import annotations

import html
import shlex

from ..wire.models import ProcessInfo
from .presentation import (
    LIVE_STATES,
    PS_HEADER,
    format_bytes,
    format_restarts,
    format_status,
    ps_columns,
    ps_rows,
)
from .terminal import TerminalLog

__all__ = ["port_links", "ps_html", "view_html"]

_STATUS_COLOURS = {"running": "#1a73e8", "ok": "#188038", "failed": "#d93025"}


def view_html(info: ProcessInfo, log: TerminalLog, runtime: float, note: str = "") -> str:
    """A header (id, command, coloured status) over the log's lines, newest kept in view."""
    status = format_status(info.state, info.exit_code, info.signal, runtime)
    if info.state in LIVE_STATES:
        colour = _STATUS_COLOURS["running"]
    else:
        colour = _STATUS_COLOURS["ok" if info.exit_code == 0 else "failed"]
    dropped = f" · {log.dropped_lines} earlier lines not shown" if log.dropped_lines else ""
    body = log.html()
    header = (
        f'<div style="font-family:var(--jp-code-font-family,monospace);font-size:12px;'
        f'opacity:0.85;margin-bottom:2px">'
        f"<b>{html.escape(info.process_id)}</b> · <code>{html.escape(shlex.join(info.argv))}</code>"
        f' · <span style="color:{colour};font-weight:bold">{html.escape(status)}</span>'
        f"{_schedule_html(info)}{_usage_html(info)}{port_links(info)}{html.escape(dropped)}{html.escape(note)}</div>"
    )
    if not body:
        return f'<div class="jupyter-exec-view">{header}</div>'
    # column-reverse keeps the box scrolled to its newest line.
    return (
        f'<div class="jupyter-exec-view">{header}'
        f'<div style="max-height:24em;overflow:auto;display:flex;flex-direction:column-reverse">'
        f'<pre style="margin:0;white-space:pre-wrap">{body}</pre></div></div>'
    )


def _schedule_html(info: ProcessInfo) -> str:
    """`` · restarts 2/10 · queue gpu, after train`` (SPEC 11), when it has them."""
    restarts = format_restarts(info)
    parts = [
        f"restarts {restarts}" if restarts else "",
        f"queue {info.queue}" if info.queue else "",
        f"after {', '.join(info.after)}" if info.after else "",
    ]
    return html.escape("".join(f" · {part}" for part in parts if part))


def _usage_html(info: ProcessInfo) -> str:
    """`` · cpu 45% · 215M · 3 processes`` while it runs; CPU time and peak after."""
    usage = info.usage
    if not usage:
        return ""
    if info.state == "running":
        count = usage.get("processes", 0)
        procs = f" · {count} processes" if count > 1 else ""
        text = (
            f" · cpu {usage.get('cpuPercent', 0):.0f}% · {format_bytes(usage.get('rssBytes', 0))}"
            f"{procs}"
        )
    else:
        text = (
            f" · cpu {usage.get('cpuSeconds', 0):.1f}s"
            f" · peak {format_bytes(usage.get('peakRssBytes', 0))}"
        )
    return html.escape(text)


def port_links(info: ProcessInfo) -> str:
    """SPEC 11 ports: `` · :8000`` each, a link through jupyter-server-proxy where the
    server gave its URL (inside Jupyter), plain text elsewhere."""
    seen: dict[int, str | None] = {}
    for port in info.ports:
        number = int(port["port"])
        seen[number] = seen.get(number) or port.get("url")
    parts = []
    for number, url in sorted(seen.items()):
        if url:
            parts.append(
                f'<a href="{html.escape(url, quote=True)}" target="_blank" '
                f'rel="noopener" title="open port {number} through Jupyter">:{number}</a>'
            )
        else:
            parts.append(f":{number}")
    return "".join(f" · {part}" for part in parts)


def ps_html(infos: list[ProcessInfo]) -> str:
    if not infos:
        return "<i>no processes</i>"
    full = ps_rows(infos)
    shown = ps_columns(full)
    head = "".join(f"<th style='text-align:left'>{PS_HEADER[i].lower()}</th>" for i in shown)
    ports_at, command_at = PS_HEADER.index("PORTS"), len(PS_HEADER) - 1
    rows = []
    for info, row in zip(infos, full, strict=True):
        cells = [html.escape(cell) for cell in row]
        cells[ports_at] = port_links(info).replace(" · ", " ").strip()
        cells[command_at] = f"<code>{cells[command_at]}</code>"
        rows.append("<tr>" + "".join(f"<td style='text-align:left'>{cells[i]}</td>" for i in shown))
    body = "</tr>".join(rows) + "</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
