"""`jupyter-exec bridge URL`: newline-delimited JSON on stdio, relayed to a websocket.

For clients that start a stdio server themselves (Codex's `environments.toml`
`program`) when the server is only reachable by websocket with an
`Authorization` header, e.g. a JupyterHub user server, which refuses
`?token=`: `program = "jupyter-exec"`, `args = ["bridge", URL, "--token-file", F]`.
Frames are passed through untouched in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from ..client.exec_client import websocket_url
from ..transports.serve import stdout_writer
from ..wire.lines import as_line

__all__ = ["STDIN_LIMIT", "build_parser", "main", "relay"]


STDIN_LIMIT = 64 << 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jupyter-exec bridge", description="Relay stdio JSON-RPC to a jupyter-exec websocket."
    )
    p.add_argument("url", help="ws(s):// URL of the endpoint, or a Jupyter server's http(s):// URL")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--token", help="token (default: $JUPYTER_EXEC_TOKEN)")
    group.add_argument("--token-file", type=Path, help="read the token from this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = args.token or os.environ.get("JUPYTER_EXEC_TOKEN")
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            print(f"jupyter-exec bridge: cannot read --token-file: {exc.strerror}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(relay(websocket_url(args.url), token))
    except KeyboardInterrupt:
        return 130


async def relay(url: str, token: str | None) -> int:
    """Until stdin ends or the server closes; 1 if the connection is refused."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    headers = {"Authorization": f"token {token}"} if token else None
    try:
        ws = await connect(url, additional_headers=headers, max_size=None, compression=None)
    except (OSError, InvalidHandshake) as exc:
        print(f"jupyter-exec bridge: cannot connect to {url}: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    write = await stdout_writer()

    async def upstream() -> None:
        while line := await reader.readline():
            if line.strip():
                await ws.send(line.decode().rstrip("\n"))

    async def downstream() -> None:
        while True:
            try:
                frame = await ws.recv(decode=False)  # bytes as sent: no decode, no encode
            except ConnectionClosed:
                return
            await write(as_line(frame))

    tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
    return 0
