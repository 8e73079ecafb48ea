"""Where a kernel's processes live: the magics' one client, made on first use.

Discovery (:mod:`jupyter_exec.client.discovery`) picks an explicit or
``$JUPYTER_EXEC_URL`` server, else the Jupyter server that launched this
kernel; with none up, this user's exec daemon if one runs (the processes a
server started outlive it); with neither, an embedded registry runs in this process
(processes then end with the kernel, and a one-line notice says so). A server
that goes away (a restart) is looked for again at the next use. No IPython.
"""

from __future__ import annotations

import contextlib
import os
import threading

from ..client.discovery import ServerTarget, find_daemon, find_server
from ..client.exec_client import SyncExecClient

__all__ = ["Connection"]


class Connection:
    """This kernel's client, made on first use by discovery (module docstring)."""

    def __init__(self) -> None:
        self._client: SyncExecClient | None = None
        self.target: ServerTarget | None = None
        self._lock = threading.Lock()
        self._embedded: SyncExecClient | None = None

    @property
    def embedded(self) -> bool:
        return self._client is not None and self._client is self._embedded

    def get(self) -> SyncExecClient:
        with self._lock:
            if self._client is not None and self._lost(self._client):
                self._client = None  # the server went away (restart?): find it again
            if self._client is None:
                self._client = self._discover()
            return self._client

    def _lost(self, client: SyncExecClient) -> bool:
        inner = getattr(client, "client", None)
        return client is not self._embedded and bool(getattr(inner, "closed", False))

    def _discover(self) -> SyncExecClient:
        target = find_server()
        if target is not None:
            try:
                client = SyncExecClient.connect(target.url, target.token)
            except Exception as exc:
                if target.source in ("explicit", "environment"):
                    raise ConnectionError(f"cannot reach {target.describe()}: {exc}") from exc
                print(
                    f"jupyter-exec: cannot use {target.describe()} ({exc}); "
                    "processes run inside this kernel and end with it."
                )
            else:
                self.target = target
                return client
        elif (daemon := find_daemon()) is not None:
            # No server (it stopped or crashed), but its processes live on in the daemon.
            from ..client.unix_transport import connect_daemon, daemon_front

            self.target = ServerTarget(f"unix:{daemon}", None, "daemon")
            front = daemon_front(f"the magics of kernel {os.getpid()}")
            return SyncExecClient.from_async(lambda: connect_daemon(daemon, front=front))
        else:
            print(
                "jupyter-exec: no exec server found; processes run inside this kernel "
                "and end with it (%exec_connect URL to use a server)."
            )
        return self._embedded_client()

    def _embedded_client(self) -> SyncExecClient:
        if self._embedded is None:
            from ..client.embedded import sync_embedded  # the server's modules, only when needed

            self._embedded = sync_embedded()
        self.target = None
        return self._embedded

    def connect(self, url: str, token: str | None) -> SyncExecClient:
        target = find_server(url, token)
        assert target is not None
        client = SyncExecClient.connect(target.url, target.token)
        with self._lock:
            old, self._client, self.target = self._client, client, target
        self._close_unless_embedded(old)
        return client

    def use_embedded(self) -> SyncExecClient:
        with self._lock:
            old = self._client
            self._client = self._embedded_client()
        self._close_unless_embedded(old)
        return self._client

    def reset(self) -> None:
        """Forget the current choice; the next use runs discovery again."""
        with self._lock:
            old, self._client, self.target = self._client, None, None
        self._close_unless_embedded(old)

    def _close_unless_embedded(self, client: SyncExecClient | None) -> None:
        if client is not None and client is not self._embedded:
            client.close()

    def describe(self) -> str:
        if self._client is None:
            return "not connected yet (connects on first use)"
        if self.embedded or self.target is None:
            return "embedded registry in this kernel (processes end with it)"
        return self.target.describe()

    def close(self) -> None:
        with self._lock:
            clients = {id(c): c for c in (self._client, self._embedded) if c is not None}
            self._client = self._embedded = None
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()
