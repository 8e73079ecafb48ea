"""``jupyter exec`` (the ``jupyter-exec`` entry point): processes from a shell.

Subcommands: ``run``, ``ps``, ``logs``, ``attach``, ``write``, ``kill``, ``wait`` talk to
a server found as :mod:`jupyter_exec.client.discovery` describes (``--url``/``--token``,
``$JUPYTER_EXEC_URL``, the Jupyter server of this kernel or terminal, a running server),
else this user's exec daemon, started if none runs (SPEC 3 "Every front": processes
outlive the command; the CLI's cwd and environment are their root and base). ``serve``
runs the standalone server (:func:`jupyter_exec.transports.serve.main`).

Exit status: ``run`` and a followed ``attach`` exit with the process's status
(128+N when killed by signal N, as shells report it), ``wait`` with the worst
of theirs (cli_wait.py); other commands 0 on success, 1 when the server refused
(unknown id...), 2 for a bad command line or no reachable server.
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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client.discovery import find_server
from ..render.presentation import ps_text
from ..wire.errors import ExecError
from ..wire.events import ClosedEvent, ExitedEvent, OutputEvent
from .cli_wait import add_port_options, add_wait_parser, port_of, wait_command
from .frontend import Escalation, child_environment, parse_env, signal_name, start_process
from .limit_options import add_limit_options, start_limits

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = ["main", "parse_detach_key"]

DEFAULT_DETACH_KEY = "ctrl-]"
CLIENT_NAME = "jupyter-exec-cli"


class CliError(Exception):
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
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    _connection_options(run, top=False)

    ps = sub.add_parser("ps", help="list processes")
    ps.add_argument("--json", action="store_true", help="one JSON array of ProcessInfo")
    _connection_options(ps, top=False)

    logs = sub.add_parser("logs", help="print a process's output")
    logs.add_argument("id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep following until it ends")
    logs.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")
    logs.add_argument("--after", type=int, default=0, metavar="SEQ", help="only after SEQ")
    _connection_options(logs, top=False)

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


def parse_detach_key(spec: str) -> bytes:
    """``ctrl-]`` -> ``b"\\x1d"``, ``ctrl-p,ctrl-q`` -> two bytes, ``^X`` works too."""
    keys = bytearray()
    for part in spec.split(","):
        part = part.strip().lower()
        match = re.fullmatch(r"(?:ctrl-|\^|c-)(.)", part)
        if match:
            char = match.group(1).upper()
            code = ord(char) ^ 0x40
            if code >= 0x20:
                raise ValueError(f"no control key for {part!r}")
            keys.append(code)
        elif len(part) == 1:
            keys.append(ord(part))
        else:
            raise ValueError(f"bad detach key {part!r}; use e.g. ctrl-] or ctrl-p,ctrl-q")
    if not keys:
        raise ValueError("empty detach key")
    return bytes(keys)


# -- entry point -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
        "logs": _logs,
        "attach": _attach,
        "write": _write,
        "kill": _kill,
        "wait": wait_command,
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
    from ..client.embedded import start_embedded

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
    if interactive_tty:
        return await _interactive(client, process_id, b"")
    stdin_task = asyncio.create_task(_pump_stdin(client, process_id)) if args.interactive else None
    try:
        with _forward_interrupts(client, process_id):
            return await _stream(client, process_id, 0, split_streams=True)
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stdin_task


@contextlib.contextmanager
def _forward_interrupts(client: ExecClient, process_id: str) -> Iterator[None]:
    """Ctrl-C: 1st interrupts the process, 2nd terminates it, 3rd leaves (exit 130)."""
    loop = asyncio.get_running_loop()
    escalation = Escalation(process_id)
    main_task = asyncio.current_task()
    background = _Background()

    def on_sigint() -> None:
        step = escalation.press()
        if step == "leave":
            if main_task is not None:
                main_task.cancel()
            return
        print(f"\n{escalation.notice(step)}", file=sys.stderr)
        if step == "interrupt":
            background.spawn(client.signal(process_id, "interrupt"))
        else:
            background.spawn(client.terminate(process_id))

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


def _write_out(data: bytes, stream: str = "stdout") -> None:
    fd = 2 if stream == "stderr" else 1
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def _stream(client: ExecClient, process_id: str, after: int, *, split_streams: bool) -> int:
    """Copy output until the process is closed; its exit status."""
    exit_code = 0
    async for event in client.events(process_id, after):
        if isinstance(event, OutputEvent):
            _write_out(event.data, event.stream if split_streams else "stdout")
        elif isinstance(event, ExitedEvent):
            exit_code = 1 if event.exit_code is None else event.exit_code  # never started
        elif isinstance(event, ClosedEvent):
            break
    final = await client.read(process_id, 0, max_bytes=0)
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


async def _logs(client: ExecClient, args: argparse.Namespace) -> int:
    after = args.after
    if args.tail is not None:
        if args.tail < 0:
            raise CliError(f"--tail {args.tail}: the number of lines must be 0 or more")
        after = await _write_tail(client, args.id, after, args.tail)
    if args.follow:
        with _leave_on_interrupt():
            await _follow(client, args, after)
        return 0
    async for page in client.pages(args.id, after):
        for chunk in page.chunks:
            _write_out(chunk.data)
    return 0


async def _follow(client: ExecClient, args: argparse.Namespace, after: int) -> None:
    """`logs -f` until the process closes, through a restart or crash of the server
    too: its processes live on in the exec daemon, so reconnect (to the next server,
    or to the daemon itself) and go on from the last seq written, with no gap."""
    own: ExecClient | None = None
    try:
        while True:
            try:
                async for event in client.events(args.id, after):
                    if isinstance(event, OutputEvent):
                        _write_out(event.data)
                        after = event.seq
                    elif isinstance(event, ClosedEvent):
                        return
                return
            except ConnectionError:
                if own is not None:
                    await own.close()
                from .cli_daemon import reconnect

                own = await reconnect(args.url, args.token)
                if own is None:
                    raise CliError("lost the server, and found none again", 1) from None
                client = own
    finally:
        if own is not None:
            await own.close()


async def _write_tail(client: ExecClient, process_id: str, after: int, lines: int) -> int:
    """Write the last ``lines`` lines there are now, as ``tail -n`` does; the seq to go
    on after. One pass counts newlines page by page; the chunk where the lines begin
    is read again to write it from there."""
    counts: list[tuple[int, int]] = []  # (seq, newlines in chunk), oldest first
    open_line = 0  # 1 when the output ends in a line without its newline yet
    async for page in client.pages(process_id, after):
        counts.extend((c.seq, c.data.count(b"\n")) for c in page.chunks)
        if page.chunks:
            open_line = 0 if page.chunks[-1].data.endswith(b"\n") else 1
    if lines == 0:
        return counts[-1][0] if counts else after
    seen = open_line
    for seq, count in reversed(counts):
        seen += count
        if seen > lines:  # this chunk holds the newline just before the last `lines` lines
            chunk = (await client.read(process_id, seq - 1, max_bytes=1)).chunks[0]
            cut = -1
            for _ in range(seen - lines):
                cut = chunk.data.index(b"\n", cut + 1)
            _write_out(chunk.data[cut + 1 :])
            return seq
    return after  # fewer lines than that: all of them


@contextlib.contextmanager
def _leave_on_interrupt() -> Iterator[None]:
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        yield


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
    if not await client.terminate(args.id, args.grace):
        if args.id not in {info.process_id for info in await client.list()}:
            raise CliError(f"unknown process id {args.id}", 1)
        print(f"{args.id} was not running", file=sys.stderr)
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
    background = _Background()

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
        keep = _prefix_overlap(bytes(pending), detach_key)
        send = bytes(pending[: len(pending) - keep])
        del pending[: len(pending) - keep]
        if send:
            keys.put_nowait(send)

    def on_resize() -> None:
        rows, cols = _terminal_size()
        background.spawn(_quiet(client.resize(process_id, rows, cols)))

    if tty:
        on_resize()
    streamer = asyncio.create_task(_stream(client, process_id, after, split_streams=False))
    waiter = asyncio.create_task(detached.wait())
    writer = asyncio.create_task(send_keys())
    try:
        # Raw mode first (it discards typed-ahead input), then say we are ready.
        ttymod.setraw(fd)
        if detach_key:
            key_name = _describe_key(detach_key)
            _write_out(f"[attached to {process_id}; {key_name} detaches]\r\n".encode(), "stderr")
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
    if streamer in done and not streamer.cancelled():
        return streamer.result()  # the process's status, or its error
    _write_out(f"\r\n[detached from {process_id}; it keeps running]\r\n".encode(), "stderr")
    return 0


def _prefix_overlap(data: bytes, key: bytes) -> int:
    """How many trailing bytes of ``data`` start ``key`` (so must wait for more)."""
    for n in range(min(len(key) - 1, len(data)), 0, -1):
        if key.startswith(data[-n:]):
            return n
    return 0


def _describe_key(key: bytes) -> str:
    return ",".join(f"ctrl-{chr(b ^ 0x40).lower()}" if b < 0x20 else chr(b) for b in key)


class _Background:
    """Fire-and-forget tasks from signal/reader callbacks, referenced until done."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _quiet(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await awaitable


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
