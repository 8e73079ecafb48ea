"""Control of a running exec daemon from outside: one call, a stop, a shutdown.

Two ways to make a daemon go, named for what happens to its processes:

- `stop_daemon_keeping_processes` sends `daemon/stop`: the daemon exits and
  its processes stay with the holder for the next daemon (an upgrade,
  `jupyter exec daemon stop|restart`).
- `shutdown_daemon_and_processes` sends `daemon/shutdown`: every process
  ends, then the daemon (`jupyter exec shutdown`, `POST api/exec/shutdown`,
  a server stopping with `stop_processes_on_shutdown`).

Both go through `call_daemon`, the one place that writes the exchange
(daemon/server.py): the hello line, `initialize`, `initialized`, one request.
Blocking, on a plain socket: the starter runs with no event loop, async
callers wrap it in `asyncio.to_thread`. The hello carries no front's rules:
these calls start no process. `client/` (an `ExecClient` over the socket)
imports this package, so nothing here imports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..wire.errors import ConnectionLostError, DaemonHandshakeError
from . import paths, sockets

__all__ = [
    "STOP_TIMEOUT",
    "call_daemon",
    "listening",
    "shutdown_daemon_and_processes",
    "stop_daemon_keeping_processes",
]

#: How long a daemon asked to stop or shut down may take to let go.
STOP_TIMEOUT = 60.0
_REQUEST_ID = 2


def call_daemon(
    path: Path,
    method: str,
    params: Any,
    *,
    allowed_actions: Iterable[str] | None = None,
    timeout: float = STOP_TIMEOUT,
    until_closed: bool = False,
    client_name: str = "jupyter-exec-control",
) -> dict[str, Any] | None:
    """The daemon's response (the whole JSON-RPC message) to one call of `method`;
    None when no daemon listens at `path`.

    `until_closed`: after a result, return only once the daemon closed the
    connection too (a stop or a shutdown: it closes every connection, ours
    last); it may close before its answer reaches us, then the answer is an
    empty dict. Raises DaemonHandshakeError if the daemon refused the hello,
    ConnectionLostError if it closed before answering (not `until_closed`),
    TimeoutError after `timeout` s of silence, OSError or ValueError if the
    exchange broke.
    """
    sock = sockets.connect(path, timeout)
    if sock is None:
        return None
    hello = {
        "jupyterExecDaemon": paths.daemon_protocol(),
        "allowedActions": None if allowed_actions is None else sorted(allowed_actions),
    }
    messages: list[dict[str, Any]] = [
        hello,
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"clientName": client_name}},
        {"jsonrpc": "2.0", "method": "initialized"},
        {"jsonrpc": "2.0", "id": _REQUEST_ID, "method": method, "params": params},
    ]
    with sock, sock.makefile("rb") as lines:
        sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
        greeting = json.loads(lines.readline() or b"null")
        if not isinstance(greeting, dict):
            raise DaemonHandshakeError(f"the exec daemon at {path} closed the connection")
        if "error" in greeting:
            raise DaemonHandshakeError(str(greeting["error"]))
        for line in lines:
            message = json.loads(line)
            if isinstance(message, dict) and message.get("id") == _REQUEST_ID:
                if until_closed and "result" in message:
                    lines.read()  # until it closes on us
                return message
    if until_closed:
        return {}
    raise ConnectionLostError(f"the exec daemon at {path} closed before answering {method}")


def listening(path: Path) -> bool:
    """Whether a daemon accepts connections on `path` (a bare connect, closed at once)."""
    sock = sockets.connect(path)
    if sock is None:
        return False
    sock.close()
    return True


def stop_daemon_keeping_processes(path: Path, reason: str, timeout: float = STOP_TIMEOUT) -> bool:
    """`daemon/stop` (`reason` goes to its log): the daemon goes, its processes stay
    with the holder. True once it closed on us and stopped listening (or is still
    letting go after `timeout`); False if none was running or it refused."""
    if not _call_until_closed(path, "daemon/stop", {"reason": reason}, timeout):
        return False
    deadline = time.monotonic() + timeout
    while listening(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True


def shutdown_daemon_and_processes(path: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """`daemon/shutdown`: every process ends, then the daemon. True once it closed on
    us (its processes are gone by then; or it is still ending them after `timeout`);
    False if none was running or it refused."""
    return _call_until_closed(path, "daemon/shutdown", {}, timeout)


def _call_until_closed(path: Path, method: str, params: Any, timeout: float) -> bool:
    try:
        answer = call_daemon(path, method, params, timeout=timeout, until_closed=True)
    except TimeoutError:
        return True  # asked, and still letting go
    except (OSError, ValueError, DaemonHandshakeError):
        return False
    return answer is not None and "error" not in answer
