"""The holder: a tiny process that keeps the daemon's children alive across its restarts.

SPEC 3: a crash (SIGKILL) of the exec daemon, or its replacement by a newer
installed version, leaves every process running. The daemon spawns children
itself, but first hands the holder a copy of its ends of their pipes and PTYs
(SCM_RIGHTS), then a pidfd. When the daemon dies, those copies keep every pipe
open (a child blocks on a full pipe at worst, it never gets EPIPE), and the
children are re-parented here (PR_SET_CHILD_SUBREAPER), so their exit statuses
wait as zombies until a daemon asks. The next daemon attaches, gets every
descriptor back and carries on: protocol, delivery and the logs stay the
daemon's. Anchors: containerd's shim and podman's conmon (a small holder owns
the stdio and the exit status), systemd's file-descriptor store.

It is the part that outlives upgrades, so it is small, standard library only,
single-threaded, and its protocol is versioned (`HOLDER_PROTOCOL`) and stays
stable across releases: one JSON object per SOCK_SEQPACKET message, with
descriptors attached; a request carrying "id" gets one answer with that id,
the others none (in order, on one connection):

    start   {argv, env, cwd, reason} + [stdin, stdout] -> {pid}   start a daemon as our child
    attach  {scope, pid, version, reason} -> {count}, then one {held} message
            per process with its descriptors, then {end}          a daemon takes over a scope
    hold    {key, meta, names} + fds     (meta: core/record.py)   before the daemon spawns
    pid     {key, pid} + [pidfd]                                  just after it spawned
    exited  {key, status}                                         the daemon saw it exit
    close   {key, names}                                          e.g. stdin after EOF
    release {keys} | {all: true}                                  nothing more to hold
    reap    {key} -> {running} | {status, cpu, exitedAt}          for an adopted process
    status  {} -> {holder, version, pid, startedAt, held, daemons, events}

Reaping: a held process is never reaped unasked (its zombie keeps the pid,
so signalling its group stays safe); daemons we started and unknown orphans
(descendants of user processes, re-parented here) are reaped at once. With
nothing held and no daemon, the holder exits. SIGTERM stops everything: the
daemons first, then every held process (SIGTERM, then SIGKILL to its tree).
"""

from __future__ import annotations

import array
import collections
import contextlib
import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.proctree import kill_verified, marked_processes
from . import paths, sockets

#: The holder's wire protocol: bump only with a new socket name beside the old.
HOLDER_PROTOCOL = paths.HOLDER_PROTOCOL
MAX_MESSAGE = 1 << 20
#: SCM_RIGHTS carries at most 253 descriptors per message (SCM_MAX_FD).
MAX_FDS = 253
#: How long the holder waits, idle, before it exits (a starter may be on its way).
IDLE_SECONDS = 2.0
#: Grace between SIGTERM and SIGKILL when the holder stops everything.
STOP_GRACE_SECONDS = 3.0
_PR_SET_CHILD_SUBREAPER = 36


# -- the wire (shared with daemon/holding.py) -----------------------------------------


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its descriptors (close-on-exec); None at end of file."""
    fds = array.array("i")
    data, ancdata, flags, _ = sock.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None, list(fds)
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if not isinstance(message, dict) or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        message = {"op": "?"}  # answered as an unknown op, its descriptors closed
    return message, list(fds)


def wait_status(info: os.waitid_result) -> int:
    """A `waitid` result as the raw status `wait4` would give (os.WIFSIGNALED etc.)."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return info.si_status | (0x80 if info.si_code == os.CLD_DUMPED else 0)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the holder ---------------------------------------------------------------------


@dataclass
class Held:
    """One process: the daemon's descriptors of it, and its exit once known."""

    key: str
    scope: str
    meta: dict[str, Any]
    fds: dict[str, int]
    pid: int | None = None
    pidfd: int | None = None
    status: int | None = None
    cpu: float = 0.0
    exited_at: int | None = None

    def close(self, names: Sequence[str] | None = None) -> None:
        for name in list(self.fds) if names is None else names:
            fd = self.fds.pop(name, None)
            if fd is not None:
                os.close(fd)
        if names is None and self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@dataclass
class Conn:
    sock: socket.socket
    peer_pid: int
    scope: str | None = None


@dataclass
class Started:
    """A daemon this holder started (its child)."""

    proc: subprocess.Popen[bytes]
    started_at: int
    reason: str
    version: str = ""
    scope: str = ""


@dataclass
class Holder:
    runtime_dir: Path
    listener: socket.socket = field(init=False)
    poller: select.poll = field(default_factory=select.poll)
    conns: dict[int, Conn] = field(default_factory=dict)
    owners: dict[str, Conn] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)
    daemons: dict[int, Started] = field(default_factory=dict)
    events: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    started_at: int = field(default_factory=now_ms)
    stopping: bool = False
    _pidfds: dict[int, Held] = field(default_factory=dict)
    _wakeup: int = -1
    _lock: Any = None

    def note(self, text: str) -> None:
        """An event for the holder's log and `status` (why a daemon came or went)."""
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        self.events.append(line)
        print(line, flush=True)

    # -- the loop ----------------------------------------------------------------

    def serve(self, ready: int) -> None:
        path = paths.holder_socket_path(self.runtime_dir)
        path.unlink(missing_ok=True)  # we hold the life lock: a socket left here is stale
        self.listener = sockets.bind_private(path, socket.SOCK_SEQPACKET)
        self.poller.register(self.listener, select.POLLIN)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self._wakeup = wake_r
        self.poller.register(wake_r, select.POLLIN)
        self.note(f"holder {os.getpid()} (version {__version__}) listening")
        os.write(ready, b"ready\n")
        os.close(ready)
        idle_since: float | None = None
        while True:
            events = self.poller.poll(1000)
            # Messages first: a dead daemon's last `pid` must land before we reap.
            for fd, _ in sorted(events, key=lambda e: e[0] not in self.conns):
                self._dispatch(fd)
            self._reap_unknown()
            if self.stopping:
                self._stop_everything()
                return
            if self.held or self.daemons or self.owners:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= IDLE_SECONDS and self._may_exit():
                self.note("nothing held and no daemon: exiting")
                return

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.stopping = True

    def _dispatch(self, fd: int) -> None:
        if fd == self.listener.fileno():
            with contextlib.suppress(BlockingIOError):
                sock, _ = self.listener.accept()
                uid, pid = sockets.peer(sock)
                if uid != os.getuid():
                    self.note("refused a connection from another user")
                    sock.close()
                    return
                sock.settimeout(10)  # a peer that stops reading cannot hang us
                self.conns[sock.fileno()] = Conn(sock, pid)
                self.poller.register(sock, select.POLLIN)
        elif fd == self._wakeup:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
        elif fd in self.conns:
            self._read_all(self.conns[fd])
        elif fd in self._pidfds:
            entry = self._pidfds.pop(fd)
            self.poller.unregister(fd)  # it stays readable from now on
            if entry.exited_at is None:
                entry.exited_at = now_ms()

    def _read_all(self, conn: Conn) -> None:
        """Every message waiting on `conn` (a dead daemon's last ones, then its EOF)."""
        while self._read(conn) and select.select([conn.sock], [], [], 0)[0]:
            pass

    def _read(self, conn: Conn) -> bool:
        """Handle one message; False once the peer is gone."""
        try:
            message, fds = receive(conn.sock)
        except OSError:
            message, fds = None, []
        try:
            if message is None:
                self._drop(conn)
                return False
            try:
                answer = self._handle(conn, message, fds)
            except (KeyError, TypeError, ValueError, OSError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            if "id" in message and answer is not None:
                with contextlib.suppress(OSError):
                    send(conn.sock, {"id": message["id"], **answer})
            return True
        finally:
            for fd in fds:  # what no handler took
                os.close(fd)

    def _drop(self, conn: Conn) -> None:
        self.poller.unregister(conn.sock)
        del self.conns[conn.sock.fileno()]
        if conn.scope is not None and self.owners.get(conn.scope) is conn:
            del self.owners[conn.scope]
            self.note(f"daemon {conn.peer_pid} let go of {conn.scope}")
        conn.sock.close()

    # -- requests ----------------------------------------------------------------

    def _handle(self, conn: Conn, message: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        """One request; a handler that keeps descriptors takes them out of `fds`."""
        op = message.get("op")
        if op == "hold":
            self._hold(conn, message, fds)
            return None
        expected = {"start": 2, "pid": 1}.get(str(op), 0)
        if len(fds) != expected:
            raise ValueError(f"{op} takes {expected} descriptors, not {len(fds)}")
        if op == "pid":
            entry = self.held[message["key"]]
            entry.pid, entry.pidfd = int(message["pid"]), fds.pop()
            self._pidfds[entry.pidfd] = entry
            self.poller.register(entry.pidfd, select.POLLIN)
        elif op == "exited":
            entry = self.held[message["key"]]
            entry.status = int(message["status"])
            entry.exited_at = entry.exited_at or now_ms()
        elif op == "close":
            self.held[message["key"]].close(message["names"])
        elif op == "release":
            self._release(conn, message)
        elif op == "start":
            return self._start(message, fds)
        elif op == "attach":
            return self._attach(conn, message)
        elif op == "reap":
            return self._reap(self.held[message["key"]])
        elif op == "status":
            return self._status()
        else:
            return {"error": f"unknown op {op!r} (holder protocol {HOLDER_PROTOCOL})"}
        return {"ok": True}

    def _hold(self, conn: Conn, message: dict[str, Any], fds: list[int]) -> None:
        names = [str(n) for n in message["names"]]
        key = str(message["key"])
        if conn.scope is None or len(names) != len(fds) or key in self.held:
            raise ValueError("hold: attach first, one name per descriptor, a new key")
        by_name = dict(zip(names, fds, strict=True))
        self.held[key] = Held(key, conn.scope, dict(message["meta"]), by_name)
        fds.clear()

    def _release(self, conn: Conn, message: dict[str, Any]) -> None:
        if message.get("all"):
            keys = [k for k, e in self.held.items() if e.scope == conn.scope]
        else:
            keys = [str(k) for k in message["keys"]]
        for key in keys:
            entry = self.held.pop(key, None)
            if entry is None:
                continue
            if entry.pidfd is not None:
                self._pidfds.pop(entry.pidfd, None)
                with contextlib.suppress(KeyError):
                    self.poller.unregister(entry.pidfd)
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitid(os.P_PIDFD, entry.pidfd, os.WEXITED | os.WNOHANG)  # our zombie
            entry.close()

    def _start(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        """Start a daemon as our child; the starter gave its stdin and stdout."""
        proc = subprocess.Popen(
            [str(a) for a in message["argv"]],
            stdin=fds[0],
            stdout=fds[1],
            stderr=subprocess.DEVNULL,
            env={str(k): str(v) for k, v in message["env"].items()},
            cwd=message.get("cwd") or None,
            start_new_session=True,
            close_fds=True,
        )
        reason = str(message.get("reason") or "")
        self.daemons[proc.pid] = Started(proc, now_ms(), reason)
        self.note(f"started daemon {proc.pid}: {reason}")
        return {"pid": proc.pid}

    def _attach(self, conn: Conn, message: dict[str, Any]) -> dict[str, Any] | None:
        scope = str(message["scope"])
        owner = self.owners.get(scope)
        # The previous daemon may have died a moment ago: read what it left first.
        if owner is not None and select.select([owner.sock], [], [], 0)[0]:
            self._read_all(owner)
        if scope in self.owners:
            return {"error": f"{scope} is held by daemon {self.owners[scope].peer_pid}"}
        conn.scope = scope
        self.owners[scope] = conn
        started = self.daemons.get(conn.peer_pid)
        if started is not None:
            started.version, started.scope = str(message.get("version", "")), scope
        entries = [e for e in self.held.values() if e.scope == scope]
        self.note(
            f"daemon {conn.peer_pid} (version {message.get('version')}) took over {scope} "
            f"with {len(entries)} processes"
        )
        send(conn.sock, {"id": message.get("id"), "count": len(entries)})
        for entry in entries:
            names = list(entry.fds) + (["pidfd"] if entry.pidfd is not None else [])
            fds = list(entry.fds.values()) + ([entry.pidfd] if entry.pidfd is not None else [])
            send(conn.sock, {"held": self._describe(entry), "names": names}, fds)
        send(conn.sock, {"end": True})
        return None

    @staticmethod
    def _describe(entry: Held) -> dict[str, Any]:
        return {
            "key": entry.key,
            "meta": entry.meta,
            "pid": entry.pid,
            "status": entry.status,
            "cpu": entry.cpu,
            "exitedAt": entry.exited_at,
        }

    def _reap(self, entry: Held) -> dict[str, Any]:
        """The exit of a process whose daemon died: from the daemon's word, or our zombie."""
        if entry.status is None and entry.pidfd is not None:
            try:
                info = os.waitid(os.P_PIDFD, entry.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # not ours and its exit never told: unknown
                info = None
                entry.exited_at = entry.exited_at or now_ms()
                return {"status": None, "exitedAt": entry.exited_at}
            if info is None:
                return {"running": True}
            entry.cpu = _cpu_seconds(entry.pid)  # a zombie keeps its counters until reaped
            entry.status = wait_status(info)
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PIDFD, entry.pidfd, os.WEXITED | os.WNOHANG)
            entry.exited_at = entry.exited_at or now_ms()
        return {"status": entry.status, "cpu": entry.cpu, "exitedAt": entry.exited_at}

    def _status(self) -> dict[str, Any]:
        scopes = collections.Counter(e.scope for e in self.held.values())
        return {
            "holder": HOLDER_PROTOCOL,
            "version": __version__,
            "pid": os.getpid(),
            "startedAt": self.started_at,
            "held": dict(scopes),
            "daemons": [
                {
                    "pid": pid,
                    "startedAt": d.started_at,
                    "reason": d.reason,
                    "version": d.version,
                    "scope": d.scope,
                }
                for pid, d in self.daemons.items()
            ],
            "events": list(self.events),
        }

    # -- children ----------------------------------------------------------------

    def _reap_unknown(self) -> None:
        """Reap our daemons and any orphan that is not a held process, at once."""
        for pid, started in list(self.daemons.items()):
            code = started.proc.poll()
            if code is not None:
                del self.daemons[pid]
                self.note(f"daemon {pid} exited ({code})")
        held = {e.pid for e in self.held.values()}
        for pid in _children():
            if pid not in held and pid not in self.daemons:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def _may_exit(self) -> bool:
        """Exit only while no starter is about to use us (they hold the start lock)."""
        lock = open(paths.holder_start_lock_path(self.runtime_dir), "a")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return False
        paths.holder_socket_path(self.runtime_dir).unlink(missing_ok=True)
        self.listener.close()
        self._lock = lock  # released when we exit
        return True

    def _stop_everything(self) -> None:
        """SIGTERM: daemons go first (they leave processes to us), then every process."""
        self.note("stopping: every daemon and every held process")
        paths.holder_socket_path(self.runtime_dir).unlink(missing_ok=True)
        for started in self.daemons.values():
            started.proc.terminate()
        for started in self.daemons.values():
            try:
                started.proc.wait(STOP_GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                started.proc.kill()
        for conn in list(self.conns.values()):  # what the daemons told us last
            if select.select([conn.sock], [], [], 0)[0]:
                self._read_all(conn)
        markers = [str(e.meta.get("marker", "")) for e in self.held.values()]
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for entry in self.held.values():
                if entry.pid and entry.pidfd is not None and entry.status is None:
                    with contextlib.suppress(OSError):  # safe: its zombie keeps the pid
                        os.killpg(entry.pid, signum)
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(entry.pidfd, signum)
            for marker in filter(None, markers):
                with contextlib.suppress(OSError):
                    kill_verified(marked_processes(marker), signum)
            deadline = time.monotonic() + (STOP_GRACE_SECONDS if signum == signal.SIGTERM else 5)
            while time.monotonic() < deadline and any(map(_alive_marked, markers)):
                time.sleep(0.05)
        for entry in list(self.held.values()):
            entry.close()
        self.held.clear()


def _alive_marked(marker: str) -> bool:
    with contextlib.suppress(OSError):
        return bool(marker) and bool(marked_processes(marker))
    return False


def _children() -> list[int]:
    """Our children, zombies included (/proc's `children` list of our one thread)."""
    me = os.getpid()
    try:
        text = Path(f"/proc/{me}/task/{me}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cpu_seconds(pid: int | None) -> float:
    """utime + stime + the reaped children's, as `wait4`'s rusage counts them."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    """Five descriptors a process: lift the soft limit as the registry does."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def detach_stdio(log_file: Path) -> None:
    """stdin from /dev/null, stdout and stderr to `log_file` (appended): holder and daemon."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for target, source in ((0, null), (1, out), (2, out)):
        os.dup2(source, target)
    os.close(null)
    os.close(out)


def main(argv: list[str]) -> int:
    """`python -m jupyter_exec.daemon.holder RUNTIME_DIR`: fork away, then serve.

    The starter's child prints the holder's first word ("ready" or an error)
    and exits, so the holder is nobody's child and in a session of its own.
    """
    runtime_dir = Path(argv[0]).resolve()
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as f:
            word = f.read()
        sys.stdout.buffer.write(word)
        return 0 if word.startswith(b"ready") else 1
    os.close(read_end)
    os.setsid()
    detach_stdio(paths.holder_log_path(runtime_dir))
    with open(paths.holder_lock_path(runtime_dir), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a holder still exiting finishes first
            _become_subreaper()
            _raise_fd_limit()
            Holder(runtime_dir).serve(write_end)
        except Exception as exc:
            with contextlib.suppress(OSError):
                os.write(write_end, f"error: {exc}\n".encode())
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
