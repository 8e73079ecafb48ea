"""Where the processes live: finding the exec server for the magics and the CLI.

Order (the magics and the CLI agree on it):

1. an explicit URL (``%exec_connect URL``, ``--url``) or ``JUPYTER_EXEC_URL``,
   with ``--token`` / ``JUPYTER_EXEC_TOKEN`` (or the token of the running
   Jupyter server at that URL, when there is one);
2. the Jupyter server that launched this kernel: kernels get
   ``JPY_PARENT_PID`` (the server's pid), and every running Jupyter server
   writes a ``jpserver-PID.json`` record (url, base_url, token) to Jupyter's
   runtime directory; a Jupyter terminal gets ``JUPYTER_SERVER_URL`` instead;
3. for the CLI only (``any_server=True``): a standalone ``jupyter-exec serve``
   that left a ``jpexec-PID.json`` record, else the running Jupyter server whose
   root directory contains the current directory, else the newest one;
4. nothing (``None``). Then the processes live in the user's exec daemon
   (SPEC 3 "Every front"), which outlives whatever started it:
   ``user_daemon`` joins the running one (``find_daemon``: its socket in the
   runtime directory) or starts one. Its fronts (the magics of a kernel that
   no Jupyter server launched, the CLI, ``jupyter-exec mcp``) talk to it
   under the rules of a shell: their cwd, their environment. Only when it
   cannot run (an unusable runtime directory...) does a front embed a
   registry, and say why.

Only files are read here (no jupyter_server import, no network), so discovery
is cheap and testable with a temporary runtime directory; ``user_daemon``
alone may start processes (the holder and the daemon).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import jupyter_runtime_dir

__all__ = [
    "ServerTarget",
    "find_daemon",
    "find_server",
    "jupyter_runtime_dir",
    "running_servers",
    "server_url",
    "user_daemon",
]

URL_ENV = "JUPYTER_EXEC_URL"
TOKEN_ENV = "JUPYTER_EXEC_TOKEN"


@dataclass(frozen=True)
class ServerTarget:
    """A server to connect to: an ``http(s)://`` Jupyter URL or a ``ws(s)://`` one."""

    url: str
    token: str | None
    #: "explicit", "environment", "kernel-parent", "terminal", "standalone", "running", "daemon"
    source: str
    pid: int | None = None

    @property
    def explicit(self) -> bool:
        """Named by the user (``--url``, ``$JUPYTER_EXEC_URL``): failing to reach it is an
        error. A found one that does not answer our API (a Jupyter server without this
        extension, a stale record) leaves a front to the user's exec daemon instead."""
        return self.source in ("explicit", "environment")

    def describe(self) -> str:
        how = {
            "explicit": "given explicitly",
            "environment": f"from ${URL_ENV}",
            "kernel-parent": "the Jupyter server running this kernel",
            "terminal": "the Jupyter server running this terminal",
            "standalone": "a running jupyter-exec server",
            "running": "a running Jupyter server",
            "daemon": "this user's exec daemon: processes outlive this front",
        }.get(self.source, self.source)
        return f"{self.url} ({how})"


def find_daemon(
    environ: Mapping[str, str] | None = None, runtime_dir: Path | None = None
) -> Path | None:
    """The socket of this user's running exec daemon (this package's protocol), if any."""
    from ..daemon import paths

    environ = os.environ if environ is None else environ
    directory = jupyter_runtime_dir(environ) if runtime_dir is None else runtime_dir
    try:
        record = json.loads(paths.record_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = record.get("pid") if isinstance(record, dict) else None
    sock = paths.socket_path(directory)
    return sock if isinstance(pid, int) and _pid_alive(pid) and sock.exists() else None


def user_daemon(runtime_dir: Path | None = None) -> Path:
    """The socket of this user's exec daemon: the running one, else one started now.

    Raises ``DaemonStartError`` (jupyter_exec.daemon.start) saying why none can
    run: an unusable runtime directory, a daemon that failed to start.
    """
    from ..daemon.start import ensure_daemon

    return ensure_daemon(jupyter_runtime_dir() if runtime_dir is None else runtime_dir)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _records(directory: Path, prefix: str) -> list[tuple[float, dict[str, Any]]]:
    """(mtime, record) of every live ``PREFIX-*.json`` record, newest first."""
    found: list[tuple[float, dict[str, Any]]] = []
    try:
        paths = list(directory.glob(f"{prefix}-*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue  # being written, or removed under us
        pid = record.get("pid") if isinstance(record, dict) else None
        if isinstance(pid, int) and _pid_alive(pid):
            found.append((mtime, record))
    found.sort(key=lambda item: item[0], reverse=True)
    return found


def running_servers(runtime_dir: Path | None = None) -> list[dict[str, Any]]:
    """Records of the running Jupyter servers (``jpserver-*.json``), newest first."""
    directory = jupyter_runtime_dir() if runtime_dir is None else runtime_dir
    return [record for _, record in _records(directory, "jpserver")]


def server_url(record: Mapping[str, Any]) -> str:
    """The http(s) URL (with base_url, ending in ``/``) to reach a server record from here."""
    scheme = "https" if record.get("secure") else "http"
    host = str(record.get("hostname") or "localhost")
    if host in ("0.0.0.0", "*", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    base_url = str(record.get("base_url") or "/")
    if not base_url.endswith("/"):
        base_url += "/"
    if not base_url.startswith("/"):
        base_url = "/" + base_url
    return f"{scheme}://{host}:{record.get('port')}{base_url}"


def _record_token(record: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    token = record.get("token")
    if isinstance(token, str) and token:
        return token
    # Under JupyterHub the single-user server authenticates kernels' requests
    # with the hub token it hands them.
    return environ.get("JUPYTERHUB_API_TOKEN") or None


def _same_server(url: str, record: Mapping[str, Any]) -> bool:
    a, b = urlsplit(url), urlsplit(server_url(record))
    local = {"localhost", "127.0.0.1", "::1", str(record.get("hostname") or "")}
    same_host = a.hostname == b.hostname or (a.hostname in local and b.hostname in local)
    path_a = a.path if a.path.endswith("/") else a.path + "/"
    return same_host and a.port == b.port and path_a.startswith(b.path)


def _token_for_url(url: str, runtime_dir: Path, environ: Mapping[str, str]) -> str | None:
    for record in running_servers(runtime_dir):
        if _same_server(url, record):
            return _record_token(record, environ)
    return None


def find_server(
    url: str | None = None,
    token: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    runtime_dir: Path | None = None,
    any_server: bool = False,
    cwd: str | None = None,
) -> ServerTarget | None:
    """The server to use, in the order of the module docstring; None means embedded."""
    environ = os.environ if environ is None else environ
    directory = jupyter_runtime_dir(environ) if runtime_dir is None else runtime_dir
    token = token or None
    if url:
        token = token or environ.get(TOKEN_ENV) or _token_for_url(url, directory, environ)
        return ServerTarget(url, token, "explicit")
    if environ.get(URL_ENV):
        env_url = environ[URL_ENV]
        token = token or environ.get(TOKEN_ENV) or _token_for_url(env_url, directory, environ)
        return ServerTarget(env_url, token, "environment")
    servers = running_servers(directory)
    parent = _kernel_parent(servers, environ, token)
    if parent is not None or not any_server:
        return parent
    return _any_server(servers, directory, environ, token, cwd or os.getcwd())


def _kernel_parent(
    servers: list[dict[str, Any]], environ: Mapping[str, str], token: str | None
) -> ServerTarget | None:
    parent_pid = environ.get("JPY_PARENT_PID", "")
    if parent_pid.isdigit():
        for record in servers:
            if record.get("pid") == int(parent_pid):
                return _target(record, environ, token, "kernel-parent")
    terminal_url = environ.get("JUPYTER_SERVER_URL")
    if terminal_url:
        for record in servers:
            if _same_server(terminal_url, record):
                return _target(record, environ, token, "terminal")
    return None


def _any_server(
    servers: list[dict[str, Any]],
    directory: Path,
    environ: Mapping[str, str],
    token: str | None,
    cwd: str,
) -> ServerTarget | None:
    for _, record in _records(directory, "jpexec"):
        if isinstance(record.get("url"), str):
            return ServerTarget(
                record["url"], token or record.get("token") or None, "standalone", record["pid"]
            )
    if not servers:
        return None
    here = os.path.realpath(cwd)

    def depth(record: dict[str, Any]) -> int:
        root = os.path.realpath(str(record.get("root_dir") or "/"))
        inside = here == root or here.startswith(root.rstrip(os.sep) + os.sep)
        return len(root) if inside else -1

    best = max(servers, key=depth)  # ties keep the newest (servers are newest first)
    return _target(best, environ, token, "running")


def _target(
    record: Mapping[str, Any], environ: Mapping[str, str], token: str | None, source: str
) -> ServerTarget:
    pid = record.get("pid")
    return ServerTarget(
        server_url(record),
        token or _record_token(record, environ),
        source,
        pid if isinstance(pid, int) else None,
    )
