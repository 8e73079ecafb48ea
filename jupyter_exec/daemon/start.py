"""Start the exec daemon on demand, through the holder; replace an older one.

`ensure_daemon` is synchronous (the magics call it directly, through
`client.discovery.user_daemon`; the CLI, `jupyter-exec mcp` and the Jupyter
extension in a thread). Every front calls it when it finds no server (SPEC 3
"Every front"), so it also says, as a DaemonStartError, why no daemon can
run. Starters race safely: each checks the socket, then takes
`jupyter-exec-holderN.start.lock` (fcntl.flock) and checks again before
starting one, so two starters get one daemon. The daemon is started
by the holder (daemon/holder.py), started first if none runs, so that the
daemon's children are re-parented to the holder if it dies.

Upgrades: a daemon whose recorded version is older than this package's, and
which has a holder, is asked to stop (`control.stop_daemon_keeping_processes`); a new
one of this version takes its processes over from the holder. A daemon from
before the holder cannot hand its processes over: it serves as it is while
any of them runs, and is replaced once none does (docs/daemon.md "Upgrades").
The starter passes nothing on: the daemon reads the user's settings itself
(config.load_daemon_settings), and each front sends its own rules with its
connections (SPEC 3).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..wire.errors import JupyterExecError
from . import holder, paths, sockets
from .control import STOP_TIMEOUT, call_daemon, listening, stop_daemon_keeping_processes

__all__ = [
    "START_TIMEOUT",
    "DaemonStartError",
    "ensure_daemon",
    "holder_request",
    "outdated",
    "restart_daemon",
    "version_key",
]


#: How long a starting daemon may take to listen (imports on a slow machine).
START_TIMEOUT = 60.0


class DaemonStartError(JupyterExecError, RuntimeError):
    """The exec daemon could not be started; the message says why."""


def ensure_daemon(runtime_dir: Path) -> Path:
    """The socket of a running daemon for this runtime dir, started if there is none.

    Raises DaemonStartError saying why none can run, an unusable runtime dir
    included (the fronts then fall back to an in-process registry and say so).
    """
    path = paths.socket_path(runtime_dir)
    if listening(path) and outdated(runtime_dir) is None:
        return path
    try:
        runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(paths.holder_start_lock_path(runtime_dir), "a")  # noqa: SIM115
    except OSError as exc:
        raise DaemonStartError(
            f"cannot use the runtime dir {runtime_dir}: {exc.strerror or exc}"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = "first use"
        if listening(path):
            old = outdated(runtime_dir)
            if old is None:
                return path
            reason = (
                f"replaces daemon {old['pid']} (version {old['version']}): "
                f"version {paths.daemon_version()} is installed"
            )
            if old.get("holder"):
                stop_daemon_keeping_processes(path, reason)
            else:
                reason += "; it was from before the holder and ran nothing any more"
                _end_preholder(int(old["pid"]), runtime_dir)
        _start(runtime_dir, reason)
    return path


def restart_daemon(runtime_dir: Path, reason: str) -> Path:
    """Stop the daemon (its processes stay with the holder) and start one of this version."""
    path = paths.socket_path(runtime_dir)
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.holder_start_lock_path(runtime_dir), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if listening(path):
            stop_daemon_keeping_processes(path, reason)
        _start(runtime_dir, reason)
    return path


def outdated(runtime_dir: Path) -> dict[str, Any] | None:
    """The running daemon's record if it is older than this package and can hand over."""
    try:
        record = json.loads(paths.record_path(runtime_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "pid" not in record:
        return None
    if "holder" not in record:  # from before the holder: replaced once it runs nothing
        return None if _runs_anything(paths.socket_path(runtime_dir)) else record
    theirs = version_key(str(record.get("version", "")))
    return record if record["holder"] and theirs < version_key(paths.daemon_version()) else None


def _runs_anything(path: Path) -> bool:
    """Whether the daemon at `path` lists a running process (True if it cannot tell)."""
    try:
        answer = call_daemon(path, "process/list", {}, allowed_actions=["read"], timeout=10)
        if answer is None:
            return True
        return any(p.get("state") == "running" for p in answer["result"]["processes"])
    except (OSError, ValueError, KeyError, TypeError, JupyterExecError):
        return True


def _end_preholder(pid: int, runtime_dir: Path) -> None:
    """SIGKILL a daemon from before the holder that runs nothing: its guardian keeps its
    logs and records (SIGTERM would delete them), so the next daemon lists them."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"jupyter_exec.daemon" not in cmdline or os.fsencode(runtime_dir) not in cmdline:
        return  # not that daemon any more
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    while listening(paths.socket_path(runtime_dir)) and time.monotonic() < deadline:
        time.sleep(0.02)


def version_key(version: str) -> tuple[int, ...]:
    """ "0.2.1" -> (0, 2, 1): the release numbers, enough to order our own versions."""
    release = re.match(r"[\d.]*", version)
    return tuple(int(n) for n in (release.group() if release else "").split(".") if n)


def holder_request(runtime_dir: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    """One request to the holder, None if none runs (`daemon status`)."""
    sock = sockets.connect(paths.holder_socket_path(runtime_dir), 10, socket.SOCK_SEQPACKET)
    if sock is None:
        return None
    with sock:
        holder.send(sock, {**message, "id": 1})
        answer, fds = holder.receive(sock)
    for fd in fds:
        os.close(fd)
    return answer


def _start(runtime_dir: Path, reason: str) -> None:
    """Ask the holder (started if needed) to start a daemon; wait for its "ready"."""
    sock = _holder(runtime_dir)
    stdin_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    try:
        request = {
            "op": "start",
            "id": 1,
            "argv": [sys.executable, "-m", "jupyter_exec.daemon", str(runtime_dir)],
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "reason": reason,
        }
        with sock:
            holder.send(sock, request, [stdin_r, ready_w])
            os.close(stdin_r)
            os.close(ready_w)
            answer, fds = holder.receive(sock)
        for fd in fds:
            os.close(fd)
        if answer is None or "error" in answer:
            raise DaemonStartError(f"the holder could not start a daemon: {answer}")
        word = _read_word(ready_r, runtime_dir)
    finally:
        os.close(ready_r)
    if not word.startswith(b"ready"):
        why = word.decode(errors="replace").strip() or "no message"
        raise DaemonStartError(
            f"the exec daemon failed to start ({why}); see {paths.log_path(runtime_dir)}"
        )


def _read_word(fd: int, runtime_dir: Path) -> bytes:
    """The daemon's first line (or all it wrote before closing), within START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    word = b""
    while b"\n" not in word:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise DaemonStartError(
                f"the exec daemon did not start within {START_TIMEOUT:.0f} s; "
                f"see {paths.log_path(runtime_dir)}"
            )
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        word += chunk
    return word


def _holder(runtime_dir: Path) -> socket.socket:
    """A connection to the holder of this runtime dir, started first if none runs."""
    path = paths.holder_socket_path(runtime_dir)
    sock = sockets.connect(path, START_TIMEOUT, socket.SOCK_SEQPACKET)
    if sock is not None:
        return sock
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jupyter_exec.daemon.holder", str(runtime_dir)],
            capture_output=True,
            timeout=START_TIMEOUT,
            start_new_session=True,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise DaemonStartError(f"the holder did not start within {START_TIMEOUT:.0f} s") from None
    sock = sockets.connect(path, START_TIMEOUT, socket.SOCK_SEQPACKET)
    if done.returncode != 0 or sock is None:
        why = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
        raise DaemonStartError(
            f"the holder failed to start ({why[-1] if why else 'no message'}); "
            f"see {paths.holder_log_path(runtime_dir)}"
        )
    return sock
