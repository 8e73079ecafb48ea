"""IPython magics: ``%exec``, ``%%exec``, ``%read``, ``%write``, ``%signal``,
``%terminate``, ``%ps``, ``%wait``, ``%queue``, ``%attach``, ``%exec_connect``
(``%load_ext jupyter_exec``).

The only module that imports IPython, and only glue: parsing magic lines,
turning errors into ``UsageError``, publishing displays. The parts live in
IPython-free modules the CLI and scripts use too:

- :mod:`jupyter_exec.frontends.handle`: :class:`~jupyter_exec.frontends.handle.ExecProcess`, what
  ``p = %exec ...`` returns;
- :mod:`jupyter_exec.frontends.view`: the live view of a process in its cell (a kernel);
- :mod:`jupyter_exec.frontends.terminal_stream`: output streamed to a terminal, where
  no display updates in place (terminal IPython ``--wait`` and ``%attach``);
- :mod:`jupyter_exec.frontends.connection`: where processes live (discovery, else an
  embedded registry in this process; a one-line notice says so);
- :mod:`jupyter_exec.frontends.shared`: what the magics share with the CLI (signal
  names, ``--env``, free ids, Ctrl-C escalation).

Importing this module does nothing else; loading the extension registers the
magics, a display rule for handles and a shutdown hook (stop the views, close
the connection).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import shlex
import shutil
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from IPython import display as _display
from IPython.core import magic as _magic
from IPython.core import magic_arguments as _magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class

from ..client.exec_client import SyncExecClient
from ..render.html_render import ps_html
from ..render.presentation import (
    ending,
    format_status,
    not_running_text,
    one_line,
    ps_text,
    queue_text,
)
from ..render.terminal import StreamDecoder, TerminalLog
from ..wire.errors import ExecError
from .connection import shared
from .handle import ExecProcess
from .limit_options import start_limits
from .schedule_options import check_queue_name, schedule_params
from .shared import child_environment, parse_env, signal_name, start_process
from .terminal_stream import stream_to_terminal
from .view import LiveView, stop_all_views

__all__ = ["ExecMagics", "load_ipython_extension", "unload_ipython_extension"]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


# IPython's decorators and display functions are untyped; these give them types.
def argument(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    return cast("Callable[[_F], _F]", _magic_arguments.argument(*args, **kwargs))  # type: ignore[no-untyped-call]


def magic_arguments(name: str) -> Callable[[_F], _F]:
    return cast("Callable[[_F], _F]", _magic_arguments.magic_arguments(name=name))  # type: ignore[no-untyped-call]


def parse_argstring(func: Callable[..., Any], line: str) -> Any:
    """Parse a magic's line with POSIX shell quoting (IPython's own keeps the quotes)."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the line: {exc}") from None
    return func.parser.parse_args(argv)  # type: ignore[attr-defined]


_WRITE_FLAG = re.compile(r"(--eof|--no-newline|-n)(?:\s+|$)")


def split_write_line(line: str) -> tuple[str, str, set[str]]:
    """``%write [flags] ID [flags] [--] TEXT``: the id, the raw text, the flags.

    The text is kept exactly as typed (quotes included), so ``%write p1 print("hi")``
    writes ``print("hi")``.
    """
    flags: set[str] = set()

    def take_flags(rest: str) -> str:
        while match := _WRITE_FLAG.match(rest):
            flags.add(match.group(1))
            rest = rest[match.end() :]
        return rest

    rest = take_flags(line.lstrip())
    process_id, _, rest = rest.partition(" ")
    rest = take_flags(rest)
    if rest.startswith("-- ") or rest == "--":
        rest = rest[3:]
    return process_id, rest, flags


def line_magic(name: str) -> Callable[[_F], _F]:
    return cast("Callable[[_F], _F]", _magic.line_magic(name))


def line_cell_magic(name: str) -> Callable[[_F], _F]:
    return cast("Callable[[_F], _F]", _magic.line_cell_magic(name))


def display(bundle: dict[str, str], display_id: str | None = None) -> None:
    """Publish a MIME bundle (``raw``), optionally under a display id."""
    if display_id is None:
        _display.display(bundle, raw=True)  # type: ignore[no-untyped-call]
    else:
        _display.display(bundle, raw=True, display_id=display_id)  # type: ignore[no-untyped-call]


def publish_view(bundle: dict[str, str], display_id: str, update: bool) -> None:
    """A live view's `~jupyter_exec.frontends.view.Publish`: IPython's display or update_display."""
    if update:
        _display.update_display(bundle, raw=True, display_id=display_id)  # type: ignore[no-untyped-call]
    else:
        display(bundle, display_id)


#: Handles whose output is already on screen in the running cell (cleared per cell).
_shown_this_cell: weakref.WeakSet[ExecProcess] = weakref.WeakSet()


def display_handle(handle: ExecProcess) -> None:
    """IPython's display of a handle: its summary, unless its cell already shows it live."""
    if handle not in _shown_this_cell:
        display({"text/plain": repr(handle), "text/html": handle._repr_html_()})


# -- the magics ---------------------------------------------------------------------


def _exec_arguments(func: _F) -> _F:
    options: list[Callable[[_F], _F]] = [
        magic_arguments("exec"),
        argument("--name", "-n", metavar="ID", help="process id (default: p1, p2, ...)"),
        argument("--tty", "-t", action="store_true", help="run in a pseudo-terminal"),
        argument("--cwd", metavar="DIR", help="working directory (default: the kernel's)"),
        argument("--env", "-e", metavar="K=V", action="append", help="set a variable (repeatable)"),
        argument("--stdin", "-i", action="store_true", help="keep stdin open for %%write"),
        argument("--wait", "-w", action="store_true", help="block until the process exits"),
        argument(
            "--check", action="store_true", help="with --wait: raise if the exit status is not 0"
        ),
        argument("--wait-for", metavar="REGEX", help="block until the output matches REGEX"),
        argument(
            "--wait-for-port", action="store_true", help="block until it listens on a TCP port"
        ),
        argument("--timeout", type=float, metavar="S", help="limit for --wait / --wait-for(-port)"),
        argument("--time-limit", type=float, metavar="S", help="terminate the process after S"),
        argument("--memory-limit", metavar="SIZE", help="its address space, e.g. 512M, 2G"),
        argument("--cpu-limit", type=int, metavar="S", help="its CPU seconds, then SIGXCPU"),
        argument("--sandbox", metavar="MODE", help="read-only or workspace-write[:network-off]"),
        argument("--restart", metavar="POLICY", help="never, on-failure or always"),
        argument("--max-restarts", type=int, metavar="N", help="with --restart (default 10)"),
        argument("--restart-delay", type=int, metavar="MS", help="first delay (default 1000)"),
        argument("--queue", metavar="NAME", help="wait for a free slot of queue NAME (%%queue)"),
        argument("--after", action="append", metavar="ID", help="start once ID exited with 0"),
        argument("--quiet", "-q", action="store_true", help="no live output"),
        argument("--label", help="free text shown in lists (default: the command)"),
        argument(
            "--replace",
            action="store_true",
            help="with --name: stop and forget a process of that name first",
        ),
        argument("command", nargs=argparse.REMAINDER, help="the program and its arguments"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@magics_class
class ExecMagics(Magics):
    """The jupyter-exec magics; see the module docstring and ``%exec?``."""

    #: None: live views in a kernel only; True/False to force.
    live_display: bool | None = None
    #: Lines kept in a live view (older ones are counted, not shown).
    view_lines = 500

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.connection = shared()
        self._counter = 0

    # -- helpers ------------------------------------------------------------------

    @property
    def client(self) -> SyncExecClient:
        return self.connection.get()

    def _live(self) -> bool:
        if self.live_display is not None:
            return self.live_display
        return getattr(self.shell, "kernel", None) is not None

    def _cell_id(self) -> str | None:
        kernel = getattr(self.shell, "kernel", None)
        try:
            parent = kernel.get_parent() if kernel is not None else {}
            cell_id = (parent or {}).get("metadata", {}).get("cellId")
            return str(cell_id) if cell_id else None
        except Exception:
            return None

    def _new_id(self, taken: set[str]) -> str:
        """``p1``, ``p2``...: short, and past every ``pN`` taken (also by other kernels)."""
        numbers = [int(pid[1:]) for pid in taken if re.fullmatch(r"p\d+", pid)]
        self._counter = max([self._counter, *numbers]) + 1
        return f"p{self._counter}"

    def _start(self, args: Any, argv: list[str], label: str | None) -> ExecProcess:
        try:
            env = child_environment(parse_env(args.env))
            limits = start_limits(args.time_limit, args.memory_limit, args.cpu_limit, args.sandbox)
            limits.update(schedule_params(args.restart, args.max_restarts, args.restart_delay,
                                          args.queue, args.after))  # fmt: skip
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        cwd = os.path.abspath(os.path.expanduser(args.cwd)) if args.cwd else os.getcwd()
        client = self.client
        if args.replace and args.name:
            with contextlib.suppress(ExecError):  # nothing of that name: fine
                client.request("process/remove", {"processId": args.name})
        starting = start_process(
            client.client,
            argv,
            name=args.name,
            pick_id=self._new_id,
            cwd=cwd,
            env=env,
            tty=args.tty,
            pipe_stdin=args.stdin,
            rows=24,
            cols=120,
            lifetime="detached",
            label=label,
            origin=_origin(self.shell),
            **limits,
        )
        process_id = self._call(lambda: client.run(starting))
        return ExecProcess(client, process_id, argv)

    def _show(self, handle: ExecProcess) -> LiveView | None:
        """Start a live view of ``handle`` in this cell (kernel only)."""
        if not self._live():
            return None
        _shown_this_cell.add(handle)
        view = LiveView(
            handle.client,
            handle.info,
            publish_view,
            max_lines=self.view_lines,
            cell_id=self._cell_id(),
        )
        view.show()
        view.start()
        return view

    def _run(self, args: Any, argv: list[str], label: str | None) -> ExecProcess:
        if args.check and not args.wait:
            raise UsageError("--check needs --wait")
        handle = self._start(args, argv, label)
        view = None if args.quiet else self._show(handle)
        if args.quiet:
            if self._live():
                _shown_this_cell.add(handle)  # in a kernel, -q also means no summary
        elif view is None and not (args.wait or args.wait_for):
            said = "started"
            if args.queue or args.after:  # SPEC 11: it may wait, or never start
                info = handle.info
                said = "queued" if info.state == "queued" else said
                said = "never started" if info.exit_code is None and info.failure else said
            print(f"{said} {handle.id}: {one_line(label or shlex.join(argv))}  (%read {handle.id})")
        if args.wait_for:
            handle.wait_for(args.wait_for, args.timeout)
        if args.wait_for_port:
            self._wait_for_port(handle.id, 60.0 if args.timeout is None else args.timeout)
        if args.wait:
            if view is None and not args.quiet:
                stream_to_terminal(handle, timeout=args.timeout)
            if handle.wait(args.timeout, check=args.check) and view is None:
                # No live view says how it ended: say it when it went wrong.
                print(f"[{handle.id} {ending(handle.returncode or 0)}]", file=sys.stderr)
            if view is not None:
                view.join(timeout=5)
        return handle

    def _wait_for_port(self, process_id: str, timeout: float) -> None:
        """``--wait-for-port``: until its tree listens (SPEC 11 ports); says where."""
        try:
            info = self._call(lambda: self.client.wait_for_port(process_id, timeout))
        except TimeoutError as exc:
            raise UsageError(f"{exc}; it keeps running") from None
        if not info.ports:
            status = format_status(info.state, info.exit_code, info.signal, None)
            raise UsageError(f"{process_id} {status} before it listened on a port")
        for port in info.ports:
            link = f"  {port['url']}" if port.get("url") else ""
            print(f"{process_id} listens on {port['address']}:{port['port']}{link}")

    # -- %exec / %%exec --------------------------------------------------------------

    @_exec_arguments
    @line_cell_magic("exec")
    def exec_magic(self, line: str, cell: str | None = None) -> ExecProcess:
        """Start a process on the exec server (detached: it outlives this kernel).

        ``%exec python train.py`` runs a program; ``%%exec`` runs the cell as a
        bash script. Returns a handle (``p = %exec ...``): ``p.read()``,
        ``p.output``, ``p.write()``, ``p.signal()``, ``p.terminate()``,
        ``p.wait()``, ``p.wait_for(regex)``, ``p.exit_code``.

        In a notebook the output shows live in this cell (colours rendered,
        progress bars collapsed, a status line) while the kernel stays free.
        With --wait, interrupting the kernel interrupts the process instead.
        The program gets this kernel's environment and directory, plus
        PYTHONUNBUFFERED=1; --env adds variables. --restart restarts it when it
        ends, --queue NAME waits for a free slot of that queue (%queue sets how
        many), --after ID waits until ID exited with 0.
        """
        args = parse_argstring(self.exec_magic, line)
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        if cell is None:
            if not command:
                raise UsageError("%exec needs a command, e.g. %exec python train.py")
            return self._run(args, command, args.label)
        if command:
            raise UsageError("%%exec runs the cell body with bash; put the command in the cell")
        first = next((ln.strip() for ln in cell.splitlines() if ln.strip()), "")
        return self._run(args, ["bash", "-c", cell], args.label or f"bash: {first}"[:120])

    # -- %read ---------------------------------------------------------------------

    @magic_arguments("read")
    @argument("id", help="process id")
    @argument("--after", type=int, default=0, metavar="SEQ", help="only chunks after SEQ")
    @argument("--tail", type=int, metavar="N", help="only the last N lines")
    @argument("--wait", type=int, default=0, metavar="MS", help="wait up to MS for output")
    @argument("--until", metavar="REGEX", help="with --wait: wait until the output matches")
    @argument("--raw", action="store_true", help="exact output: no progress collapsing")
    @line_magic("read")
    def read_magic(self, line: str) -> None:
        """Print a process's output (all of it, or after --after SEQ).

        Progress bars are collapsed to their final state and colours kept,
        unless --raw. A last line in brackets gives the state and the seq to
        pass to --after next time.
        """
        args = parse_argstring(self.read_magic, line)
        handle = self._handle(args.id)
        after, wait = args.after, args.wait / 1000
        if args.until:  # one read: its chunks end with the one that completed the match
            pages = [self._call(lambda: handle.read(after, wait=wait, until=args.until))]
        else:
            pages = self._call(lambda: list(handle.pages(after, wait=wait)))
        result = pages[-1]
        decoder = StreamDecoder()
        text = "".join(decoder.decode_chunks(page.chunks) for page in pages)
        if not args.raw:
            log = TerminalLog(max_lines=args.tail + 1 if args.tail else 1_000_000)
            log.feed(text)
            text = log.ansi()
            if args.tail:
                text = "".join(text.splitlines(keepends=True)[-args.tail :])
        elif args.tail:
            text = "\n".join(text.splitlines()[-args.tail :]) + (
                "\n" if text.endswith("\n") else ""
            )
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        if not args.raw:
            state = (
                format_status("exited", result.exit_code, result.signal, None)
                if result.exited
                else "running"
            )
            if args.until:
                state += ", matched" if result.matched else ", not matched"
            print(f"[{handle.id}: {state}; next --after {max(result.next_seq - 1, after)}]")

    # -- %write, %signal, %terminate -------------------------------------------------

    @magic_arguments("write")
    @argument("id", help="process id")
    @argument("--no-newline", "-n", action="store_true", help="do not add a newline")
    @argument("--eof", action="store_true", help="close stdin after writing")
    @argument("text", nargs=argparse.REMAINDER, help="the text to write")
    @line_magic("write")
    def write_magic(self, line: str) -> None:
        """Write TEXT (plus a newline) to a process's stdin (--stdin or --tty).

        TEXT is the rest of the line exactly as typed; ``--`` before it lets it
        start with a dash. ``%write ID --eof`` just closes stdin.
        """
        process_id, text, flags = split_write_line(line)
        if not process_id or process_id.startswith("-"):
            raise UsageError("usage: %write ID [--no-newline] [--eof] TEXT")
        handle = self._handle(process_id)
        eof = "--eof" in flags
        if not flags & {"--no-newline", "-n"} and (text or not eof):
            text += "\n"
        status = self._call(lambda: handle.write(text, eof=eof))
        if status != "accepted":
            hint = " (start it with --stdin)" if status == "stdinClosed" else ""
            raise UsageError(f"{handle.id}: write {status}{hint}")

    @magic_arguments("signal")
    @argument("id", help="process id")
    @argument(
        "name",
        help="interrupt, terminate, kill, hangup, quit, user1, user2, stop, continue "
        "(or SIGINT, INT, 2, ...)",
    )
    @line_magic("signal")
    def signal_magic(self, line: str) -> None:
        """Send a signal to a process (its whole process group)."""
        args = parse_argstring(self.signal_magic, line)
        try:
            name = signal_name(args.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self._call(lambda: self.client.signal(args.id, name))

    @magic_arguments("terminate")
    @argument("id", help="process id")
    @argument("--grace", type=int, metavar="MS", help="SIGKILL after MS (default 3000)")
    @line_magic("terminate")
    def terminate_magic(self, line: str) -> None:
        """Stop a process: SIGTERM to its group, SIGKILL to whatever is left after --grace."""
        args = parse_argstring(self.terminate_magic, line)
        states = {info.process_id: info.state for info in self._call(self.client.list)}
        running = self._call(lambda: self.client.terminate(args.id, args.grace))
        state = states.get(args.id, "exited")
        print(f"terminating {args.id}" if running else not_running_text(args.id, state))

    # -- %ps, %attach, %exec_connect -------------------------------------------------

    @magic_arguments("ps")
    @line_magic("ps")
    def ps_magic(self, line: str) -> None:
        """List the processes on the exec server: id, state, exit, runtime, command."""
        parse_argstring(self.ps_magic, line)
        infos = self._call(self.client.list)
        # A terminal has a width to fit; a notebook wraps its output itself.
        width = None if self._live() else shutil.get_terminal_size().columns
        display({"text/plain": ps_text(infos, width), "text/html": ps_html(infos)})

    @magic_arguments("wait")
    @argument("ids", nargs="+", metavar="ID", help="process ids")
    @argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    @line_magic("wait")
    def wait_magic(self, line: str) -> None:
        """Block until the processes exit (or --timeout passes); print how each ended.

        Raises if one of them failed (exit status not 0), as ``%exec --check`` does.
        """
        args = parse_argstring(self.wait_magic, line)
        if args.timeout is not None and args.timeout < 0:
            raise UsageError(f"--timeout {args.timeout} must not be negative")
        ended = self._call(lambda: self.client.wait_all(args.ids, args.timeout))
        failed = []
        for one in ended:
            if one["exited"]:
                status = format_status("exited", one["exitCode"], one["signal"], None)
                if one["exitCode"] != 0:
                    failed.append(f"{one['processId']} {status}")
            else:
                status = "still running"
            print(f"{one['processId']}: {status}")
        if failed:
            raise UsageError("; ".join(failed))

    @magic_arguments("queue")
    @argument("name", nargs="?", help="the queue (default: all)")
    @argument("--parallel", "-p", type=int, metavar="N", help="let N of its processes run at once")
    @line_magic("queue")
    def queue_magic(self, line: str) -> None:
        """List the queues (``%exec --queue NAME``), or set one's parallelism.

        ``%queue gpu --parallel 2`` lets two of its processes run at once; a
        queue nobody set runs one at a time. Shows each queue's limit and how
        many of its processes run and wait.
        """
        args = parse_argstring(self.queue_magic, line)
        if args.parallel is not None and args.name is None:
            raise UsageError("--parallel needs a queue name: %queue NAME --parallel N")
        if args.parallel is not None and args.parallel < 1:
            raise UsageError(f"--parallel {args.parallel} must be at least 1")
        if args.name is not None:
            try:
                check_queue_name(args.name)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        if args.parallel is not None:
            self._call(lambda: self.client.queue_set(args.name, args.parallel))
        queues = self._call(self.client.queues)
        if args.name is not None:
            queues = [q for q in queues if q.name == args.name]
        if not queues:
            print("no queues yet" if args.name is None else f"no queue named {args.name} yet")
        else:
            print(queue_text(queues))

    @magic_arguments("attach")
    @argument("id", help="process id")
    @line_magic("attach")
    def attach_magic(self, line: str) -> ExecProcess:
        """Show an existing process live in this cell, replaying its output first.

        In terminal IPython the output streams to the terminal until the
        process ends or Ctrl-C (which detaches; the process keeps running).
        """
        args = parse_argstring(self.attach_magic, line)
        handle = self._handle(args.id)
        self._call(lambda: handle.info)
        if self._show(handle) is None:
            try:
                stream_to_terminal(handle, forward=False)
            except KeyboardInterrupt:
                print(f"\n[detached from {handle.id}; it keeps running]")
        return handle

    @magic_arguments("exec_connect")
    @argument("url", nargs="?", help="exec server URL (Jupyter http(s):// or ws(s)://)")
    @argument("--token", help="its token")
    @argument("--embedded", action="store_true", help="use a registry inside this kernel")
    @argument("--auto", action="store_true", help="forget the choice; discover again")
    @line_magic("exec_connect")
    def exec_connect_magic(self, line: str) -> None:
        """Choose where processes live; without arguments, show the current choice."""
        args = parse_argstring(self.exec_connect_magic, line)
        if args.embedded:
            self.connection.use_embedded()
        elif args.auto:
            self.connection.reset()
            self.connection.get()
        elif args.url:
            try:
                self.connection.connect(args.url, args.token)
            except Exception as exc:
                raise UsageError(f"cannot connect to {args.url}: {exc}") from None
        print(f"jupyter-exec: {self.connection.describe()}")

    # -- plumbing --------------------------------------------------------------------

    def _handle(self, process_id: str) -> ExecProcess:
        return ExecProcess(self.client, process_id)

    def _call(self, call: Callable[[], _T]) -> _T:
        """Run a call to the server; its refusal becomes a one-line ``UsageError``."""
        try:
            return call()
        except ExecError as exc:
            raise UsageError(exc.message) from None
        except LookupError as exc:
            raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None

    def _pre_run_cell(self, info: Any) -> None:
        _shown_this_cell.clear()
        cell_id = getattr(info, "cell_id", None)
        if cell_id:
            stop_all_views(cell_id, timeout=0)  # this cell runs again: its old views are gone


def _origin(shell: Any) -> dict[str, str]:
    """SPEC 11 `origin` of what this kernel starts: the notebook (or console) the Jupyter
    server named in ``JPY_SESSION_NAME``, else a console of IPython."""
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return {"kind": "notebook" if session.endswith(".ipynb") else "console", "name": session}
    kernel = getattr(shell, "kernel", None) is not None
    return {"kind": "console", "name": "kernel" if kernel else "IPython"}


# -- extension entry points ------------------------------------------------------------

_loaded: dict[int, ExecMagics] = {}
_MAGIC_NAMES = (
    "exec", "read", "write", "signal", "terminate", "ps", "wait", "queue", "attach",
    "exec_connect",
)  # fmt: skip


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_exec``."""
    if id(ipython) in _loaded:
        return
    _register_shutdown(_shutdown)
    magics = ExecMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics._pre_run_cell)
    ipython.display_formatter.ipython_display_formatter.for_type(ExecProcess, display_handle)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext jupyter_exec``: stop the live views and close the connection."""
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    with contextlib.suppress(ValueError):
        ipython.events.unregister("pre_run_cell", magics._pre_run_cell)
    ipython.display_formatter.ipython_display_formatter.pop(ExecProcess, None)
    stop_all_views()
    magics.connection.close()
    for name in _MAGIC_NAMES:
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop(name, None)


def _shutdown() -> None:
    stop_all_views()
    for magics in list(_loaded.values()):
        magics.connection.close()


_shutdown_registered = False


def _register_shutdown(callback: Callable[[], None]) -> None:
    """Run ``callback`` (once) at interpreter exit while threads still work.

    ``atexit`` runs after threading has shut down, too late for the embedded
    registry to terminate its processes (it needs worker threads); threading's
    own exit hook (what concurrent.futures uses) runs before that.
    """
    global _shutdown_registered
    if _shutdown_registered:
        return
    _shutdown_registered = True
    import concurrent.futures.thread  # noqa: F401  (registers its own hook first)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(callback)
            return
        except RuntimeError:
            pass
    atexit.register(callback)
