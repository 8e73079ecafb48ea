"""``jupyter exec queue [NAME [--parallel N]]``: SPEC 11 queues from a shell.

Kept out of cli.py (which stays about processes). Without NAME it lists every
queue (``queue/list``): its parallelism, how many of its processes run and how
many wait. With NAME it shows that queue; ``--parallel N`` sets how many of its
processes may run at once (``queue/set``; a queue nobody set runs one at a
time). Processes join a queue with ``run --queue NAME`` (schedule_options.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..render.presentation import queue_text
from ..wire.errors import ExecError
from .schedule_options import check_queue_name

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = ["add_queue_parser", "queue_command"]


def add_queue_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``queue`` subcommand on `sub` (argparse's subparsers action)."""
    queue: argparse.ArgumentParser = sub.add_parser(
        "queue", help="list queues, or show or set one's parallelism (run --queue NAME)"
    )
    queue.add_argument("name", nargs="?", metavar="NAME", help="the queue (default: all)")
    queue.add_argument(
        "--parallel", "-p", type=int, metavar="N", help="let N of its processes run at once"
    )
    queue.add_argument("--json", action="store_true", help="one JSON array of queues")
    return queue


async def queue_command(client: ExecClient, args: argparse.Namespace) -> int:
    """List, show or set (module docstring); 2 for a bad line, 1 for an unknown queue."""
    if args.parallel is not None:
        if args.name is None:
            return _fail("--parallel needs a queue NAME: jupyter exec queue NAME --parallel N", 2)
        if args.parallel < 1:
            return _fail(f"--parallel {args.parallel} must be at least 1", 2)
    if args.name is not None:
        try:
            check_queue_name(args.name)
        except ValueError as exc:
            return _fail(str(exc), 2)
    if args.parallel is not None:
        try:
            await client.queue_set(args.name, args.parallel)
        except ExecError as exc:
            return _fail(exc.message, 1)
    queues = await client.queues()
    if args.name is not None:
        queues = [q for q in queues if q.name == args.name]
        if not queues:
            return _fail(
                f"no queue named {args.name} yet (run --queue {args.name} makes one, "
                f"running 1 at a time; queue {args.name} --parallel N sets it)",
                1,
            )
    if args.json:
        print(json.dumps([q.wire() for q in queues], indent=2))
    else:
        print(queue_text(queues))
    return 0


def _fail(message: str, status: int) -> int:
    print(f"jupyter exec queue: {message}", file=sys.stderr)
    return status
