"""What `jupyter exec` does with the exec daemon: start it, stop it, find it, show it.

Kept out of cli.py (which stays about commands): `run --detach` with no server
starts a daemon here; `shutdown` stops every process and the daemon; `logs -f`
reconnects after losing its server, to the next one or to the daemon itself;
`daemon config` shows the user's daemon settings in force and where each came
from. Talking to the daemon itself, the CLI is a front of its own (SPEC 3):
its cwd is the root, its environment the base of its processes'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..client.discovery import find_daemon, find_server, jupyter_runtime_dir

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

#: How long `logs -f` looks for the processes again after losing its server.
RECONNECT_SECONDS = 120.0
#: How errors name the CLI's own rules when it talks to the daemon (SPEC 3): its cwd
#: as root, its environment; the CLI is one front however many times it runs.
CLI_FRONT = "the jupyter exec CLI"


def start_daemon_here() -> Path:
    """The daemon of this runtime dir, started if needed (raises DaemonStartError)."""
    from ..daemon.start import ensure_daemon

    return ensure_daemon(jupyter_runtime_dir())


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
    from ..jupyter.relay import stop_daemon

    daemon = find_daemon()
    return daemon is not None and await stop_daemon(daemon)


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
    """`jupyter exec daemon config [--json]`: the settings in force, and their sources."""
    parser = argparse.ArgumentParser(prog="jupyter exec daemon")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    config = sub.add_parser("config", help="the user's daemon settings and where each is set")
    config.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
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
