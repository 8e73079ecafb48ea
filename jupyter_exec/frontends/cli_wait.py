"""``jupyter exec wait`` and ``run --wait-for-port``: word when processes end or listen.

Kept out of cli.py (which stays about commands). ``wait ID...`` exits with
124 (as timeout(1)) when one of them still runs at ``--timeout``, whatever the
others' statuses: the wait did not end, so their worst is not known yet (a
script must not read a 143 as "all ended"). Once every one ended, it exits with
their worst status (SPEC 11 `process/wait`): the highest (128+N for signal N),
1 for one that never started (a failed ``--after``). ``run --wait-for-port``
starts the process detached and returns once its tree listens on a TCP port
(SPEC 11 `ports`), printing each with its link through Jupyter where the
server gives one.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..render.presentation import format_status

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = ["STILL_RUNNING", "add_port_options", "add_wait_parser", "port_of", "wait_command"]


#: `wait`'s status for a process still running at its timeout, as timeout(1)'s.
STILL_RUNNING = 124


def add_port_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--wait-for-port",
        action="store_true",
        help="detach once it listens on a TCP port, and print the port (and its link)",
    )
    run.add_argument(
        "--port-timeout", type=float, default=60.0, metavar="S", help="for --wait-for-port"
    )


def add_wait_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``wait`` subcommand on `sub` (argparse's subparsers action)."""
    wait: argparse.ArgumentParser = sub.add_parser(
        "wait", help="wait until processes exit; exit 124 if one still runs, else the worst status"
    )
    wait.add_argument("ids", nargs="+", metavar="ID")
    wait.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    return wait


async def port_of(client: ExecClient, process_id: str, timeout: float) -> int:
    """``run --wait-for-port``: its id and ports once it listens; it keeps running."""
    print(process_id, flush=True)
    try:
        info = await client.wait_for_port(process_id, timeout)
    except TimeoutError as exc:
        return _fail(f"{exc}; it keeps running", 1)
    if not info.ports:
        status = format_status(info.state, info.exit_code, info.signal, None)
        return _fail(f"{process_id} {status} before it listened on a port", 1)
    for port in info.ports:
        link = f"  {port['url']}" if port.get("url") else ""
        print(f"listening on {port['address']}:{port['port']} (pid {port['pid']}){link}")
    return 0


async def wait_command(client: ExecClient, args: argparse.Namespace) -> int:
    """``wait ID...``: one line per process; 124 while one runs, else the worst status
    (module docstring)."""
    if args.timeout is not None and args.timeout < 0:
        return _fail(f"--timeout {args.timeout} must not be negative", 2, "wait")
    worst, running = 0, False
    for ended in await client.wait_all(args.ids, args.timeout):
        if not ended["exited"]:
            print(f"{ended['processId']}: still running")
            running = True
            continue
        code = ended["exitCode"]
        print(f"{ended['processId']}: {format_status('exited', code, ended['signal'], None)}")
        worst = max(worst, 1 if code is None else code)
    return STILL_RUNNING if running else worst


def _fail(message: str, status: int, command: str = "run") -> int:
    print(f"jupyter exec {command}: {message}", file=sys.stderr)
    return status
