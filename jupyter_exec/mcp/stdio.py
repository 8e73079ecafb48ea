"""``jupyter-exec mcp``: the SPEC 10 tools as an MCP server on stdio.

Processes land in the exec server found as the CLI finds it
(:mod:`jupyter_exec.client.discovery`: ``--url``/``--token``, ``$JUPYTER_EXEC_URL``/
``$JUPYTER_EXEC_TOKEN``, running-server records); with none, in this user's
exec daemon, joined or started now (SPEC 3 "Every front"), under the rules of
a shell: this process's cwd and environment. An agent's processes then
outlive its session and show up in the panel, ``%ps`` and ``jupyter exec
ps``. Only ``--embedded``, or a daemon that cannot run, keeps them in a
registry inside this process (they end with it; a notice says why).
stdout carries MCP only; notices go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..client.discovery import find_server, user_daemon
from ..client.exec_client import ExecClient

__all__ = ["CLIENT_NAME", "FRONT", "build_parser", "main"]


CLIENT_NAME = "jupyter-exec-mcp"
#: How the daemon names this front's rules (SPEC 3).
FRONT = "jupyter-exec mcp"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-exec mcp",
        description="Serve jupyter-exec's process tools to an agent over MCP (stdio).",
    )
    parser.add_argument("--url", help="exec server URL (default: found as `jupyter exec` finds it)")
    parser.add_argument("--token", help="its token")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="run the processes inside this process (they end with the session)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.embedded and args.url:
        parser.error("--embedded and --url exclude each other")
    try:
        asyncio.run(_serve(args.url, args.token, args.embedded))
    except KeyboardInterrupt:
        return 130
    return 0


def _say(notice: str) -> None:
    print(f"jupyter-exec mcp: {notice}", file=sys.stderr, flush=True)


async def _serve(url: str | None, token: str | None, embedded: bool = False) -> None:
    from .tools import ClientSource, build_server

    target = None if embedded else find_server(url, token, any_server=True)
    service = None
    connect: Callable[[], Awaitable[ExecClient]]
    daemon = None if embedded or target is not None else await _daemon()
    if target is not None:
        _say(f"processes run in {target.describe()}")

        async def connect() -> ExecClient:
            try:
                return await ExecClient.connect(target.url, target.token, client_name=CLIENT_NAME)
            except Exception as exc:
                if target.explicit:
                    raise
                _say(f"cannot use {target.describe()} ({exc}); using this user's exec daemon")
                return await _connect_daemon()
    elif isinstance(daemon, Path):
        _say(f"processes run in this user's exec daemon ({daemon}); they outlive this session")
        connect = _connect_daemon
    else:
        from ..config import ExecConfig
        from ..embedded import EMBEDDED, connect_service
        from ..rpc.service import build_service

        why = daemon if isinstance(daemon, str) else "asked for with --embedded"
        _say(f"{why}; processes run in this process and end with it")
        config = ExecConfig(default_lifetime="detached")
        service = build_service(config, config.front_rules(EMBEDDED))

        def connect() -> Awaitable[ExecClient]:
            return connect_service(service, client_name=CLIENT_NAME)

    source = ClientSource(connect)
    try:
        await build_server(source).run_stdio_async()
    finally:
        await source.aclose()
        if service is not None:
            await service.aclose()


async def _connect_daemon() -> ExecClient:
    """A client of this user's exec daemon, found (or started) again at each connect: a
    daemon replaced meanwhile is started anew."""
    from ..client.unix_transport import connect_daemon, daemon_front

    path = await asyncio.to_thread(user_daemon)
    # Its own rules (SPEC 3): this process's cwd and environment, as an agent host
    # started it, never those of the server that started the daemon.
    return await connect_daemon(path, front=daemon_front(FRONT), client_name=CLIENT_NAME)


async def _daemon() -> Path | str:
    """This user's exec daemon (started if none runs), or why none can run."""
    from ..daemon.start import DaemonStartError

    try:
        return await asyncio.to_thread(user_daemon)
    except (DaemonStartError, OSError) as exc:
        return f"no exec daemon can run here ({exc})"
