"""``jupyter-exec mcp``: the SPEC 10 tools as an MCP server on stdio.

Processes land in the exec server found as the CLI finds it
(:mod:`jupyter_exec.client.discovery`: ``--url``/``--token``, ``$JUPYTER_EXEC_URL``/
``$JUPYTER_EXEC_TOKEN``, running-server records); with none, in a registry
embedded in this process (a one-line notice on stderr says so: those
processes end with it). stdout carries MCP only; notices go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from ..client.discovery import find_daemon, find_server
from ..client.exec_client import ExecClient

CLIENT_NAME = "jupyter-exec-mcp"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-exec mcp",
        description="Serve jupyter-exec's process tools to an agent over MCP (stdio).",
    )
    parser.add_argument("--url", help="exec server URL (default: found as `jupyter exec` finds it)")
    parser.add_argument("--token", help="its token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(_serve(args.url, args.token))
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(url: str | None, token: str | None) -> None:
    from .tools import ClientSource, build_server

    target = find_server(url, token, any_server=True)
    service = None
    connect: Callable[[], Awaitable[ExecClient]]
    if target is not None:
        print(f"jupyter-exec mcp: processes run in {target.describe()}", file=sys.stderr)

        def connect() -> Awaitable[ExecClient]:
            return ExecClient.connect(target.url, target.token, client_name=CLIENT_NAME)
    elif (daemon := find_daemon()) is not None:
        print("jupyter-exec mcp: processes run in this user's exec daemon", file=sys.stderr)

        def connect() -> Awaitable[ExecClient]:
            from ..client.unix_transport import connect_daemon, daemon_front

            # Its own rules (SPEC 3): this process's cwd and environment, as an agent
            # host started it, never those of the server that started the daemon.
            front = daemon_front("jupyter-exec mcp")
            return connect_daemon(daemon, front=front, client_name=CLIENT_NAME)
    else:
        from ..client.embedded import EMBEDDED, connect_service
        from ..config import ExecConfig
        from ..rpc.service import build_service

        print(
            "jupyter-exec mcp: no jupyter-exec server found; processes run in this "
            "process and end with it (start JupyterLab, or pass --url/--token)",
            file=sys.stderr,
        )
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
