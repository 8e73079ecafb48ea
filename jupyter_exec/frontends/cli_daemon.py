"""What `jupyter exec` does with the exec daemon: start it, stop it, find it, show it.

Kept out of cli.py (which stays about commands): `run --detach` with no server
starts a daemon here; `shutdown` stops every process and the daemon; `logs -f`
reconnects after losing its server, to the next one or to the daemon itself;
`daemon status|stop|restart` show and replace the daemon (its processes stay
with the holder); `daemon config` shows the user's daemon settings in force
and where each came from. Talking to the daemon itself, the CLI is a front of
its own (SPEC 3): its cwd is the root, its environment the base of its
processes'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client.discovery import find_daemon, find_server, jupyter_runtime_dir, user_daemon

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = [
    "CLI_FRONT",
    "RECONNECT_SECONDS",
    "connect_here",
    "daemon_or_why",
    "describe",
    "main",
    "reconnect",
    "shutdown",
    "start_daemon_here",
]


#: How long `logs -f` looks for the processes again after losing its server.
RECONNECT_SECONDS = 120.0
#: How errors name the CLI's own rules when it talks to the daemon (SPEC 3): its cwd
#: as root, its environment; the CLI is one front however many times it runs.
CLI_FRONT = "the jupyter exec CLI"


def start_daemon_here() -> Path:
    """The daemon of this runtime dir, started if needed (raises DaemonStartError)."""
    return user_daemon()


async def daemon_or_why() -> Path | str:
    """The socket of this user's exec daemon (started if none runs), or why none can run:
    every command goes there when it finds no server (SPEC 3 "Every front")."""
    from ..daemon.start import DaemonStartError

    try:
        return await asyncio.to_thread(user_daemon)
    except (DaemonStartError, OSError) as exc:
        return f"no exec daemon can run here ({exc})"


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
    from ..daemon.control import shutdown_daemon_and_processes
    from ..daemon.start import holder_request

    daemon = find_daemon()
    holder: dict[str, Any] | None = None
    if daemon is None:
        holder = await asyncio.to_thread(holder_request, jupyter_runtime_dir(), {"op": "status"})
    if holder is not None and any(holder.get("held", {}).values()):
        # Processes whose daemon died wait in the holder: a daemon takes them, then stops them.
        daemon = await asyncio.to_thread(start_daemon_here)
    return daemon is not None and await asyncio.to_thread(shutdown_daemon_and_processes, daemon)


async def connect_here(daemon: Path) -> ExecClient:
    """A client of the daemon itself, under the CLI's own rules (its cwd, its env)."""
    from ..client.unix_transport import connect_daemon, daemon_front

    return await connect_daemon(
        daemon, front=daemon_front(CLI_FRONT), client_name="jupyter-exec-cli"
    )


async def reconnect(url: str | None, token: str | None) -> ExecClient | None:
    """A client of the next server found, or of the daemon while none is up; None in time."""
    from ..client.exec_client import ExecClient

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
                return await connect_here(daemon)
        except Exception:  # a server still starting up: try again
            pass
    return None


def main(argv: list[str]) -> int:
    """`jupyter exec daemon status|stop|restart|config`."""
    parser = argparse.ArgumentParser(prog="jupyter exec daemon")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("status", help="which daemon and holder serve, since when, and why")
    sub.add_parser("stop", help="stop the daemon; its processes stay with the holder")
    sub.add_parser("restart", help="a daemon of the installed version takes every process over")
    config = sub.add_parser("config", help="the user's daemon settings and where each is set")
    config.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    if args.action != "config":
        return _lifecycle(args.action)
    return _config(args)


def _lifecycle(action: str) -> int:
    from ..daemon.control import stop_daemon_keeping_processes
    from ..daemon.start import DaemonStartError, restart_daemon

    runtime = jupyter_runtime_dir()
    if action == "status":
        print(describe(runtime))
        return 0
    if action == "stop":
        daemon, record = find_daemon(), _record(runtime)
        if daemon is None:
            print("no exec daemon is running")
            return 0
        stop_daemon_keeping_processes(daemon, "stopped by `jupyter exec daemon stop`")
        print(f"stopped the exec daemon {record.get('pid')}; its processes stay with the holder")
        return 0
    try:
        restart_daemon(runtime, "restarted by `jupyter exec daemon restart`")
    except DaemonStartError as exc:
        print(f"jupyter exec daemon restart: {exc}", file=sys.stderr)
        return 2
    new = _record(runtime)
    print(f"restarted: the exec daemon {new.get('pid')} (version {new.get('version')}) serves")
    return 0


def _config(args: argparse.Namespace) -> int:
    """`jupyter exec daemon config [--json]`: the settings in force, and their sources."""
    from ..config import DaemonSettingsError, load_daemon_settings, user_daemon_settings_path

    try:
        settings, sources = load_daemon_settings()
        files: dict[str, Any] = {"settings": settings.to_wire(), "sources": sources}
    except DaemonSettingsError as exc:
        print(f"jupyter exec daemon config: {exc}", file=sys.stderr)
        return 2
    daemon = find_daemon()
    running = asyncio.run(_running_settings(daemon)) if daemon is not None else None
    if args.json:
        print(json.dumps({"files": files, "running": running}, indent=2))
        return 0
    shown = running or files
    where = f"pid {running['pid']}" if running else "none running: the next one uses these"
    print(f"exec daemon ({where}); the user's settings, set in {user_daemon_settings_path()}:")
    for key, value in shown["settings"].items():
        print(f"  {key} = {json.dumps(value)}  ({shown['sources'].get(key, 'default')})")
    stale = [k for k, v in files["settings"].items() if running and running["settings"][k] != v]
    if stale:
        print(f"changed in the files since it started: {', '.join(stale)} "
              "(applied when it restarts: jupyter exec shutdown)")  # fmt: skip
    return 0


async def _running_settings(daemon: Path) -> dict[str, Any] | None:
    try:
        client = await connect_here(daemon)
    except OSError:
        return None  # it exited meanwhile (idle)
    try:
        return dict(await client.request("daemon/settings", {}))
    finally:
        await client.close()


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
    try:
        client = await connect_here(socket)
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
