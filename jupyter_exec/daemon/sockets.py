"""The daemon's unix sockets: bind privately, connect, tell who the peer is.

One place for what the daemon socket, the handover socket and their clients
share: long paths (`paths.sun_path`), mode 0600 from the bind on, and
SO_PEERCRED. Blocking calls on plain sockets; asyncio wraps them.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from . import paths

__all__ = ["bind_private", "connect", "peer"]


def bind_private(path: Path, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking unix listener at `path`, 0600 from the start (umask before bind)."""
    address, dir_fd = paths.sun_path(path)
    listener = socket.socket(socket.AF_UNIX, kind)
    old_umask = os.umask(0o177)  # no window where others may connect
    try:
        listener.bind(address)
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
        if dir_fd is not None:
            os.close(dir_fd)
    listener.listen(64)
    listener.setblocking(False)
    return listener


def connect(
    path: Path, timeout: float | None = None, kind: int = socket.SOCK_STREAM
) -> socket.socket | None:
    """A blocking connection to `path`, or None when nobody listens there."""
    address, dir_fd = paths.sun_path(path) if path.parent.exists() else (str(path), None)
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return sock


def peer(sock: socket.socket) -> tuple[int, int]:
    """(uid, pid) of the process at the other end."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return uid, pid
