"""What `jupyter exec` does with the exec daemon: start it, stop it, find it again.

Kept out of cli.py (which stays about commands): `run --detach` with no server
starts a daemon here; `shutdown` stops every process and the daemon; `daemon
status|stop|restart` show and replace the daemon (its processes stay with the
holder); `logs -f` reconnects after losing its server, to the next one or to
the daemon itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client.discovery import find_daemon, find_server, jupyter_runtime_dir

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient
    from ..config import ExecConfig

#: How long `logs -f` looks for the processes again after losing its server.
RECONNECT_SECONDS = 120.0


def start_daemon_here() -> Path:
    """The daemon of this runtime dir, started if needed (raises DaemonStartError)."""
    from ..daemon.start import ensure_daemon

    return ensure_daemon(jupyter_runtime_dir(), _cli_config())


def _cli_config() -> ExecConfig:
    from ..config import ExecConfig

    return ExecConfig(root_dir=Path.cwd(), default_lifetime="detached")


async def shutdown(url: str | None, token: str | None) -> bool:
    """Over REST (`POST api/exec/shutdown`) with a URL, else the local socket; raises OSError."""
    if url:
        from urllib.request import Request, urlopen

        target = find_server(url, token)
        assert target is not None
        req = Request(target.url.rstrip("/") + "/api/exec/shutdown", data=b"", method="POST")
        if target.token:
            req.add_header("Authorization", f"token {target.token}")
        with await asyncio.to_thread(urlopen, req, timeout=120) as response:
            return bool(json.loads(response.read())["stopped"])
    from ..daemon.start import holder_request
    from ..jupyter.relay import stop_daemon

    daemon = find_daemon()
    holder: dict[str, Any] | None = None
    if daemon is None:
        holder = await asyncio.to_thread(holder_request, jupyter_runtime_dir(), {"op": "status"})
    if holder is not None and any(holder.get("held", {}).values()):
        # Processes whose daemon died wait in the holder: a daemon takes them, then stops them.
        daemon = await asyncio.to_thread(start_daemon_here)
    return daemon is not None and await stop_daemon(daemon)


def daemon_command(args: argparse.Namespace) -> int:
    """`jupyter exec shutdown` and `jupyter exec daemon status|stop|restart`."""
    from ..daemon import paths
    from ..daemon.start import restart_daemon, stop_daemon

    if args.command == "shutdown":
        return asyncio.run(_shutdown(args))
    action, runtime = args.action, jupyter_runtime_dir()
    if action == "status":
        print(describe(runtime))
        return 0
    record = _record(runtime)
    if action == "stop":
        daemon = find_daemon()
        if daemon is None:
            print("no exec daemon is running")
            return 0
        stop_daemon(daemon, "stopped by `jupyter exec daemon stop`")
        print(f"stopped the exec daemon {record.get('pid')}; its processes stay with the holder")
        return 0
    from ..config import ExecConfig

    saved = paths.state_dir(runtime) / "config.json"
    config = ExecConfig.from_json(saved.read_text()) if saved.exists() else _cli_config()
    restart_daemon(runtime, config, "restarted by `jupyter exec daemon restart`")
    new = _record(runtime)
    print(f"restarted: the exec daemon {new.get('pid')} (version {new.get('version')}) serves")
    return 0


async def _shutdown(args: argparse.Namespace) -> int:
    """Stop every process and the exec daemon: over REST with --url, else the local socket."""
    try:
        stopped = await shutdown(args.url, args.token)
    except OSError as exc:
        print(f"jupyter exec shutdown: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print("stopped every process and the exec daemon" if stopped else "no exec daemon is running")
    return 0


def describe(runtime: Path) -> str:
    """Which daemon and holder serve this runtime dir, since when, and why (status)."""
    from ..daemon import paths
    from ..daemon.start import holder_request

    lines = []
    record = _record(runtime) if find_daemon() is not None else {}
    if record:
        lines.append(
            f"daemon   pid {record['pid']}, version {record.get('version')} "
            f"(protocol {record.get('protocol')}), up {_age(record.get('startedAt'))}, "
            f"{record.get('socket')}"
        )
        lines.append(f"         {asyncio.run(_count_processes(Path(record['socket'])))}")
        if not record.get("holder"):
            lines.append(
                "         from before the holder: its processes die with it; it is left "
                "to finish them and exit when idle, then this version takes over"
            )
    else:
        lines.append("daemon   none running")
    status = holder_request(runtime, {"op": "status"})
    if status is None:
        lines.append("holder   none running")
        return "\n".join(lines)
    held = sum(status.get("held", {}).values())
    lines.append(
        f"holder   pid {status['pid']}, version {status['version']} (protocol "
        f"{status['holder']}), up {_age(status.get('startedAt'))}, holding {held} processes"
    )
    for daemon in status.get("daemons", []):
        lines.append(f"started  daemon {daemon['pid']}: {daemon['reason']}")
    lines.append(f"log      {paths.holder_log_path(runtime)}")
    lines += [f"         {event}" for event in status.get("events", [])[-10:]]
    return "\n".join(lines)


async def _count_processes(socket: Path) -> str:
    from ..client.unix_transport import connect_daemon

    try:
        client = await connect_daemon(socket, client_name="jupyter-exec-status")
    except Exception as exc:  # stopping, or refusing us: say so, status goes on
        return f"processes unknown ({exc})"
    try:
        listed = await client.list()
    finally:
        await client.close()
    running = sum(p.state == "running" for p in listed)
    return f"{len(listed)} processes ({running} running)"


def _record(runtime: Path) -> dict[str, Any]:
    from ..daemon import paths

    try:
        data = json.loads(paths.record_path(runtime).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _age(started_ms: object) -> str:
    if not isinstance(started_ms, int):
        return "?"
    seconds = max(0, int(time.time() - started_ms / 1000))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


async def reconnect(url: str | None, token: str | None) -> ExecClient | None:
    """A client of the next server found, or of the daemon while none is up; None in time."""
    from ..client.exec_client import ExecClient
    from ..client.unix_transport import connect_daemon

    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONNECT_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        target = find_server(url, token, any_server=True)
        daemon = find_daemon()
        try:
            if target is not None:
                return await ExecClient.connect(target.url, target.token)
            if daemon is not None:
                return await connect_daemon(daemon, client_name="jupyter-exec-cli")
        except Exception:  # a server still starting up: try again
            pass
    return None
