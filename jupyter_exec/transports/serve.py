"""The standalone server: `jupyter-exec serve --listen ws://127.0.0.1:PORT | stdio`.

A thin transport over `dispatch`: websockets (token + Origin checks in the
opening handshake, SPEC 1) or newline-delimited JSON on stdin/stdout. The
first stdout line of the websocket server is the URL to connect to.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import secrets
import signal
import sys
from asyncio.streams import FlowControlMixin
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..config import DEFAULTS, ExecConfig, jupyter_runtime_dir
from ..core.heap import keep_freed_heap
from ..core.line_pump import pump_lines
from ..core.linux import linux_refusal
from ..rpc.dispatch import ExecService
from ..rpc.service import build_service
from ..wire.errors import ExecError, JupyterExecError
from ..wire.lines import line_framing
from ..wire.sandbox import parse_setting

if TYPE_CHECKING:
    from websockets.http11 import Request

__all__ = [
    "UsageError",
    "build_parser",
    "check_request",
    "config_from_args",
    "main",
    "make_service",
    "stdout_writer",
]


log = logging.getLogger("jupyter_exec.transports.serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jupyter-exec serve", description="Run a standalone jupyter-exec server."
    )
    p.add_argument("--listen", default="ws://127.0.0.1:0", help="ws://HOST:PORT or stdio")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="token clients must present (default: generated)")
    auth.add_argument("--token-file", type=Path, help="read the token from this file")
    auth.add_argument(
        "--no-token", action="store_true", help="no authentication (loopback addresses only)"
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="an Origin header to accept (repeatable); requests without Origin are accepted",
    )
    p.add_argument("--root", type=Path, default=Path.cwd(), help="default and base cwd")
    p.add_argument(
        "--confine-to-root",
        action="store_true",
        help="refuse process cwds and fs/* paths outside --root (default: any path)",
    )
    d = DEFAULTS
    for name, default in (("default", d.default_sandbox), ("agent", d.agent_sandbox)):
        p.add_argument(
            f"--{name}-sandbox",
            default=default,
            type=_sandbox_setting,
            metavar="MODE",
            help=f"sandbox of {'every process' if name == 'default' else 'agents (MCP, Codex)'}:"
            f" none, read-only, workspace-write, :network-off to add (default {default})",
        )
    p.add_argument("--lifetime", choices=["connection", "detached"], default=d.default_lifetime)
    p.add_argument("--log-dir", type=Path, help="where per-process output logs go")
    p.add_argument("--retained-bytes", type=int, default=d.retained_bytes_per_process)
    p.add_argument("--log-bytes", type=int, default=d.log_bytes_per_process)
    p.add_argument("--retained-bytes-total", type=int, default=d.retained_bytes_total)
    p.add_argument("--logs-max-use", type=_size, default=d.logs_max_use, metavar="BYTES|N%")
    p.add_argument("--logs-keep-free", type=_size, default=d.logs_keep_free, metavar="BYTES|N%")
    p.add_argument("--max-processes", type=int, default=d.max_processes)
    p.add_argument(
        "--exited-retention", type=float, default=d.exited_retention_seconds, metavar="SECONDS"
    )
    p.add_argument(
        "--session-resume", type=float, default=d.session_resume_seconds, metavar="SECONDS"
    )
    p.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes)
    return p


def _sandbox_setting(text: str) -> str:
    try:
        parse_setting(text, "sandbox")
    except ExecError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _size(text: str) -> int | str:
    """Bytes, or a percentage of the logs' filesystem (README "Configuration")."""
    if text.isdigit():
        return int(text)
    if text.endswith("%") and text[:-1].replace(".", "", 1).isdigit() and float(text[:-1]) <= 100:
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is neither a number of bytes nor a percentage")


def config_from_args(args: argparse.Namespace) -> ExecConfig:
    return ExecConfig(
        root_dir=args.root.resolve(),
        retained_bytes_per_process=args.retained_bytes,
        log_bytes_per_process=args.log_bytes,
        retained_bytes_total=args.retained_bytes_total,
        logs_max_use=args.logs_max_use,
        logs_keep_free=args.logs_keep_free,
        log_dir=args.log_dir,
        exited_retention_seconds=args.exited_retention,
        max_processes=args.max_processes,
        confine_to_root=args.confine_to_root,
        default_lifetime=args.lifetime,
        session_resume_seconds=args.session_resume,
        max_message_bytes=args.max_message_bytes,
        default_sandbox=args.default_sandbox,
        agent_sandbox=args.agent_sandbox,
    )


def make_service(args: argparse.Namespace) -> ExecService:
    """The server's own service: it is its own daemon and its one front (SPEC 3)."""
    config = config_from_args(args)
    return build_service(config, config.front_rules("jupyter-exec serve"))


class UsageError(JupyterExecError):
    """A bad command line: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    keep_freed_heap()
    if (refusal := linux_refusal("jupyter-exec serve")) is not None:
        print(refusal, file=sys.stderr)
        return 2
    try:
        if not args.root.is_dir():
            raise UsageError(f"--root {args.root} is not a directory")
        if args.listen == "stdio":
            asyncio.run(_serve_stdio(args))
        else:
            asyncio.run(_serve_ws(args))
    except UsageError as exc:
        print(f"jupyter-exec serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


# -- websocket ------------------------------------------------------------------


def _token(args: argparse.Namespace, host: str) -> tuple[str | None, bool]:
    """(token, generated). Refuses no-token on a non-loopback address (SPEC 1)."""
    if args.no_token:
        if not _is_loopback(host):
            raise UsageError(f"refusing to listen on {host} without a token")
        return None, False
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file: {exc.strerror}") from None
        if not token:
            raise UsageError("--token-file is empty")
        return token, False
    if args.token:
        return str(args.token), False
    return secrets.token_urlsafe(32), True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_request(
    path: str, headers: Any, token: str | None, origins: list[str]
) -> tuple[HTTPStatus, str] | None:
    """The opening-handshake gate: None to accept, else (status, reason)."""
    origin = headers.get("Origin")
    if origin is not None and origin not in origins:
        return HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed\n"
    if token is None:
        return None
    presented = ""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token"):
        presented = value.strip()
    else:
        presented = parse_qs(urlsplit(path).query).get("token", [""])[0]
    if not presented or not hmac.compare_digest(presented.encode(), token.encode()):
        return HTTPStatus.UNAUTHORIZED, "missing or wrong token\n"
    return None


async def _serve_ws(args: argparse.Namespace) -> None:
    from .ws_front import WebSocketClients  # not needed (nor its import time) for stdio

    url = urlsplit(args.listen)
    if url.scheme != "ws" or url.hostname is None:
        raise UsageError(f"--listen must be ws://HOST:PORT or stdio, not {args.listen!r}")
    host, port = url.hostname, url.port or 0
    token, generated = _token(args, host)
    service = make_service(args)

    def check(request: Request) -> tuple[HTTPStatus, str] | None:
        return check_request(request.path, request.headers, token, args.allow_origin)

    clients = WebSocketClients(service, args.max_message_bytes, check)
    stop = _stop_event()
    server = await asyncio.get_running_loop().create_server(clients.accept, host, port)
    try:
        sock = next(iter(server.sockets))
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        printed = f"ws://{shown}:{bound_port}/"
        if generated:
            printed += f"?token={token}"
        # The record first: whoever reads the printed URL may look for it at once.
        record = _write_record(f"ws://{shown}:{bound_port}/", token)
        print(printed, flush=True)
        try:
            await stop.wait()
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
    finally:
        server.close()
        await clients.aclose("the server is stopping")
        await service.aclose()


def _write_record(url: str, token: str | None) -> Path | None:
    """`jpexec-PID.json` in Jupyter's runtime dir (0600), so the CLI finds this server."""
    path = jupyter_runtime_dir() / f"jpexec-{os.getpid()}.json"
    record = json.dumps({"pid": os.getpid(), "url": url, "token": token})
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(record)
    except OSError as exc:
        log.warning("cannot write discovery record %s: %s", path, exc)
        return None
    return path


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    return stop


# -- stdio ----------------------------------------------------------------------


async def _serve_stdio(args: argparse.Namespace) -> None:
    """Newline-delimited JSON; the session ends (and its processes) at stdin EOF."""
    service = make_service(args)
    loop = asyncio.get_running_loop()
    limit = args.max_message_bytes
    reader = asyncio.StreamReader(limit=limit + 1)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    write = await stdout_writer()
    connection = service.connect(write, framing=line_framing)
    stop = _stop_event()
    reading = asyncio.create_task(pump_lines(reader, connection, limit))
    waiting = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reading, waiting):
            task.cancel()
        await connection.aclose()
        await service.aclose()


async def stdout_writer() -> Callable[[bytes], Awaitable[None]]:
    """Non-blocking line writes to stdout when it is a pipe; plain writes otherwise.

    The returned coroutine writes one line (`line_framing`), and returns at
    once while the transport buffers less than its high-water mark (64 KiB),
    else once it has drained: a small buffer, so a tty echo is not queued
    behind much of a flood (larger ones measured no faster, see bench/).
    """
    loop = asyncio.get_running_loop()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    try:
        transport, protocol = await loop.connect_write_pipe(FlowControlMixin, out)
    except ValueError:  # a regular file: writes cannot block for long

        async def write_file(line: bytes) -> None:
            out.write(line)
            out.flush()

        return write_file
    writer = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write_pipe(line: bytes) -> None:
        writer.write(line)
        await writer.drain()

    return write_pipe


if __name__ == "__main__":
    import sys

    sys.exit(main())
