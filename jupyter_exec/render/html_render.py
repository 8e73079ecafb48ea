"""HTML faces of processes: the live view / handle summary and the ``%ps`` table.

Inline styles only (a notebook output has no stylesheet of ours), JupyterLab
CSS variables with fallbacks, every string escaped. The text versions are in
:mod:`jupyter_exec.render.presentation`.
"""

from __future__ import annotations

import html
import shlex

from ..wire.models import ProcessInfo
from .presentation import PS_HEADER, format_status, ps_rows
from .terminal import TerminalLog

__all__ = ["ps_html", "view_html"]

_STATUS_COLOURS = {"running": "#1a73e8", "ok": "#188038", "failed": "#d93025"}


def view_html(info: ProcessInfo, log: TerminalLog, runtime: float, note: str = "") -> str:
    """A header (id, command, coloured status) over the log's lines, newest kept in view."""
    status = format_status(info.state, info.exit_code, info.signal, runtime)
    if info.state == "running":
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
        f"{html.escape(dropped)}{html.escape(note)}</div>"
    )
    if not body:
        return f'<div class="jupyter-exec-view">{header}</div>'
    # column-reverse keeps the box scrolled to its newest line.
    return (
        f'<div class="jupyter-exec-view">{header}'
        f'<div style="max-height:24em;overflow:auto;display:flex;flex-direction:column-reverse">'
        f'<pre style="margin:0;white-space:pre-wrap">{body}</pre></div></div>'
    )


def ps_html(infos: list[ProcessInfo]) -> str:
    if not infos:
        return "<i>no processes</i>"
    head = "".join(f"<th style='text-align:left'>{h.lower()}</th>" for h in PS_HEADER)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td style='text-align:left'>{'<code>' if i == 4 else ''}{html.escape(cell)}"
            f"{'</code>' if i == 4 else ''}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in ps_rows(infos)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
