"""A sandboxed child's own PID namespace: it sees and signals only its own processes.

``unshare(CLONE_NEWPID)`` moves only the caller's later children, and the
first of them is the namespace's init: the kernel drops every signal it has
no handler for, and when it ends the kernel kills whatever is left in the
namespace. So the forked child, the pid the registry reports, signals and
reaps ("outer", outside the namespace), forks the init ("inner", pid 1
inside), which sets up what must be done from inside (a /proc of its own,
Landlock) and forks the program (pid 2). Neither supervisor ever execs; each
runs a few syscalls in a loop with every signal it could receive blocked:

- inner reaps whatever is orphaned in the namespace; when the program ends it
  hands the program's raw wait status to outer through a pipe and exits,
  which takes every other process of the namespace with it (a terminated
  sandbox leaves no descendant behind, as under Codex's bubblewrap);
- outer waits for inner, then ends as the program did: the same exit code,
  or killed by the same signal. Until then it answers the daemon's requests
  on the network bridge's control, if any (sandbox_net.py: a socket of the
  namespace for each connection from the host to a server of the sandbox).
  The holder, the daemon and `Child.reap` see the program's status on the
  pid they always knew;
- the program stays in outer's process group, so a signal to the group
  (``process/signal``, terminate, a PTY's ^C) reaches it directly; inner
  forwards one only when the program has left the group (bash with job
  control does); outer's death by SIGKILL kills inner (``PR_SET_PDEATHSIG``),
  and so the whole namespace.

Both supervisors are forks of the daemon that close every descriptor but their
pipe at once, so no socket or pipe of the daemon lives on in them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import select
import signal
from collections.abc import Callable, Iterable

__all__ = ["BLOCKED", "SUPERVISORS", "split"]

#: What the supervisors block: every signal someone may send the group, so that
#: only the program acts on it (the synchronous faults and SIGKILL/SIGSTOP cannot be).
BLOCKED = frozenset(signal.valid_signals()) - {
    signal.SIGKILL, signal.SIGSTOP, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL,
    signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS,
}  # fmt: skip
#: Their names (``/proc/PID/comm``): the usage sampler counts no RSS of theirs (proctree.py).
SUPERVISORS = (b"sandbox-outer", b"sandbox-init")
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NAME = 1, 4, 15


def split(  # pragma: no cover - forked child (tested by behaviour: tests/core/test_pidns.py)
    inside: Callable[[], None],
    keep_outer: Iterable[int] = (),
    requests: tuple[int, Callable[[], bool]] | None = None,
) -> None:
    """In the forked child, after ``unshare(CLONE_NEWPID)``: returns only in the program.

    `inside` runs in the init before the program is forked (an exception there
    is the start's failure: the program is never forked). `keep_outer`: the
    descriptors outer keeps open while it lives (the network bridge's control).
    `requests`: a descriptor of those and what outer calls whenever it is readable
    (False: never again).
    """
    gc.disable()  # no finalizer of the daemon's objects runs in a supervisor
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)
    inner = os.fork()
    if inner:
        _libc().prctl(_PR_SET_NAME, SUPERVISORS[0], 0, 0, 0)
        _outer(inner, status_r, {status_r, *keep_outer}, requests)
    os.close(status_r)
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _disguise(libc)
    with contextlib.suppress(OSError, ValueError):  # SIG_IGN would reap the program for us
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    inside()
    program = os.fork()
    if program:
        _inner(program, status_w)
    os.close(status_w)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _outer(  # pragma: no cover - forked child
    inner: int, status_r: int, keep: set[int], requests: tuple[int, Callable[[], bool]] | None
) -> None:
    """Wait for inner, answering `requests`; end with the program's status (never returns)."""
    code = 255
    try:
        _close_all_but(keep)
        poller = select.poll()
        poller.register(status_r, select.POLLIN)
        if requests is not None:
            poller.register(requests[0], select.POLLIN)
        data, ended = b"", False
        while len(data) < 4 and not ended:
            for fd, _ in poller.poll():
                if fd == status_r:
                    chunk = os.read(status_r, 4 - len(data))
                    data, ended = data + chunk, not chunk
                elif requests is not None and not requests[1]():
                    poller.unregister(fd)
        _, status = os.waitpid(inner, 0)
        if len(data) == 4:
            status = int.from_bytes(data, "little")
        code = _end_as(status)
    finally:
        os._exit(code)


def _inner(program: int, status_w: int) -> None:  # pragma: no cover - forked child
    """Pid 1 of the namespace: reap, forward, report the program's end (never returns)."""
    try:
        _close_all_but({status_w})
        waited = BLOCKED | {signal.SIGCHLD}
        while True:
            info = signal.sigwaitinfo(waited)
            if info.si_signo != signal.SIGCHLD:
                _forward(program, info.si_signo)
                continue
            status = _reap(program)
            if status is not None:
                os.write(status_w, status.to_bytes(4, "little"))
                break
    finally:
        os._exit(0)


def _reap(program: int) -> int | None:  # pragma: no cover - forked child
    """Reap every child that ended; the program's raw status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == program:
            found = status


def _forward(program: int, signum: int) -> None:  # pragma: no cover - forked child
    """A signal for the group: the program has it too, unless it left the group."""
    with contextlib.suppress(OSError):
        if os.getpgid(program) != os.getpgid(0):
            os.kill(program, signum)


def _end_as(status: int) -> int:  # pragma: no cover - forked child
    """End this process as `status` says the program ended; the exit code if it did not die."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    signum = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # never dump the daemon's image
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    return 128 + signum


def _close_all_but(keep: set[int]) -> None:  # pragma: no cover - forked child
    """Close every descriptor except `keep`; 0, 1 and 2 become /dev/null (the program's
    output ends when the program's side lets it go, not when a supervisor does)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != null:
            os.dup2(null, fd)
    low = 3
    for fd in sorted(keep | {null}):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    if null > 2 and null not in keep:
        with contextlib.suppress(OSError):
            os.close(null)


def _disguise(libc: ctypes.CDLL) -> None:  # pragma: no cover - forked child
    """Inner is a copy of the daemon (or of a server running the registry), in the
    sandbox's view: not dumpable, so neither its memory nor its environment can be read or
    ptraced from inside (Landlock would allow it: same domain); and its command line, the
    one thing /proc shows anyone, is blanked, as is its initial environment."""
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(_PR_SET_NAME, SUPERVISORS[1], 0, 0, 0)
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()  # from field 3 (state) on
    arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    for start, end in ((arg_start, arg_end), (env_start, env_end)):
        if 0 < start < end:
            ctypes.memset(start, 0, end - start)
    name = b"sandbox-init"
    if arg_end - arg_start > len(name):
        ctypes.memmove(arg_start, name, len(name))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
