"""The OS side of one child: spawn (PTY or pipes), its fds, reaping, and tree kill.

This is the one small interface the registry drives, so a later holder
process could own children across a server restart. Everything here is
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
    #: Descriptors `preexec` needs (close-on-exec: the program never sees them).
    keep_fds: tuple[int, ...] = ()


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
    #: Its identity, read while it was certainly ours (before it could be reaped).
    ref: ProcessRef = field(init=False)
    reaped: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.ref = identify(self.pid) or ProcessRef(self.pid, -1)

    def reap(self) -> int | None:
        """Raw wait status if the child has exited, else None."""
        try:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.reaped = True  # by someone else
            return 0
        if pid:
            self.reaped = True
            self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return status if pid else None

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

    def close(self) -> None:
        """Release every descriptor (the child has been reaped)."""
        for fd in list(self.outputs):
            self.close_output(fd)
        self.close_stdin()
        pidfd, self.pidfd = self.pidfd, -1  # its number may soon be another descriptor
        with contextlib.suppress(OSError):
            os.close(pidfd)


def spawn(spec: ChildSpec) -> Child:
    """Start a child in its own session and process group (SPEC 4 child setup)."""
    if spec.tty:
        return _spawn_pty(spec)
    return _spawn_pipes(spec)


def _spawn_pipes(spec: ChildSpec) -> Child:
    popen = subprocess.Popen(
        spec.argv,
        executable=spec.executable,
        cwd=spec.cwd,
        env=spec.env,
        stdin=subprocess.PIPE if spec.pipe_stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        preexec_fn=spec.preexec,
    )
    assert popen.stdout is not None and popen.stderr is not None
    out_fd, err_fd = os.dup(popen.stdout.fileno()), os.dup(popen.stderr.fileno())
    in_fd = os.dup(popen.stdin.fileno()) if popen.stdin is not None else None
    for stream in (popen.stdout, popen.stderr, popen.stdin):
        if stream is not None:
            stream.close()
    popen.returncode = 0  # we reap it ourselves; keep Popen.__del__ quiet
    for fd in (out_fd, err_fd, in_fd):
        if fd is not None:
            os.set_blocking(fd, False)
    for fd in (out_fd, err_fd):
        _enlarge_pipe(fd)
    return Child(
        pid=popen.pid,
        pidfd=os.pidfd_open(popen.pid),
        outputs={out_fd: "stdout", err_fd: "stderr"},
        stdin_fd=in_fd,
        tty=False,
    )


#: Output pipes hold this much (Linux default 64 KiB), so a fast writer is
#: blocked less often while the server catches up.
PIPE_SIZE = 256 * 1024


def _enlarge_pipe(fd: int) -> None:
    import fcntl

    # Unprivileged users may be capped by /proc/sys/fs/pipe-max-size: keep the default.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def _spawn_pty(spec: ChildSpec) -> Child:
    from ptyprocess import PtyProcess

    proc = PtyProcess.spawn(
        [spec.executable, *spec.argv[1:]],
        cwd=spec.cwd,
        env=spec.env,
        dimensions=(spec.rows, spec.cols),
        preexec_fn=spec.preexec,
        pass_fds=spec.keep_fds,  # it closes the others before `preexec`
    )
    # Our own descriptor for the PTY master: ptyprocess's file objects would close
    # theirs when collected, by then perhaps another file's number. Closed now instead.
    fd = os.dup(proc.fd)
    proc.fileobj.close()
    proc.closed = True  # nothing left for its __del__ to close or kill
    os.set_blocking(fd, False)
    return Child(
        pid=proc.pid,
        pidfd=os.pidfd_open(proc.pid),
        outputs={fd: "pty"},
        stdin_fd=fd,
        tty=True,
    )


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
