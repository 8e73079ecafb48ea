"""The OS side of one child: spawn (PTY or pipes), its fds, reaping, and tree kill.

This is the one small interface the registry drives. With a `Keeper` (the
exec daemon's holder, daemon/holder.py) the child outlives the registry's
process: the keeper gets a copy of our ends of its pipes or PTY before it is
spawned and its pidfd right after, hears of its exit before we reap it, and
reaps it for a registry that adopted it (`Child.adopted`). Everything here is
synchronous and non-blocking; the registry wires the fds into its event loop.

Every child's environment carries ``JUPYTER_EXEC_MARKER=<registry>/<process>``,
inherited by all descendants, so termination can find descendants that left
the process group or session (SPEC 4 `process/terminate`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..wire.errors import InvalidParamsError
from ..wire.protocol import EnvPolicy
from .proctree import ProcessRef, identify

_CORE_VARS = ("HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "TMPDIR", "TEMP", "TMP")
_DEFAULT_EXCLUDES = ("*KEY*", "*SECRET*", "*TOKEN*")


@dataclass
class ChildSpec:
    """A validated request to start a child (argv[0] already resolved to a path)."""

    executable: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    tty: bool
    pipe_stdin: bool
    rows: int = 24
    cols: int = 80
    #: Run in the child before exec (resource limits, limits.py; the sandbox, sandbox.py).
    preexec: Callable[[], None] | None = None
    #: Descriptors `preexec` needs (close-on-exec: the program never sees them; Popen
    #: closes the others only after `preexec`, so nothing more is needed to keep them).
    keep_fds: tuple[int, ...] = ()


class Keeper(Protocol):
    """Keeps copies of a child's descriptors and its exit status across our death.

    `key` names one child for the keeper (unique over time); `names` say which
    descriptor is which ("stdout", "stderr", "stdin", "pty", "staging", "staging_w").
    """

    def hold(self, key: str, meta: dict[str, Any], fds: dict[str, int]) -> None: ...

    def spawned(self, key: str, pid: int, pidfd: int) -> None: ...

    def exited(self, key: str, status: int) -> None: ...

    def close(self, key: str, names: list[str]) -> None: ...

    def release(self, key: str) -> None: ...

    def reap(self, key: str) -> tuple[int | None, float, int | None] | None:
        """None while it runs; else (raw status or None if unknown, cpu seconds, exitedAt ms)."""
        ...


#: The exit code of an adopted child whose status nobody could tell (see `Child.reap`).
UNKNOWN_EXIT_STATUS = 255 << 8


@dataclass
class Child:
    """A running child: its pid, a pidfd that turns readable at exit, and its fds.

    The pid is ours only until `reap`: after that its number may name any new
    process, so signals go through the pidfd, and to the group only before reaping.
    """

    pid: int
    pidfd: int
    outputs: dict[int, str]  # fd -> stream name
    stdin_fd: int | None
    tty: bool
    #: CPU seconds (user + system) the kernel accounted to it, known once reaped.
    cpu_seconds: float = 0.0
    keeper: Keeper | None = None
    key: str = ""
    #: A PTY's bytes pass through this pipe (read end, write end) on their way to the
    #: log, so a byte taken from the PTY is held by the keeper until it is logged.
    staging: tuple[int, int] | None = None
    #: Not our child (a previous daemon's, now the keeper's): the keeper reaps it.
    adopted: bool = False
    #: When it exited (ms), if it was before we saw it (an adopted child).
    exited_at: int | None = None
    #: An adopted child whose exit status nobody kept (`UNKNOWN_EXIT_STATUS`).
    exit_unknown: bool = False
    #: Its identity, read while it was certainly ours (before it could be reaped).
    ref: ProcessRef = field(init=False)
    reaped: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.ref = identify(self.pid) or ProcessRef(self.pid, -1)

    @classmethod
    def gone(cls, pid: int, tty: bool, start: int | None = None) -> Child:
        """A previous daemon's child that is no more: no descriptors, never signalled
        (its pid may name another process by now); `start` as its record says."""
        child = cls(pid, -1, {}, None, tty)
        child.ref = ProcessRef(pid, -1 if start is None else start)
        child.reaped = True
        return child

    def reap(self) -> int | None:
        """Raw wait status if the child has exited, else None.

        With a keeper, it hears the status before the zombie goes: a daemon
        killed in between leaves either the zombie or the keeper's note.
        """
        if self.adopted and self.keeper is not None:
            return self._reap_by_keeper(self.keeper)
        if self.keeper is not None:
            try:
                info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is not None:
                self.keeper.exited(self.key, _wait_status(info))
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.reaped = True  # by someone else
            return 0
        if pid:
            self.reaped = True
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return status if pid else None

    def _reap_by_keeper(self, keeper: Keeper) -> int | None:
        got = keeper.reap(self.key)
        if got is None:
            return None
        status, self.cpu_seconds, self.exited_at = got
        self.reaped = True
        self.exit_unknown = status is None
        return UNKNOWN_EXIT_STATUS if status is None else status

    def signal_group(self, signum: int) -> None:
        """Signal the child's process group, and the child if it left that group.

        Only while the child is unreaped: its pid, hence its group id, cannot be
        reused until then. After reaping this does nothing; descendants are then
        found and checked one by one (`proctree.kill_verified`).
        """
        if self.reaped or self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)
        with contextlib.suppress(OSError):
            if os.getpgid(self.pid) != self.pid:  # it left its group: reach it too
                signal.pidfd_send_signal(self.pidfd, signum)

    def resize(self, rows: int, cols: int) -> None:
        import fcntl
        import struct
        import termios

        if self.tty and self.stdin_fd is not None:
            winsize = struct.pack("HHHH", rows, cols, 0, 0)
            fcntl.ioctl(self.stdin_fd, termios.TIOCSWINSZ, winsize)
            self.signal_group(signal.SIGWINCH)

    def close_output(self, fd: int) -> None:
        # A PTY master is both output and stdin: close it when neither needs it.
        self.outputs.pop(fd, None)
        if fd != self.stdin_fd:
            os.close(fd)

    def close_stdin(self) -> None:
        fd, self.stdin_fd = self.stdin_fd, None
        if fd is not None and fd not in self.outputs:
            os.close(fd)
            if self.keeper is not None:  # its copy too, or the child never sees EOF
                self.keeper.close(self.key, ["stdin"])

    def close(self) -> None:
        """Release every descriptor (the child has been reaped)."""
        for fd in list(self.outputs):
            self.close_output(fd)
        self.close_stdin()
        staging, self.staging = self.staging, None
        for fd in staging or ():
            os.close(fd)
        pidfd, self.pidfd = self.pidfd, -1  # its number may soon be another descriptor
        with contextlib.suppress(OSError):
            os.close(pidfd)


def _wait_status(info: os.waitid_result) -> int:
    """A `waitid` result as the raw status `wait4` gives (os.WIFSIGNALED etc.)."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return info.si_status | (0x80 if info.si_code == os.CLD_DUMPED else 0)


def spawn(
    spec: ChildSpec, keeper: Keeper | None = None, key: str = "", meta: dict[str, Any] | None = None
) -> Child:
    """Start a child in its own session and process group (SPEC 4 child setup).

    With a keeper: our descriptors go to it before the fork (so no moment
    exists where the child runs and only we hold its pipes), its pidfd after.
    """
    ours, theirs, names = _pty(spec, keeper) if spec.tty else _pipes(spec)
    try:
        if keeper is not None:
            keeper.hold(key, meta or {}, dict(zip(names, ours, strict=True)))
        try:
            popen = subprocess.Popen(
                spec.argv,
                executable=spec.executable,
                cwd=spec.cwd,
                env=spec.env,
                stdin=theirs[0],
                stdout=theirs[1],
                stderr=theirs[2],
                start_new_session=True,
                close_fds=True,
                preexec_fn=_take_tty(spec.preexec) if spec.tty else spec.preexec,
            )
        except BaseException:
            if keeper is not None:
                keeper.release(key)
            raise
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in set(theirs):
            if fd != subprocess.DEVNULL:
                os.close(fd)
    popen.returncode = 0  # we reap it ourselves; keep Popen.__del__ quiet
    pidfd = os.pidfd_open(popen.pid)
    if keeper is not None:
        keeper.spawned(key, popen.pid, pidfd)
    by_name = dict(zip(names, ours, strict=True))
    if spec.tty:
        staging = (by_name["staging"], by_name["staging_w"]) if "staging" in by_name else None
        master = by_name["pty"]
        return Child(popen.pid, pidfd, {master: "pty"}, master, True, keeper=keeper, key=key,
                     staging=staging)  # fmt: skip
    outputs = {by_name["stdout"]: "stdout", by_name["stderr"]: "stderr"}
    return Child(popen.pid, pidfd, outputs, by_name.get("stdin"), False, keeper=keeper, key=key)


#: Output pipes hold this much (Linux default 64 KiB), so a fast writer is
#: blocked less often while the server catches up.
PIPE_SIZE = 256 * 1024


def _pipes(spec: ChildSpec) -> tuple[list[int], list[int], list[str]]:
    """Our ends, the child's stdin/stdout/stderr, and the names of ours."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    for fd in (out_w, err_w):  # the child's ends block, as a child expects
        os.set_blocking(fd, True)
    for fd in (out_r, err_r):
        _enlarge_pipe(fd)
    if not spec.pipe_stdin:
        return [out_r, err_r], [subprocess.DEVNULL, out_w, err_w], ["stdout", "stderr"]
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(in_w, False)
    return [out_r, err_r, in_w], [in_r, out_w, err_w], ["stdout", "stderr", "stdin"]


def _pty(spec: ChildSpec, keeper: Keeper | None) -> tuple[list[int], list[int], list[str]]:
    """A PTY of the requested size (and a staging pipe when a keeper holds it)."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", spec.rows, spec.cols, 0, 0))
    os.set_blocking(master, False)
    if keeper is None:
        return [master], [slave, slave, slave], ["pty"]
    staging_r, staging_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    return [master, staging_r, staging_w], [slave] * 3, ["pty", "staging", "staging_w"]


def _take_tty(preexec: Callable[[], None] | None) -> Callable[[], None]:
    """In the child, after setsid: make its stdin (the PTY slave) the controlling tty."""
    import fcntl
    import termios

    def apply() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if preexec is not None:
            preexec()

    return apply


def _enlarge_pipe(fd: int) -> None:
    import fcntl

    # Unprivileged users may be capped by /proc/sys/fs/pipe-max-size: keep the default.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def resolve_program(program: str, cwd: str, env: Mapping[str, str]) -> str:
    """The executable path for argv[0], searched in the child's PATH (SPEC 4 errors)."""
    if "/" in program:
        candidates: Iterable[str] = [os.path.join(cwd, program)]
    else:
        search = env.get("PATH", os.defpath).split(os.pathsep)
        candidates = (os.path.join(d or ".", program) for d in search)
    found_not_exec = False
    for path in candidates:
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return os.path.abspath(path)
            found_not_exec = True
    if found_not_exec:
        raise InvalidParamsError(f"program {program!r} is not executable")
    raise InvalidParamsError(f"program {program!r} not found")


def build_env(
    env: Mapping[str, str] | None,
    inherit_env: bool,
    policy: EnvPolicy | None,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The child's environment from SPEC 4's rules (`env`, `inheritEnv`, `envPolicy`)."""
    if policy is not None:
        result = _env_from_policy(policy, base)
        result.update(env or {})
        return result
    if env is None:
        return dict(base)
    if inherit_env:
        return {**base, **env}
    return dict(env)


def _env_from_policy(policy: EnvPolicy, base: Mapping[str, str]) -> dict[str, str]:
    if policy.inherit == "all":
        result = dict(base)
    elif policy.inherit == "core":
        result = {k: v for k, v in base.items() if k in _CORE_VARS or k.startswith("LC_")}
        result.update({k: base[k] for k in ("LANG", "TZ") if k in base})
    else:
        result = {}
    excludes = list(policy.exclude)
    if not policy.ignore_default_excludes:
        excludes += _DEFAULT_EXCLUDES
    if excludes:  # Codex sends a few names; skip the scan when there are none
        result = {k: v for k, v in result.items() if not _matches(k, excludes)}
    if policy.include_only:
        result = {k: v for k, v in result.items() if _matches(k, policy.include_only)}
    result.update(policy.set)
    return result


def _matches(name: str, patterns: Iterable[str]) -> bool:
    upper = name.upper()
    return any(_glob(p.upper())(upper) for p in patterns)


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> Callable[[str], bool]:
    """`fnmatchcase` against one pattern; a plain name (the usual case) without a regex."""
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    match = re.compile(fnmatch.translate(pattern)).match
    return lambda name: match(name) is not None
