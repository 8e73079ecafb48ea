"""What `jupyter exec` does with the exec daemon: start it, stop it, find it again.

Kept out of cli.py (which stays about commands): `run --detach` with no server
starts a daemon here; `shutdown` stops every process and the daemon; `logs -f`
reconnects after losing its server, to the next one or to the daemon itself.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..client.discovery import find_daemon, find_server, jupyter_runtime_dir

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

#: How long `logs -f` looks for the processes again after losing its server.
RECONNECT_SECONDS = 120.0


def start_daemon_here() -> Path:
    """The daemon of this runtime dir, started if needed (raises DaemonStartError)."""
    from ..config import ExecConfig
    from ..daemon.start import ensure_daemon

    config = ExecConfig(root_dir=Path.cwd(), default_lifetime="detached")
    return ensure_daemon(jupyter_runtime_dir(), config)


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
