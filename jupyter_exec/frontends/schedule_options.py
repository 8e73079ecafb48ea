"""The scheduling options of ``jupyter exec run`` and ``%exec``: SPEC 11's ``restart``,
``queue`` and ``after`` as ``process/start`` params.

``--restart POLICY`` (``never``, ``on-failure``, ``always``) with ``--max-restarts N``
and ``--restart-delay MS`` becomes ``restart: {policy, maxRestarts, delayMs}``;
``--queue NAME`` waits for a free slot of that queue (``jupyter exec queue NAME
--parallel N`` sets how many); ``--after ID`` (repeatable) starts it once each of
those exited with 0. The server checks what only it can know (an unknown id, a
cycle); what is wrong on the line itself is said here, before anything starts.
Plain standard library, so the CLI stays quick to start.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["RESTART_POLICIES", "add_schedule_options", "check_queue_name", "schedule_params"]

#: SPEC 11 `restart.policy`.
RESTART_POLICIES = ("never", "on-failure", "always")
#: SPEC 11's caps (wire/protocol.py checks them again): a queue name's length, the
#: first restart delay (it doubles up to this), how many restarts one policy may ask for.
MAX_QUEUE_NAME = 128
MAX_DELAY_MS = 60_000
MAX_RESTARTS = 1_000_000


def check_queue_name(name: str) -> str:
    """``name`` if it can name a queue; ``ValueError`` saying why not."""
    if not name.strip():
        raise ValueError("a queue name must not be empty")
    if len(name) > MAX_QUEUE_NAME:
        raise ValueError(f"queue name {name[:20]!r}... is longer than {MAX_QUEUE_NAME} characters")
    return name


def schedule_params(
    restart: str | None,
    max_restarts: int | None,
    restart_delay: int | None,
    queue: str | None,
    after: list[str] | None,
) -> dict[str, Any]:
    """Keyword arguments for ``ExecClient.start``: ``restart``, ``queue``, ``after``
    (only those given). ``ValueError`` with one sentence for a bad option."""
    options: dict[str, Any] = {}
    if restart is not None:
        if restart not in RESTART_POLICIES:
            raise ValueError(
                f"unknown restart policy {restart!r}; use one of {', '.join(RESTART_POLICIES)}"
            )
        spec: dict[str, Any] = {"policy": restart}
        if max_restarts is not None:
            if not 0 <= max_restarts <= MAX_RESTARTS:
                raise ValueError(f"--max-restarts {max_restarts} must be 0 to {MAX_RESTARTS}")
            spec["maxRestarts"] = max_restarts
        if restart_delay is not None:
            if not 0 <= restart_delay <= MAX_DELAY_MS:
                raise ValueError(
                    f"--restart-delay {restart_delay} must be 0 to {MAX_DELAY_MS} milliseconds"
                )
            spec["delayMs"] = restart_delay
        options["restart"] = spec
    elif max_restarts is not None or restart_delay is not None:
        given = "--max-restarts" if max_restarts is not None else "--restart-delay"
        raise ValueError(f"{given} needs --restart on-failure or --restart always")
    if queue is not None:
        options["queue"] = check_queue_name(queue)
    if after:
        for process_id in after:
            if not process_id.strip():
                raise ValueError("--after needs a process id")
        options["after"] = list(dict.fromkeys(after))  # each once, in the order given
    return options


def add_schedule_options(parser: argparse.ArgumentParser) -> None:
    """``--restart``, ``--max-restarts``, ``--restart-delay``, ``--queue``, ``--after``."""
    parser.add_argument(
        "--restart",
        metavar="POLICY",
        help="restart it when it ends: never, on-failure or always",
    )
    parser.add_argument(
        "--max-restarts", type=int, metavar="N", help="with --restart: at most N (default 10)"
    )
    parser.add_argument(
        "--restart-delay",
        type=int,
        metavar="MS",
        help="with --restart: first delay, doubling up to 60 s (default 1000)",
    )
    parser.add_argument(
        "--queue", metavar="NAME", help="wait for a free slot of queue NAME (see: queue)"
    )
    parser.add_argument(
        "--after",
        action="append",
        metavar="ID",
        help="start once process ID exited with 0 (repeatable)",
    )
