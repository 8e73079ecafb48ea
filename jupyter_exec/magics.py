"""IPython magics: ``%exec``, ``%%exec``, ``%read``, ``%write``, ``%signal``,
``%terminate``, ``%ps``, ``%attach``, ``%exec_connect`` (``%load_ext jupyter_exec``).

The only module that imports IPython. Three parts:

- :class:`ExecProcess`, the handle ``p = %exec ...`` returns: read, write,
  signal, wait, wait_for, output, exit code, an HTML summary.
- :class:`LiveView`: one display (``display_id``) per process, updated in place
  from a daemon thread that long-polls ``process/read`` (server-side waiting,
  no busy loop). Updates go through IPython's display publisher, which in
  ipykernel hands every message to the kernel's IOPub thread, so a background
  thread never touches a socket itself; the thread runs in a copy of the cell's
  context so its messages carry the parent header of the cell that started it.
  At most ~10 updates a second; it stops when the process is closed, when the
  same cell runs again, and on kernel shutdown (``atexit``).
- :class:`Connection`: where processes live (see :mod:`jupyter_exec.discovery`):
  an explicit or ``$JUPYTER_EXEC_URL`` server, else the Jupyter server that
  launched this kernel, else an embedded registry in this process (processes
  then end with the kernel; a one-line notice says so).

Outside a kernel (terminal IPython) there is no display to update in place:
``%exec --wait`` and ``%attach`` stream the output to the terminal instead.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import contextvars
import html
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from IPython import display as _display
from IPython.core import magic as _magic
from IPython.core import magic_arguments as _magic_arguments
from IPython.core.magic import Magics, magics_class

from .client import ReadResult, SyncExecClient
from .discovery import ServerTarget, find_daemon, find_server
from .errors import ExecError
from .limit_options import start_limits
from .models import SIGNALS, ProcessInfo
from .render import (
    StreamDecoder,
    TerminalLog,
    format_status,
    process_runtime,
    ps_html,
    ps_text,
)

__all__ = [
    "Connection",
    "ExecMagics",
    "ExecProcess",
    "ExecProcessError",
    "LiveView",
    "ProcessExitedError",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_F = TypeVar("_F", bound=Callable[..., Any])


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
        raise _usage(f"cannot parse the line: {exc}") from None
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


def update_display(bundle: dict[str, str], display_id: str) -> None:
    _display.update_display(bundle, raw=True, display_id=display_id)  # type: ignore[no-untyped-call]


#: Variables that describe this kernel, not the program being started.
_KERNEL_ONLY_ENV = (
    "JPY_PARENT_PID",
    "JPY_SESSION_NAME",
    "JPY_INTERRUPT_EVENT",
    "PYDEVD_USE_FRAME_EVAL",
    "PYDEVD_IPYTHON_COMPATIBLE_DEBUGGING",
)
_PAGE_BYTES = 1 << 20


class ExecProcessError(subprocess.CalledProcessError):
    """``--check``/``check=True``: the process exited with a non-zero status."""

    def __init__(self, process_id: str, returncode: int, cmd: list[str], output: str) -> None:
        super().__init__(returncode, cmd, output)
        self.process_id = process_id

    def __str__(self) -> str:
        tail = "\n".join(self.output.splitlines()[-10:]) if self.output else ""
        return f"process {self.process_id} ({shlex.join(self.cmd)}) {_ending(self.returncode)}" + (
            f"; last output:\n{tail}" if tail else ""
        )


class ProcessExitedError(RuntimeError):
    """``wait_for``: the process ended before its output matched."""


def _ending(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {SIGNALS_BY_NUMBER[-returncode]}"
        except KeyError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


SIGNALS_BY_NUMBER = {int(s): s.name for s in SIGNALS.values()}
_SIGNAL_ALIASES = {
    "int": "interrupt", "term": "terminate", "hup": "hangup", "usr1": "user1",
    "usr2": "user2", "cont": "continue", "kill": "kill", "quit": "quit", "stop": "stop",
}  # fmt: skip


def signal_name(name: str) -> str:
    """``SIGINT``, ``int``, ``2``, ``interrupt`` -> the wire name ``interrupt``."""
    key = name.strip().lower()
    if key.isdigit():
        for wire, sig in SIGNALS.items():
            if int(sig) == int(key):
                return wire
    key = key.removeprefix("sig")
    if key in SIGNALS:
        return key
    if key in _SIGNAL_ALIASES:
        return _SIGNAL_ALIASES[key]
    raise ValueError(f"unknown signal {name!r}; use one of {', '.join(SIGNALS)}")


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This kernel's environment, as ``!cmd`` would see it, minus kernel-only variables.

    ``PYTHONUNBUFFERED=1`` is added (unless set) so Python programs show their
    output live instead of in 8 KiB blocks.
    """
    env = {k: v for k, v in os.environ.items() if k not in _KERNEL_ONLY_ENV}
    if env.get("MPLBACKEND", "").startswith("module://matplotlib_inline"):
        del env["MPLBACKEND"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(overrides)
    return env


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _decode_chunks(result: ReadResult, decoder: StreamDecoder) -> str:
    return "".join(decoder.decode(c.stream, c.data) for c in result.chunks)


# -- the handle -------------------------------------------------------------------


class ExecProcess:
    """A process on the exec server: what ``p = %exec ...`` returns.

    Everything goes to the server, so a handle made in another kernel (or with
    ``ExecProcess(client, "train")``) sees the same process.
    """

    def __init__(
        self, client: SyncExecClient, process_id: str, argv: list[str] | None = None
    ) -> None:
        self.client = client
        self.id = process_id
        self._argv = argv
        #: Seq of the chunk that completed the last ``wait_for`` match.
        self.last_match_seq = 0

    # -- state ----------------------------------------------------------------

    @property
    def info(self) -> ProcessInfo:
        infos: list[ProcessInfo] = self.client.list()
        for info in infos:
            if info.process_id == self.id:
                return info
        raise LookupError(f"unknown process id {self.id}")

    @property
    def argv(self) -> list[str]:
        if self._argv is None:
            self._argv = list(self.info.argv)
        return self._argv

    @property
    def running(self) -> bool:
        return self.info.state == "running"

    @property
    def exit_code(self) -> int | None:
        """The exit status, 128+N when killed by signal N; None while running."""
        return self.info.exit_code

    @property
    def returncode(self) -> int | None:
        """Like ``subprocess.Popen.returncode``: -N when killed by signal N."""
        info = self.info
        return _returncode(info.exit_code, info.signal)

    # -- output ----------------------------------------------------------------

    def read(
        self,
        after: int = 0,
        *,
        wait: float = 0.0,
        until: str | None = None,
        max_bytes: int | None = None,
    ) -> ReadResult:
        """One ``process/read``: chunks after seq ``after`` (``.data`` is bytes)."""
        result: ReadResult = self.client.read(
            self.id,
            after,
            max_bytes=max_bytes,
            wait_ms=int(wait * 1000),
            until_pattern=until,
        )
        return result

    def iter_chunks(self, after: int = 0) -> Iterator[ReadResult]:
        """Every readable page after ``after``, up to now (no waiting)."""
        while True:
            result = self.read(after, max_bytes=_PAGE_BYTES)
            yield result
            if not result.chunks or result.next_seq <= after:
                return
            after = result.next_seq

    @property
    def output(self) -> str:
        """All output so far, decoded as UTF-8, escape sequences and ``\\r`` kept."""
        decoder = StreamDecoder()
        return "".join(_decode_chunks(page, decoder) for page in self.iter_chunks())

    @property
    def text(self) -> str:
        """All output so far as a terminal shows it: colours dropped, progress collapsed."""
        log = TerminalLog(max_lines=1_000_000)
        log.feed(self.output)
        return log.text()

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    # -- control ---------------------------------------------------------------

    def write(self, data: str | bytes, *, eof: bool = False) -> str:
        """Write to stdin (``%exec --stdin`` or a tty). Returns the server's status."""
        raw = data.encode() if isinstance(data, str) else data
        return str(self.client.write(self.id, raw, eof=eof))

    def signal(self, name: str) -> None:
        """Send a signal to the process group: ``interrupt``, ``SIGTERM``, ``hup``..."""
        self.client.signal(self.id, signal_name(name))

    def interrupt(self) -> None:
        self.signal("interrupt")

    def terminate(self, grace: float | None = None) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds. True if it was running."""
        grace_ms = None if grace is None else int(grace * 1000)
        return bool(self.client.terminate(self.id, grace_ms))

    def kill(self) -> None:
        self.signal("kill")

    def resize(self, rows: int, cols: int) -> None:
        self.client.resize(self.id, rows, cols)

    # -- waiting ---------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, check: bool = False) -> int:
        """Block until the process exits; return its exit code (128+N on signal N).

        Interrupting the kernel (Ctrl-C) interrupts the process, not this wait:
        the first interrupt sends SIGINT, the second terminates the process, a
        third stops waiting (the process keeps running). ``timeout`` raises
        ``TimeoutError``; ``check=True`` raises :class:`ExecProcessError` on a
        non-zero status.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interrupts = _Interrupts(self)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"process {self.id} still running after {timeout}s")
            step = 1.0 if remaining is None else min(1.0, remaining)
            try:
                result = self.client.wait(self.id, timeout=step)
            except TimeoutError:
                continue
            except KeyboardInterrupt:
                interrupts()
                continue
            if result.exited:
                break
        info = self.info
        code = info.exit_code if info.exit_code is not None else -1
        returncode = _returncode(info.exit_code, info.signal)
        if check and returncode:
            raise ExecProcessError(self.id, returncode or 0, self.argv, self.text)
        return code

    def wait_for(
        self, pattern: str, timeout: float | None = None, *, after: int = 0
    ) -> re.Match[str]:
        """Block until the output after seq ``after`` matches ``pattern``; return the match.

        The server does the matching (``untilPattern``), so nothing is polled.
        By default all output is searched, so a line printed before the call
        counts. To wait for the *next* prompt, pass ``after=p.last_match_seq``
        (the seq of the chunk that completed the previous match). Raises
        :class:`ProcessExitedError` if the process ends first and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        compiled = re.compile(pattern)
        start = after
        deadline = None if timeout is None else time.monotonic() + timeout
        interrupts = _Interrupts(self)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"process {self.id}: no output matched {pattern!r} within {timeout}s"
                )
            step = 5.0 if remaining is None else min(5.0, remaining)
            try:
                result = self.read(start, wait=step, until=pattern)
            except KeyboardInterrupt:
                interrupts()
                continue
            if result.matched:
                return self._matched(compiled, result)
            if result.exited:
                ending = _ending(_returncode(result.exit_code, result.signal) or 0)
                raise ProcessExitedError(
                    f"process {self.id} {ending} before its output matched {pattern!r}; "
                    f"last output:\n{self.tail(10)}"
                )

    def _matched(self, compiled: re.Pattern[str], result: ReadResult) -> re.Match[str]:
        decoder = StreamDecoder()
        text = "".join(decoder.decode(c.stream, c.data) for c in result.chunks)
        self.last_match_seq = result.chunks[-1].seq if result.chunks else result.next_seq - 1
        match = compiled.search(text)
        if match is None:  # decoding differences: search what the server saw, again
            text = "".join(c.data.decode("utf-8", "replace") for c in result.chunks)
            match = compiled.search(text)
        if match is None:
            raise RuntimeError(f"the server matched {compiled.pattern!r} but the text does not")
        return match

    # -- display ---------------------------------------------------------------

    def __repr__(self) -> str:
        try:
            info = self.info
        except Exception:
            return f"<ExecProcess {self.id}>"
        status = format_status(info.state, info.exit_code, info.signal, process_runtime(info))
        return f"<ExecProcess {self.id} {status}: {shlex.join(info.argv)}>"

    def _repr_html_(self) -> str:
        try:
            info = self.info
        except Exception as exc:
            return f"<code>{html.escape(self.id)}</code>: {html.escape(str(exc))}"
        log = TerminalLog(max_lines=20)
        for page in self.iter_chunks():
            log.feed(_decode_chunks(page, StreamDecoder()))
        return _view_html(info, log, process_runtime(info))

    def _ipython_display_(self) -> None:
        if self in _shown_this_cell:
            return  # its live view (or --quiet) already said what there is to say
        display({"text/plain": repr(self), "text/html": self._repr_html_()})


def _returncode(exit_code: int | None, signal: str | None) -> int | None:
    if exit_code is None:
        return None
    if signal and exit_code > 128:
        return -(exit_code - 128)
    return exit_code


class _Interrupts:
    """Ctrl-C while waiting on a process: the first sends it SIGINT, the second
    terminates it, the third stops waiting (KeyboardInterrupt; it keeps running)."""

    def __init__(self, handle: ExecProcess) -> None:
        self.handle = handle
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == 1:
            self.handle.signal("interrupt")
            print(f"[sent SIGINT to {self.handle.id}; interrupt again to terminate it]")
        elif self.count == 2:
            self.handle.terminate()
            print(f"[terminating {self.handle.id}; interrupt again to stop waiting]")
        else:
            raise KeyboardInterrupt


# -- live view --------------------------------------------------------------------

#: Handles whose output is already on screen in the running cell (cleared per cell).
_shown_this_cell: weakref.WeakSet[ExecProcess] = weakref.WeakSet()
_views: dict[str, LiveView] = {}
_views_lock = threading.Lock()

_STATUS_COLOURS = {"running": "#1a73e8", "ok": "#188038", "failed": "#d93025"}


def _view_html(info: ProcessInfo, log: TerminalLog, runtime: float, note: str = "") -> str:
    status = format_status(info.state, info.exit_code, info.signal, runtime)
    if info.state == "running":
        colour = _STATUS_COLOURS["running"]
    else:
        colour = _STATUS_COLOURS["ok" if info.exit_code == 0 else "failed"]
    dropped = f" · {log.dropped_lines} earlier lines not shown" if log.dropped_lines else ""
    body = log.html()
    header = (
        f'<div style="font-family:var(--jp-code-font-family,monospace);font-size:12px;'
        f'opacity:0.85;margin-bottom:2px">'
        f"<b>{html.escape(info.process_id)}</b> · <code>{html.escape(shlex.join(info.argv))}</code>"
        f' · <span style="color:{colour};font-weight:bold">{html.escape(status)}</span>'
        f"{html.escape(dropped)}{html.escape(note)}</div>"
    )
    if not body:
        return f'<div class="jupyter-exec-view">{header}</div>'
    # column-reverse keeps the box scrolled to its newest line.
    return (
        f'<div class="jupyter-exec-view">{header}'
        f'<div style="max-height:24em;overflow:auto;display:flex;flex-direction:column-reverse">'
        f'<pre style="margin:0;white-space:pre-wrap">{body}</pre></div></div>'
    )


def _view_text(info: ProcessInfo, log: TerminalLog, runtime: float) -> str:
    status = format_status(info.state, info.exit_code, info.signal, runtime)
    lines = log.text().splitlines()[-20:]
    return "\n".join([*lines, f"[{info.process_id}: {status}]"])


class LiveView:
    """Shows one process in one display and keeps it current from a daemon thread.

    ``show()`` publishes the first display (call it from the cell's thread);
    ``start()`` begins following. The thread reads with a server-side wait, so
    it sleeps until output or exit; updates are at most ``max_rate`` a second
    (slower for big displays), with a runtime tick every second while quiet.
    """

    max_rate = 10.0

    def __init__(
        self,
        client: SyncExecClient,
        info: ProcessInfo,
        *,
        max_lines: int = 500,
        publish: Callable[[dict[str, str], str, bool], None] | None = None,
        cell_id: str | None = None,
    ) -> None:
        self.client = client
        self.info = info
        self.process_id = info.process_id
        self.display_id = f"jupyter-exec-{info.process_id}-{os.urandom(4).hex()}"
        self.log = TerminalLog(max_lines=max_lines)
        self.cell_id = cell_id
        self.updates = 0
        self._decoder = StreamDecoder()
        self._publish = publish or _publish_display
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._note = ""

    # -- lifecycle ---------------------------------------------------------------

    def show(self) -> None:
        self._publish(self._bundle(), self.display_id, False)

    def start(self) -> None:
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._follow,),
            name=f"jupyter-exec-view-{self.process_id}",
            daemon=True,
        )
        with _views_lock:
            _views[self.display_id] = self
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------

    def _follow(self) -> None:
        try:
            self._follow_until_closed()
        except Exception as exc:
            if not self._stop.is_set():
                self._note = f" · view stopped: {exc}"
                self._render()
        finally:
            with _views_lock:
                _views.pop(self.display_id, None)

    def _follow_until_closed(self) -> None:
        last_render = time.monotonic()
        dirty = False
        while not self._stop.is_set():
            result = self.client.read(
                self.process_id, self._seq, max_bytes=_PAGE_BYTES, wait_ms=1000
            )
            if result.first_seq > self._seq + 1 and not self._note:
                self._note = f" · output before seq {result.first_seq} was dropped"
            if result.chunks:
                self.log.feed(_decode_chunks(result, self._decoder))
                dirty = True
            self._seq = max(self._seq, result.next_seq - 1)
            if result.exited and self.info.state == "running":
                self.info = self._fresh_info(result)
                dirty = True
            if result.closed:
                self.info = self._fresh_info(result)
                self._render()
                return
            now = time.monotonic()
            interval = self._interval()
            if dirty and now - last_render >= interval:
                self._render()
                last_render, dirty = now, False
            elif not dirty and now - last_render >= (1.0 if self.info.state == "running" else 5):
                self._render()  # runtime tick
                last_render = now
            if dirty or (result.exited and not result.chunks):
                # Let output accumulate (or wait for "closed" after "exited").
                self._stop.wait(max(interval - (time.monotonic() - last_render), 0.05))

    def _interval(self) -> float:
        size = sum(len(line) for line in self.log.lines)
        return max(1.0 / self.max_rate, size / 200_000)

    def _fresh_info(self, result: ReadResult) -> ProcessInfo:
        infos: list[ProcessInfo] = self.client.list()
        for info in infos:
            if info.process_id == self.process_id:
                return info
        return self.info.model_copy(
            update={
                "state": "closed" if result.closed else "exited",
                "exit_code": result.exit_code,
                "signal": result.signal,
                "exited_at": int(time.time() * 1000),
            }
        )

    def _bundle(self) -> dict[str, str]:
        runtime = process_runtime(self.info)
        return {
            "text/plain": _view_text(self.info, self.log, runtime),
            "text/html": _view_html(self.info, self.log, runtime, self._note),
        }

    def _render(self) -> None:
        if self._stop.is_set():
            return
        self._publish(self._bundle(), self.display_id, True)
        self.updates += 1


def _publish_display(bundle: dict[str, str], display_id: str, update: bool) -> None:
    if update:
        update_display(bundle, display_id)
    else:
        display(bundle, display_id)


def stop_all_views(cell_id: str | None = None, timeout: float = 1.0) -> None:
    """Stop live views (all, or those of the cell ``cell_id``); join up to ``timeout``.

    A stopped view publishes nothing more at once; its thread ends after its
    current read (at most about a second).
    """
    with _views_lock:
        views = [v for v in _views.values() if cell_id is None or v.cell_id == cell_id]
    for view in views:
        view._stop.set()
    deadline = time.monotonic() + timeout
    for view in views:
        view.stop(timeout=max(0.0, deadline - time.monotonic()))


# -- terminal streaming (no kernel) ------------------------------------------------


def stream_to_terminal(
    handle: ExecProcess, after: int = 0, *, forward: bool = True, timeout: float | None = None
) -> ReadResult:
    """Copy output to ``sys.stdout`` until the process is closed (terminal IPython).

    With ``forward``, Ctrl-C goes to the process (see :class:`_Interrupts`);
    without, Ctrl-C stops streaming (KeyboardInterrupt). ``timeout`` raises
    ``TimeoutError`` (the process keeps running).
    """
    decoder = StreamDecoder()
    interrupts = _Interrupts(handle)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"process {handle.id} still running after {timeout}s")
        try:
            result = handle.read(after, wait=1.0, max_bytes=_PAGE_BYTES)
        except KeyboardInterrupt:
            if not forward:
                raise
            interrupts()
            continue
        text = _decode_chunks(result, decoder)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
        after = max(after, result.next_seq - 1)
        if result.closed:
            return result
        if result.exited and not result.chunks:
            time.sleep(0.1)


# -- where processes live -----------------------------------------------------------


class Connection:
    """This kernel's client, made on first use by discovery (module docstring)."""

    def __init__(self) -> None:
        self._client: SyncExecClient | None = None
        self.target: ServerTarget | None = None
        self._lock = threading.Lock()
        self._embedded: SyncExecClient | None = None

    @property
    def embedded(self) -> bool:
        return self._client is not None and self._client is self._embedded

    def get(self) -> SyncExecClient:
        with self._lock:
            if self._client is not None and self._lost(self._client):
                self._client = None  # the server went away (restart?): find it again
            if self._client is None:
                self._client = self._discover()
            return self._client

    def _lost(self, client: SyncExecClient) -> bool:
        inner = getattr(client, "client", None)
        return client is not self._embedded and bool(getattr(inner, "closed", False))

    def _discover(self) -> SyncExecClient:
        target = find_server()
        if target is not None:
            try:
                client = SyncExecClient.connect(target.url, target.token)
            except Exception as exc:
                if target.source in ("explicit", "environment"):
                    raise ConnectionError(f"cannot reach {target.describe()}: {exc}") from exc
                print(
                    f"jupyter-exec: cannot use {target.describe()} ({exc}); "
                    "processes run inside this kernel and end with it."
                )
            else:
                self.target = target
                return client
        elif (daemon := find_daemon()) is not None:
            # No server (it stopped or crashed), but its processes live on in the daemon.
            self.target = ServerTarget(f"unix:{daemon}", None, "daemon")
            return SyncExecClient.connect_daemon(daemon)
        else:
            print(
                "jupyter-exec: no exec server found; processes run inside this kernel "
                "and end with it (%exec_connect URL to use a server)."
            )
        return self._embedded_client()

    def _embedded_client(self) -> SyncExecClient:
        if self._embedded is None:
            self._embedded = SyncExecClient.embedded()
        self.target = None
        return self._embedded

    def connect(self, url: str, token: str | None) -> SyncExecClient:
        target = find_server(url, token)
        assert target is not None
        client = SyncExecClient.connect(target.url, target.token)
        with self._lock:
            old, self._client, self.target = self._client, client, target
        if old is not None and old is not self._embedded:
            old.close()
        return client

    def use_embedded(self) -> SyncExecClient:
        with self._lock:
            old = self._client
            self._client = self._embedded_client()
        if old is not None and old is not self._embedded:
            old.close()
        return self._client

    def reset(self) -> None:
        """Forget the current choice; the next use runs discovery again."""
        with self._lock:
            old, self._client, self.target = self._client, None, None
        if old is not None and old is not self._embedded:
            old.close()

    def describe(self) -> str:
        if self._client is None:
            return "not connected yet (connects on first use)"
        if self.embedded or self.target is None:
            return "embedded registry in this kernel (processes end with it)"
        return self.target.describe()

    def close(self) -> None:
        with self._lock:
            clients = {id(c): c for c in (self._client, self._embedded) if c is not None}
            self._client = self._embedded = None
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()


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
        argument("--timeout", type=float, metavar="S", help="limit for --wait / --wait-for"),
        argument("--time-limit", type=float, metavar="S", help="terminate the process after S"),
        argument("--memory-limit", metavar="SIZE", help="its address space, e.g. 512M, 2G"),
        argument("--cpu-limit", type=int, metavar="S", help="its CPU seconds, then SIGXCPU"),
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
        self.connection = Connection()
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

    def _new_id(self) -> str:
        taken = {info.process_id for info in self.client.list()}
        numbers = [int(pid[1:]) for pid in taken if re.fullmatch(r"p\d+", pid)]
        self._counter = max([self._counter, *numbers]) + 1
        return f"p{self._counter}"

    def _start(self, args: Any, argv: list[str], label: str | None) -> ExecProcess:
        try:
            env = child_environment(parse_env(args.env))
            limits = start_limits(args.time_limit, args.memory_limit, args.cpu_limit)
        except ValueError as exc:
            raise _usage(str(exc)) from None
        cwd = os.path.abspath(os.path.expanduser(args.cwd)) if args.cwd else os.getcwd()
        client = self.client
        if args.replace and args.name:
            with contextlib.suppress(ExecError):  # nothing of that name: fine
                client.request("process/remove", {"processId": args.name})
        for _attempt in range(5):
            process_id = args.name or self._new_id()
            try:
                client.start(
                    process_id,
                    argv,
                    cwd=cwd,
                    env=env,
                    tty=args.tty,
                    pipe_stdin=args.stdin,
                    rows=24,
                    cols=120,
                    lifetime="detached",
                    label=label,
                    **limits,
                )
            except ExecError as exc:
                if args.name or "already exists" not in exc.message:
                    raise _usage(exc.message) from None
                continue  # another kernel took that pN meanwhile
            return ExecProcess(client, process_id, argv)
        raise _usage("could not pick a free process id; use --name")

    def _show(self, handle: ExecProcess) -> LiveView | None:
        """Start a live view of ``handle`` in this cell (kernel only)."""
        _shown_this_cell.add(handle)
        if not self._live():
            return None
        view = LiveView(
            handle.client, handle.info, max_lines=self.view_lines, cell_id=self._cell_id()
        )
        view.show()
        view.start()
        return view

    def _run(self, args: Any, argv: list[str], label: str | None) -> ExecProcess:
        if args.check and not args.wait:
            raise _usage("--check needs --wait")
        handle = self._start(args, argv, label)
        view = None if args.quiet else self._show(handle)
        if args.quiet:
            _shown_this_cell.add(handle)
        elif view is None and not (args.wait or args.wait_for):
            print(f"started {handle.id}: {label or shlex.join(argv)}  (%read {handle.id})")
        if args.wait_for:
            handle.wait_for(args.wait_for, args.timeout)
        if args.wait:
            if view is None and not args.quiet:
                stream_to_terminal(handle, timeout=args.timeout)
            handle.wait(args.timeout, check=args.check)
            if view is not None:
                view.join(timeout=5)
        return handle

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
        PYTHONUNBUFFERED=1; --env adds variables.
        """
        args = parse_argstring(self.exec_magic, line)
        command = list(args.command)
        if command and command[0] == "--":
            command = command[1:]
        if cell is None:
            if not command:
                raise _usage("%exec needs a command, e.g. %exec python train.py")
            return self._run(args, command, args.label)
        if command:
            raise _usage("%%exec runs the cell body with bash; put the command in the cell")
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
        decoder = StreamDecoder()
        parts: list[str] = []
        after = args.after
        result = self._call(
            lambda: handle.read(
                after,
                wait=args.wait / 1000,
                until=args.until,
                max_bytes=None if args.until else _PAGE_BYTES,
            )
        )
        parts.append(_decode_chunks(result, decoder))
        if result.chunks and not args.until:
            start = result.next_seq - 1
            for page in self._call(lambda: list(handle.iter_chunks(start))):
                parts.append(_decode_chunks(page, decoder))
                result = (
                    page
                    if page.chunks
                    else result.model_copy(
                        update={
                            "exited": page.exited,
                            "exit_code": page.exit_code,
                            "signal": page.signal,
                            "closed": page.closed,
                        }
                    )
                )
        text = "".join(parts)
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
            raise _usage("usage: %write ID [--no-newline] [--eof] TEXT")
        handle = self._handle(process_id)
        eof = "--eof" in flags
        if not flags & {"--no-newline", "-n"} and (text or not eof):
            text += "\n"
        status = self._call(lambda: handle.write(text, eof=eof))
        if status != "accepted":
            hint = " (start it with --stdin)" if status == "stdinClosed" else ""
            raise _usage(f"{handle.id}: write {status}{hint}")

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
            raise _usage(str(exc)) from None
        self._call(lambda: self.client.signal(args.id, name))

    @magic_arguments("terminate")
    @argument("id", help="process id")
    @argument("--grace", type=int, metavar="MS", help="SIGKILL after MS (default 3000)")
    @line_magic("terminate")
    def terminate_magic(self, line: str) -> None:
        """Stop a process: SIGTERM to its group, SIGKILL to whatever is left after --grace."""
        args = parse_argstring(self.terminate_magic, line)
        running = self._call(lambda: self.client.terminate(args.id, args.grace))
        print(f"terminating {args.id}" if running else f"{args.id} was not running")

    # -- %ps, %attach, %exec_connect -------------------------------------------------

    @magic_arguments("ps")
    @line_magic("ps")
    def ps_magic(self, line: str) -> None:
        """List the processes on the exec server: id, state, exit, runtime, command."""
        parse_argstring(self.ps_magic, line)
        infos = self._call(self.client.list)
        display({"text/plain": ps_text(infos), "text/html": ps_html(infos)})

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
                raise _usage(f"cannot connect to {args.url}: {exc}") from None
        print(f"jupyter-exec: {self.connection.describe()}")

    # -- plumbing --------------------------------------------------------------------

    def _handle(self, process_id: str) -> ExecProcess:
        return ExecProcess(self.client, process_id)

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ExecError as exc:
            raise _usage(exc.message) from None
        except LookupError as exc:
            raise _usage(str(exc.args[0]) if exc.args else str(exc)) from None

    def _pre_run_cell(self, info: Any) -> None:
        _shown_this_cell.clear()
        cell_id = getattr(info, "cell_id", None)
        if cell_id:
            stop_all_views(cell_id, timeout=0)  # this cell runs again: its old views are gone


def _usage(message: str) -> Exception:
    from IPython.core.error import UsageError

    return UsageError(message)


# -- extension entry points ------------------------------------------------------------

_loaded: dict[int, ExecMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_exec``."""
    if id(ipython) in _loaded:
        return
    magics = ExecMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics._pre_run_cell)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext jupyter_exec``: stop the live views and close the connection."""
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    with contextlib.suppress(ValueError):
        ipython.events.unregister("pre_run_cell", magics._pre_run_cell)
    stop_all_views()
    magics.connection.close()
    for name in ("exec", "read", "write", "signal", "terminate", "ps", "attach", "exec_connect"):
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop(name, None)


def _shutdown() -> None:
    stop_all_views()
    for magics in list(_loaded.values()):
        magics.connection.close()


def _register_shutdown(callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit while threads still work.

    ``atexit`` runs after threading has shut down, too late for the embedded
    registry to terminate its processes (it needs worker threads); threading's
    own exit hook (what concurrent.futures uses) runs before that.
    """
    import concurrent.futures.thread  # noqa: F401  (registers its own hook first)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        try:
            register(callback)
            return
        except RuntimeError:
            pass
    atexit.register(callback)


_register_shutdown(_shutdown)
