"""The Jupyter server's link to its exec daemon (SPEC 3 Durability).

The extension authenticates and authorizes each websocket, then hands the
client's socket to the daemon, which serves it directly (daemon/handover.py).
Where it cannot (TLS, `relay_websockets`, an older daemon) the websocket is
relayed 1:1 to a daemon connection (handlers.py): lines from the daemon go
out as text frames unparsed, frames in go down as lines, and each side waits
for the other's drain before reading more, so flow control holds end to end.
The REST mirror and activity reporting use one shared daemon connection.
Every daemon connection of this server, handed-over websockets included,
carries this server's rules (SPEC 3: `FrontRules`), so its root, confinement,
limits and environment hold whoever started the daemon. No tornado here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..client.exec_client import ExecClient
from ..client.unix_transport import (
    DaemonStreams,
    connect_daemon,
    hand_over,
    open_daemon,
    open_handover,
)
from ..daemon import paths
from ..daemon.control import listening, shutdown_daemon_and_processes
from ..daemon.start import ensure_daemon
from ..wire.rules import FrontRules

__all__ = ["DaemonLink"]


log = logging.getLogger(__name__)


class DaemonLink:
    """Starts the daemon on first use, reconnects after it exited (idle), stops it on demand."""

    def __init__(
        self,
        runtime_dir: Path,
        rules: Callable[[], FrontRules],
        stop_processes_on_shutdown: bool = False,
    ) -> None:
        """`rules` is called once, at the first use: the server's URL is known by then."""
        self.runtime_dir = runtime_dir
        self._make_rules = rules
        self._rules: FrontRules | None = None
        self.stop_processes_on_shutdown = stop_processes_on_shutdown
        self._client: ExecClient | None = None
        self._hold: DaemonStreams | None = None
        self._lock = asyncio.Lock()

    @property
    def socket_path(self) -> Path:
        return paths.socket_path(self.runtime_dir)

    @property
    def rules(self) -> FrontRules:
        if self._rules is None:
            self._rules = self._make_rules()
        return self._rules

    async def _ensure(self) -> Path:
        path = await asyncio.to_thread(ensure_daemon, self.runtime_dir)
        if self.stop_processes_on_shutdown and (self._hold is None or self._hold.reader.at_eof()):
            # The daemon stops everything when this connection closes, however we die.
            self._hold = await open_daemon(path, stop_on_close=True)
        return path

    async def open(self, allowed_actions: frozenset[str]) -> DaemonStreams:
        """A fresh daemon connection for one websocket client."""
        try:
            return await open_daemon(await self._ensure(), allowed_actions, front=self.rules)
        except OSError:  # it exited (idle) between our check and connect: start it again
            return await open_daemon(await self._ensure(), allowed_actions, front=self.rules)

    async def handover_channel(self) -> socket.socket | None:
        """A connection to the daemon's handover socket (None: relay instead)."""
        await self._ensure()
        return await asyncio.to_thread(open_handover, paths.handover_path(self.runtime_dir))

    async def hand_over(
        self,
        channel: socket.socket,
        client: socket.socket,
        request_head: bytes,
        allowed_actions: Iterable[str],
    ) -> None:
        """Pass a client's upgraded-to-be socket to the daemon, which serves it from here on."""
        await asyncio.to_thread(
            hand_over, channel, client, request_head, allowed_actions, self.rules
        )

    async def connect_client(self, client_name: str) -> ExecClient:
        """A connection of its own (the MCP endpoint), the daemon started if needed."""
        return await connect_daemon(await self._ensure(), front=self.rules, client_name=client_name)

    async def shared_client(self) -> ExecClient:
        """The REST mirror's connection, made again if it was lost."""
        async with self._lock:
            if self._client is None or self._client.closed:
                path = await self._ensure()
                self._client = await connect_daemon(
                    path, front=self.rules, client_name="jupyter-exec-rest"
                )
            return self._client

    async def request(self, method: str, params: Any = None) -> Any:
        """One call on the shared connection (REST mirror), reconnecting if it was lost."""
        return await (await self.shared_client()).request(method, params)

    async def any_running(self) -> bool:
        """For activity reporting: never starts a daemon just to ask."""
        if not await asyncio.to_thread(listening, self.socket_path):
            return False
        listed = await self.request("process/list", {})
        return any(p["state"] == "running" for p in listed["processes"])

    async def shutdown(self) -> bool:
        """Stop every process and the daemon; False if none was running."""
        stopped = await asyncio.to_thread(shutdown_daemon_and_processes, self.socket_path)
        await self.aclose()
        return stopped

    async def aclose(self) -> None:
        """Let go of the daemon (it keeps running unless a hold asked otherwise)."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._hold is not None:
            self._hold.writer.close()
            self._hold = None
