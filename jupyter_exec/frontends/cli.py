"""``jupyter exec`` (the ``jupyter-exec`` entry point): processes from a shell.

Subcommands: ``run``, ``ps``, ``logs`` (cli_logs.py), ``attach``, ``write``, ``kill``,
``wait``, ``queue`` (cli_queue.py) talk to
a server found as :mod:`jupyter_exec.client.discovery` describes (``--url``/``--token``,
``$JUPYTER_EXEC_URL``, the Jupyter server of this kernel or terminal, a running server),
else this user's exec daemon, started if none runs (SPEC 3 "Every front": processes
outlive the command; the CLI's cwd and environment are their root and base). ``serve``
runs the standalone server (:func:`jupyter_exec.transports.serve.main`).

Exit status: ``run`` and a followed ``attach`` exit with the process's status
(128+N when killed by signal N, as shells report it; 1 when it never started),
``wait`` with 124 while one still runs, else the worst of theirs (cli_wait.py);
other commands 0 on success, 1 when the server refused (unknown id...), 2 for a
bad command line or no reachable server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client.discovery import find_server
from ..core.linux import linux_refusal
from ..core.tasks import TaskOwner
from ..render.presentation import format_queue, format_status, not_running_text, ps_text
from ..wire.errors import ExecError, JupyterExecError
from ..wire.events import ClosedEvent, ExitedEvent, OutputEvent, RestartedEvent
from .cli_logs import add_logs_parser, logs_command, write_out
from .cli_queue import add_queue_parser, queue_command
from .cli_wait import add_port_options, add_wait_parser, port_of, wait_command
from .detach_keys import describe_key, parse_detach_key, prefix_overlap
from .limit_options import add_limit_options, start_limits
from .schedule_options import add_schedule_options, schedule_params
from .shared import Escalation, child_environment, parse_env, signal_name, start_process

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = ["main", "parse_detach_key"]

DEFAULT_DETACH_KEY = "ctrl-]"
CLIENT_NAME = "jupyter-exec-cli"


class CliError(JupyterExecError):
    """A message for the user; ``status`` is the exit code."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- arguments ---------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--url", default=default, help="exec server URL (http(s):// or ws(s)://)")
    parser.add_argument("--token", default=default, help="its token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter exec",
        description="Start, watch, talk to and stop processes on a jupyter-exec server.",
    )
    _connection_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start a process and stream its output")
    run.add_argument("--name", "-n", metavar="ID", help="process id (default: CMD-N)")
    run.add_argument("--tty", "-t", action="store_true", help="run in a pseudo-terminal")
    run.add_argument(
        "--interactive", "-i", action="store_true", help="forward this terminal's stdin"
    )
    run.add_argument("--detach", "-d", action="store_true", help="print the id and exit")
    run.add_argument("--cwd", metavar="DIR", help="working directory (default: this one)")
    run.add_argument("--env", "-e", metavar="K=V", action="append", help="set a variable")
    run.add_argument(
        "--server-env",
        action="store_true",
        help="start from the server's environment instead of this shell's",
    )
    run.add_argument("--label", help="free text shown by ps")
    run.add_argument("--embedded", action="store_true", help="run it inside this command")
    add_port_options(run)
    add_limit_options(run)
    add_schedule_options(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    _connection_options(run, top=False)

    ps = sub.add_parser("ps", help="list processes")
    ps.add_argument("--json", action="store_true", help="one JSON array of ProcessInfo")
    _connection_options(ps, top=False)

    _connection_options(add_logs_parser(sub), top=False)

    attach = sub.add_parser("attach", help="interactive attach (raw terminal) to a process")
    attach.add_argument("id")
    attach.add_argument(
        "--detach-key",
        default=DEFAULT_DETACH_KEY,
        help=f"key(s) that detach: ctrl-], ctrl-p,ctrl-q... (default {DEFAULT_DETACH_KEY})",
    )
    attach.add_argument("--no-replay", action="store_true", help="do not replay earlier output")
    _connection_options(attach, top=False)

    write = sub.add_parser("write", help="write to a process's stdin")
    write.add_argument("id")
    write.add_argument("text", nargs="?", default="", help="the text; - reads this stdin")
    write.add_argument("--no-newline", "-n", action="store_true", help="do not add a newline")
    write.add_argument("--eof", action="store_true", help="then close its stdin")
    _connection_options(write, top=False)

    kill = sub.add_parser("kill", help="terminate a process (or send a signal)")
    kill.add_argument("id")
    kill.add_argument("--signal", "-s", metavar="NAME", help="send NAME instead of terminating")
    kill.add_argument("--grace", type=int, metavar="MS", help="SIGKILL after MS (default 3000)")
    _connection_options(kill, top=False)

    _connection_options(add_wait_parser(sub), top=False)
    _connection_options(add_queue_parser(sub), top=False)

    shutdown = sub.add_parser(
        "shutdown", help="stop every process and the exec daemon (processes outlive servers)"
    )
    _connection_options(shutdown, top=False)

    sub.add_parser("serve", help="run a standalone server (see: jupyter exec serve --help)")
    sub.add_parser(
        "bridge", help="relay stdio JSON-RPC to a server's websocket (see: bridge --help)"
    )
    sub.add_parser("mcp", help="serve the process tools to an agent over MCP on stdio")
    sub.add_parser("daemon", help="show, stop or restart the exec daemon (see: daemon --help)")
    return parser


# -- entry point -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if (refusal := linux_refusal("jupyter-exec")) is not None:
        print(refusal, file=sys.stderr)
        return 2
    if argv[:1] == ["serve"]:
        from ..transports.serve import main as serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["bridge"]:
        from .bridge import main as bridge_main

        return bridge_main(argv[1:])
    if argv[:1] == ["mcp"]:
        from ..mcp.stdio import main as mcp_main

        return mcp_main(argv[1:])
    if argv[:1] == ["daemon"]:
        from .cli_daemon import main as daemon_main

        return daemon_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "shutdown":
            return asyncio.run(_shutdown(args))
        return asyncio.run(_dispatch(args))
    except CliError as exc:
        print(f"jupyter exec {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[ExecClient, argparse.Namespace], Awaitable[int]]] = {
        "run": _run,
        "ps": _ps,
        "logs": logs_command,
        "attach": _attach,
        "write": _write,
        "kill": _kill,
        "wait": wait_command,
        "queue": queue_command,
    }
    if args.command == "run":
        if args.argv[:1] == ["--"]:
            args.argv = args.argv[1:]
        if not args.argv:
            raise CliError("run needs a command: jupyter exec run [options] -- COMMAND ...")
    async with _connect(args) as client:
        try:
            return await commands[args.command](client, args)
        except ExecError as exc:
            raise CliError(exc.message, 1) from None
        except ConnectionError as exc:
            raise CliError(f"lost the server: {exc}", 1) from None


@contextlib.asynccontextmanager
async def _connect(args: argparse.Namespace) -> Any:
    """A client of the server discovery finds; with none, of this user's exec daemon,
    started if needed (SPEC 3 "Every front"); embedded only for ``run --embedded`` or
    when no daemon can run (then said on stderr, with the reason)."""
    from ..client.exec_client import ExecClient  # here: --help costs no websockets

    embedded = getattr(args, "embedded", False)
    if embedded and args.url:
        raise CliError("--embedded and --url exclude each other")
    target = None if embedded else find_server(args.url, args.token, any_server=True)
    if target is not None:
        try:
            client = await ExecClient.connect(target.url, target.token, client_name=CLIENT_NAME)
        except Exception as exc:
            if target.explicit:
                raise CliError(f"cannot reach {target.describe()}: {exc}") from None
            print(f"jupyter exec: cannot use {target.describe()} ({exc}); "
                  "using this user's exec daemon", file=sys.stderr)  # fmt: skip
        else:
            async with client:
                yield client
            return
    from .cli_daemon import connect_here, daemon_or_why

    daemon = "asked for with --embedded" if embedded else await daemon_or_why()
    if isinstance(daemon, Path):
        client = await connect_here(daemon)
    else:
        client = await _embedded(args, daemon, say=not embedded)
    async with client:
        yield client


async def _embedded(args: argparse.Namespace, why: str, *, say: bool) -> ExecClient:
    """A registry inside this command: its processes end with it (so no ``--detach``)."""
    if args.command == "run" and args.detach:
        raise CliError(f"--detach needs the exec daemon: {why}")
    if say:
        why += "; processes run inside this command and end with it"
        print(f"jupyter exec: {why}", file=sys.stderr)
    from ..embedded import start_embedded

    return await start_embedded(default_lifetime="connection", client_name=CLIENT_NAME)


async def _shutdown(args: argparse.Namespace) -> int:
    """Stop every process and the exec daemon: over REST with --url, else the local socket."""
    from .cli_daemon import shutdown

    try:
        stopped = await shutdown(args.url, args.token)
    except OSError as exc:
        raise CliError(f"cannot reach {args.url}: {exc}") from None
    print("stopped every process and the exec daemon" if stopped else "no exec daemon is running")
    return 0


# -- run ----------------------------------------------------------------------------


def _pick_id(argv: list[str], taken: set[str]) -> str:
    """``python-1``, ``python-2``...: the program's name and the first free number."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "", os.path.basename(argv[0])) or "run"
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def _environment(args: argparse.Namespace) -> dict[str, str] | None:
    """This shell's environment plus --env (None with --server-env and no --env)."""
    try:
        overrides = parse_env(args.env)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.server_env:
        return overrides or None
    return child_environment(overrides)


async def _run(client: ExecClient, args: argparse.Namespace) -> int:
    interactive_tty = args.tty and args.interactive and sys.stdin.isatty()
    rows, cols = _terminal_size()
    cwd = os.path.abspath(args.cwd or os.getcwd())  # noqa: ASYNC240 (no I/O: string work)
    try:
        limits = start_limits(args.time_limit, args.memory_limit, args.cpu_limit, args.sandbox)
        limits.update(schedule_params(args.restart, args.max_restarts, args.restart_delay,
                                      args.queue, args.after))  # fmt: skip
    except ValueError as exc:
        raise CliError(str(exc)) from None
    process_id = await start_process(
        client,
        args.argv,
        name=args.name,
        pick_id=lambda taken: _pick_id(args.argv, taken),
        cwd=cwd,
        env=_environment(args),
        inherit_env=args.server_env,
        tty=args.tty,
        pipe_stdin=args.interactive,
        rows=rows,
        cols=cols,
        lifetime="detached" if args.detach or args.wait_for_port else "connection",
        label=args.label,
        **limits,
    )
    if args.wait_for_port:
        return await port_of(client, process_id, args.port_timeout)
    if args.detach:
        print(process_id)
        return 0
    if args.queue or args.after:  # followed: say why nothing comes yet (SPEC 11)
        info = next(i for i in await client.list() if i.process_id == process_id)
        if info.state == "queued":
            print(f"[{process_id} queued: {format_queue(info)}]", file=sys.stderr, flush=True)
    if interactive_tty:
        return await _interactive(client, process_id, b"")
    stdin_task = asyncio.create_task(_pump_stdin(client, process_id)) if args.interactive else None
    try:
        async with _forward_interrupts(client, process_id):
            return await _stream(client, process_id, 0, split_streams=True)
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdin_task


@contextlib.asynccontextmanager
async def _forward_interrupts(client: ExecClient, process_id: str) -> AsyncIterator[None]:
    """Ctrl-C: 1st interrupts the process, 2nd terminates it, 3rd leaves (exit 130)."""
    loop = asyncio.get_running_loop()
    escalation = Escalation(process_id)
    main_task = asyncio.current_task()
    background = TaskOwner("jupyter exec run's Ctrl-C")

    def on_sigint() -> None:
        step = escalation.press()
        if step == "leave":
            if main_task is not None:
                main_task.cancel()
            return
        print(f"\n{escalation.notice(step)}", file=sys.stderr)
        if step == "interrupt":
            background.start(_quiet(client.signal(process_id, "interrupt")))
        else:
            background.start(_quiet(client.terminate(process_id)))

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await background.aclose()


async def _pump_stdin(client: ExecClient, process_id: str, *, eof: bool = True) -> None:
    """Copy this process's stdin to the process's stdin, then (``eof``) close it."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    while True:
        data = await loop.run_in_executor(None, _read_fd, fd)
        if not data:
            if eof:
                await client.write(process_id, b"", eof=True)
            return
        status = await client.write(process_id, data)
        if status != "accepted":
            return


def _read_fd(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


async def _stream(client: ExecClient, process_id: str, after: int, *, split_streams: bool) -> int:
    """Copy output until the process is closed (each restart said on stderr); its exit
    status, or 1 when it never started (SPEC 11: its `failure` is said)."""
    exit_code = 0
    async for event in client.events(process_id, after):
        if isinstance(event, OutputEvent):
            write_out(event.data, event.stream if split_streams else "stdout")
        elif isinstance(event, RestartedEvent):
            status = format_status("exited", event.exit_code, event.signal, None)
            write_out(f"[{process_id} {status}; restart {event.restarts}]\n".encode(), "stderr")
        elif isinstance(event, ExitedEvent):
            exit_code = 1 if event.exit_code is None else event.exit_code  # never started
        elif isinstance(event, ClosedEvent):
            break
    final = await client.read(process_id, 0, max_bytes=0)
    if final.exit_code is None and final.failure:
        raise CliError(f"{process_id} never started: {final.failure}", 1)
    return final.exit_code if final.exit_code is not None else exit_code


def _terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return max(1, min(size.lines, 10_000)), max(1, min(size.columns, 10_000))


# -- ps, logs, write, kill -------------------------------------------------------------


async def _ps(client: ExecClient, args: argparse.Namespace) -> int:
    infos = await client.list()
    if args.json:
        print(json.dumps([info.wire() for info in infos], indent=2))
    else:
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        print(ps_text(infos, width))
    return 0


async def _write(client: ExecClient, args: argparse.Namespace) -> int:
    if args.text == "-":
        data = sys.stdin.buffer.read()
    else:
        data = args.text.encode()
        if not args.no_newline and (data or not args.eof):
            data += b"\n"
    status = await client.write(args.id, data, eof=args.eof)
    if status != "accepted":
        hint = " (it was started without stdin)" if status == "stdinClosed" else ""
        raise CliError(f"{args.id}: write {status}{hint}", 1)
    return 0


async def _kill(client: ExecClient, args: argparse.Namespace) -> int:
    if args.signal:
        try:
            name = signal_name(args.signal)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        await client.signal(args.id, name)
        return 0
    states = {info.process_id: info.state for info in await client.list()}  # before: see below
    if not await client.terminate(args.id, args.grace):
        if args.id not in states:
            raise CliError(f"unknown process id {args.id}", 1)
        print(not_running_text(args.id, states[args.id]), file=sys.stderr)
    return 0


# -- attach ---------------------------------------------------------------------------


async def _attach(client: ExecClient, args: argparse.Namespace) -> int:
    try:
        detach_key = parse_detach_key(args.detach_key)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    infos = {info.process_id: info for info in await client.list()}
    if args.id not in infos:
        raise CliError(f"unknown process id {args.id}", 1)
    info = infos[args.id]
    if not sys.stdin.isatty():
        # Not a terminal: follow the output and forward stdin, like `run -i`.
        stdin_task = asyncio.create_task(_pump_stdin(client, args.id, eof=False))
        try:
            return await _stream(client, args.id, 0, split_streams=False)
        finally:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdin_task
    after = 0 if not args.no_replay else info.next_seq - 1
    return await _interactive(client, args.id, detach_key, after=after, tty=info.tty)


async def _interactive(
    client: ExecClient, process_id: str, detach_key: bytes, *, after: int = 0, tty: bool = True
) -> int:
    """Raw-mode session: keys go to the process, output to the screen, resizes follow.

    Ends when the process is closed (its status) or on the detach key (0).
    """
    import termios
    import tty as ttymod

    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    detached = asyncio.Event()
    pending = bytearray()
    keys: asyncio.Queue[bytes] = asyncio.Queue()  # one writer keeps keystrokes in order
    background = TaskOwner("jupyter exec attach's resizes")

    async def send_keys() -> None:
        while True:
            data = await keys.get()
            try:
                with contextlib.suppress(ExecError):
                    await client.write(process_id, data)
            finally:
                keys.task_done()

    def on_input() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            return
        pending.extend(data)
        if detach_key and detach_key in pending:
            before = bytes(pending[: pending.index(detach_key)])
            pending.clear()
            if before:
                keys.put_nowait(before)
            detached.set()
            return
        # Hold back a possible prefix of a multi-key detach sequence.
        keep = prefix_overlap(bytes(pending), detach_key)
        send = bytes(pending[: len(pending) - keep])
        del pending[: len(pending) - keep]
        if send:
            keys.put_nowait(send)

    def on_resize() -> None:
        rows, cols = _terminal_size()
        background.start(_quiet(client.resize(process_id, rows, cols)))

    if tty:
        on_resize()
    streamer = asyncio.create_task(_stream(client, process_id, after, split_streams=False))
    waiter = asyncio.create_task(detached.wait())
    writer = asyncio.create_task(send_keys())
    try:
        # Raw mode first (it discards typed-ahead input), then say we are ready.
        ttymod.setraw(fd)
        if detach_key:
            key_name = describe_key(detach_key)
            write_out(f"[attached to {process_id}; {key_name} detaches]\r\n".encode(), "stderr")
        loop.add_reader(fd, on_input)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
        done, _ = await asyncio.wait({streamer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            # asyncio.TimeoutError: what wait_for raises; not the builtin before 3.11.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(keys.join(), 2)  # keys typed before the detach key
    finally:
        loop.remove_reader(fd)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for task in (streamer, waiter, writer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await background.aclose()
    if streamer in done and not streamer.cancelled():
        return streamer.result()  # the process's status, or its error
    write_out(f"\r\n[detached from {process_id}; it keeps running]\r\n".encode(), "stderr")
    return 0


async def _quiet(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await awaitable


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
