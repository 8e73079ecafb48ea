"""Start the exec daemon on demand: the first front to need it starts it, once.

`ensure_daemon` is synchronous (the CLI and the magics call it directly; the
Jupyter extension in a thread). Starters race safely: each checks the socket,
then takes `jupyter-exec-dN.start.lock` (fcntl.flock) and checks again before
starting one, so two starters get one daemon. The starter passes nothing on:
the daemon reads the user's settings itself (config.load_daemon_settings), and
each front sends its own rules with its connections (SPEC 3).
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from . import paths, sockets

#: How long a starting daemon may take to listen (imports on a slow machine).
START_TIMEOUT = 60.0


class DaemonStartError(RuntimeError):
    """The exec daemon could not be started; the message says why."""


def ensure_daemon(runtime_dir: Path) -> Path:
    """The socket of a running daemon for this runtime dir, started if there is none."""
    path = paths.socket_path(runtime_dir)
    if listening(path):
        return path
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.start_lock_path(runtime_dir), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not listening(path):
            _start(runtime_dir)
    return path


def listening(path: Path) -> bool:
    """Whether a daemon accepts connections on `path` (a bare connect, closed at once)."""
    sock = sockets.connect(path)
    if sock is None:
        return False
    sock.close()
    return True


def _start(runtime_dir: Path) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "jupyter_exec.daemon", str(runtime_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=START_TIMEOUT,
            start_new_session=True,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise DaemonStartError(
            f"the exec daemon did not start within {START_TIMEOUT:.0f} s; "
            f"see {paths.log_path(runtime_dir)}"
        ) from None
    if done.returncode != 0 or not done.stdout.startswith(b"ready"):
        why = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
        raise DaemonStartError(
            f"the exec daemon failed to start ({why[-1] if why else 'no message'}); "
            f"see {paths.log_path(runtime_dir)}"
        )
