"""Names of a daemon's files in the Jupyter runtime directory, versioned by protocol.

A front speaking daemon protocol N uses only `jupyter-exec-dN.*`: a newer
package meeting an older daemon starts its own beside it and leaves the old
one to finish its processes (docs/daemon.md "Upgrades"). The holder, which
outlives daemons of every protocol, has its own `jupyter-exec-holderN.*`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DAEMON_PROTOCOL",
    "HOLDER_PROTOCOL",
    "PROTOCOL_ENV",
    "VERSION_ENV",
    "daemon_protocol",
    "daemon_version",
    "handover_path",
    "holder_lock_path",
    "holder_log_path",
    "holder_socket_path",
    "holder_start_lock_path",
    "lock_path",
    "log_path",
    "record_path",
    "socket_path",
    "state_dir",
    "sun_path",
]


#: The front <-> daemon protocol: the relay hello and the JSON-RPC behind it.
DAEMON_PROTOCOL = 1
#: Test-only override of `DAEMON_PROTOCOL` (the upgrade test starts an "older" daemon).
PROTOCOL_ENV = "JUPYTER_EXEC_DAEMON_PROTOCOL"
#: Test-only override of the version a daemon reports (the upgrade test starts an "older" one).
VERSION_ENV = "JUPYTER_EXEC_DAEMON_VERSION"
#: The holder's protocol (daemon/holder.py): its files are named by it.
HOLDER_PROTOCOL = 1
#: A unix socket path must fit in sun_path (108 bytes with its NUL).
_SUN_PATH_MAX = 107


def daemon_protocol() -> int:
    override = os.environ.get(PROTOCOL_ENV, "")
    return int(override) if override.isdigit() else DAEMON_PROTOCOL


def daemon_version() -> str:
    """The version a daemon of this package reports (upgrades compare it)."""
    from .._version import __version__

    return os.environ.get(VERSION_ENV) or __version__


def _name(runtime_dir: Path, suffix: str, protocol: int | None) -> Path:
    n = daemon_protocol() if protocol is None else protocol
    return runtime_dir / f"jupyter-exec-d{n}{suffix}"


def socket_path(runtime_dir: Path, protocol: int | None = None) -> Path:
    return _name(runtime_dir, ".sock", protocol)


def handover_path(runtime_dir: Path, protocol: int | None = None) -> Path:
    """Where the Jupyter extension hands client websockets over (daemon/handover.py)."""
    return _name(runtime_dir, ".handover.sock", protocol)


def lock_path(runtime_dir: Path, protocol: int | None = None) -> Path:
    """Held by the daemon for its whole life: one daemon per name, ever."""
    return _name(runtime_dir, ".lock", protocol)


def record_path(runtime_dir: Path, protocol: int | None = None) -> Path:
    """`{"pid", "version", "protocol", "socket"}` of the running daemon."""
    return _name(runtime_dir, ".json", protocol)


def log_path(runtime_dir: Path, protocol: int | None = None) -> Path:
    """The daemon's own stdout/stderr."""
    return _name(runtime_dir, ".log", protocol)


def state_dir(runtime_dir: Path, protocol: int | None = None) -> Path:
    """Output logs (`logs/`) and per-process records (`procs/`), kept across a crash."""
    return _name(runtime_dir, "", protocol)


def holder_socket_path(runtime_dir: Path) -> Path:
    """The holder's socket (SOCK_SEQPACKET, 0600): daemons and starters talk to it there."""
    return runtime_dir / f"jupyter-exec-holder{HOLDER_PROTOCOL}.sock"


def holder_lock_path(runtime_dir: Path) -> Path:
    """Held by the holder for its whole life: one holder per runtime dir."""
    return runtime_dir / f"jupyter-exec-holder{HOLDER_PROTOCOL}.lock"


def holder_start_lock_path(runtime_dir: Path) -> Path:
    """Held by a starter while it starts a holder or a daemon, and by a holder as it exits."""
    return runtime_dir / f"jupyter-exec-holder{HOLDER_PROTOCOL}.start.lock"


def holder_log_path(runtime_dir: Path) -> Path:
    """The holder's own log: which daemons it started, and why."""
    return runtime_dir / f"jupyter-exec-holder{HOLDER_PROTOCOL}.log"


def sun_path(path: Path) -> tuple[str, int | None]:
    """A path short enough for bind/connect, and a descriptor to close afterwards.

    Long runtime directories (pytest's tmp paths) go through `/proc/self/fd`.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return str(path), None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}", fd
