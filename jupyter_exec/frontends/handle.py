"""`ExecProcess`: a handle on one process of an exec server, for scripts and notebooks.

What ``p = %exec ...`` returns, and what ``ExecProcess(client, "train")`` makes
anywhere: read, write, signal, wait, wait_for, the output, the exit code. Every
call goes to the server, so handles made in two kernels see the same process.
No IPython here: ``repr(p)`` is one plain line (``<exec train: running 12.3s>``)
and ``_repr_html_`` a summary, which IPython shows without being imported; the
magics add only "do not show it twice in the cell that shows it live".
"""

from __future__ import annotations

import html
import re
import shlex
import subprocess
import time
from collections.abc import Iterator

from ..client.exec_client import Page, SyncExecClient
from ..render.html_render import view_html
from ..render.presentation import ending, format_status, process_runtime, returncode
from ..render.terminal import StreamDecoder, TerminalLog
from ..wire.errors import JupyterExecError
from ..wire.models import ProcessInfo
from ..wire.schema import ReadResult
from .connection import shared
from .shared import Escalation, signal_name

__all__ = ["ExecProcess", "ExecProcessError", "NeverStartedError", "ProcessExitedError"]


class ExecProcessError(JupyterExecError, subprocess.CalledProcessError):
    """``--check``/``check=True``: the process exited with a non-zero status."""

    def __init__(self, process_id: str, returncode: int, cmd: list[str], output: str) -> None:
        super().__init__(returncode, cmd, output)
        self.process_id = process_id

    def __str__(self) -> str:
        tail = "\n".join(self.output.splitlines()[-10:]) if self.output else ""
        return f"process {self.process_id} ({shlex.join(self.cmd)}) {ending(self.returncode)}" + (
            f"; last output:\n{tail}" if tail else ""
        )


class ProcessExitedError(JupyterExecError, RuntimeError):
    """``wait_for``: the process ended before its output matched."""


class NeverStartedError(JupyterExecError, RuntimeError):
    """``check=True``: the process ended without running (SPEC 11: a dependency of its
    ``after`` failed, or it was terminated while queued); the message is its `failure`."""


class ExecProcess:
    """A process on the exec server (module docstring)."""

    def __init__(
        self,
        client: SyncExecClient | str,
        process_id: str | None = None,
        argv: list[str] | None = None,
    ) -> None:
        # ExecProcess("train"): through the magics' connection (connection.shared), which
        # finds the process after a kernel restart too, whatever front runs the kernel.
        if isinstance(client, str):
            process_id, client = client, shared().get()
        if process_id is None:
            raise TypeError("ExecProcess(client, process_id) or ExecProcess(process_id)")
        self.client: SyncExecClient = client
        self.id: str = process_id
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
        return returncode(info.exit_code, info.signal)

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

    def pages(self, after: int = 0, *, wait: float = 0.0, follow: bool = False) -> Iterator[Page]:
        """Every page of output after seq ``after``: :meth:`SyncExecClient.pages`."""
        return self.client.pages(self.id, after, wait_ms=int(wait * 1000), follow=follow)

    @property
    def output(self) -> str:
        """All output so far, decoded as UTF-8, escape sequences and ``\\r`` kept."""
        decoder = StreamDecoder()
        return "".join(decoder.decode_chunks(page.chunks) for page in self.pages())

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

    def escalate(self, escalation: Escalation) -> None:
        """One Ctrl-C while following this process (see :class:`Escalation`).

        Interrupts or terminates the process and says so; at the third press
        raises ``KeyboardInterrupt`` (the caller stops following).
        """
        step = escalation.press()
        if step == "leave":
            raise KeyboardInterrupt
        if step == "interrupt":
            self.interrupt()
        else:
            self.terminate()
        print(escalation.notice(step))

    # -- waiting ---------------------------------------------------------------

    def wait(self, timeout: float | None = None, *, check: bool = False) -> int:
        """Block until the process exits; return its exit code (128+N on signal N).

        Interrupting the kernel (Ctrl-C) interrupts the process, not this wait:
        the first interrupt sends SIGINT, the second terminates the process, a
        third stops waiting (the process keeps running). ``timeout`` raises
        ``TimeoutError``; ``check=True`` raises :class:`ExecProcessError` on a
        non-zero status, :class:`NeverStartedError` if it never ran (then -1).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        escalation = Escalation(self.id)
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
                self.escalate(escalation)
                continue
            if result.exited:
                break
        info = self.info
        code = info.exit_code if info.exit_code is not None else -1
        status = returncode(info.exit_code, info.signal)
        if check and info.exit_code is None:
            raise NeverStartedError(f"process {self.id} never started: {info.failure}")
        if check and status:
            raise ExecProcessError(self.id, status, self.argv, self.text)
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
        deadline = None if timeout is None else time.monotonic() + timeout
        escalation = Escalation(self.id)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"process {self.id}: no output matched {pattern!r} within {timeout}s"
                )
            step = 5.0 if remaining is None else min(5.0, remaining)
            try:
                result = self.read(after, wait=step, until=pattern)
            except KeyboardInterrupt:
                self.escalate(escalation)
                continue
            if result.matched:
                return self._matched(compiled, result)
            if result.exited:
                how = ending(returncode(result.exit_code, result.signal) or 0)
                raise ProcessExitedError(
                    f"process {self.id} {how} before its output matched {pattern!r}; "
                    f"last output:\n{self.tail(10)}"
                )

    def _matched(self, compiled: re.Pattern[str], result: ReadResult) -> re.Match[str]:
        text = StreamDecoder().decode_chunks(result.chunks)
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
        """``<exec train: running 12.3s>``; what terminal IPython and ``print`` show."""
        try:
            info = self.info
        except Exception:
            return f"<exec {self.id}: unknown>"
        status = format_status(info.state, info.exit_code, info.signal, process_runtime(info))
        return f"<exec {self.id}: {status}>"

    def _repr_html_(self) -> str:
        try:
            info = self.info
        except Exception as exc:
            return f"<code>{html.escape(self.id)}</code>: {html.escape(str(exc))}"
        log = TerminalLog(max_lines=20)
        decoder = StreamDecoder()
        for page in self.pages():
            log.feed(decoder.decode_chunks(page.chunks))
        return view_html(info, log, process_runtime(info))
