"""Where a kernel's processes live: the magics' one client, made on first use.

Discovery (:mod:`jupyter_exec.client.discovery`) picks an explicit or
``$JUPYTER_EXEC_URL`` server, else the Jupyter server that launched this
kernel. With none (VS Code, plain IPython and ``jupyter console`` start
kernels themselves; a server without our extension answers nothing), the
processes go to this user's exec daemon, joined or started now (SPEC 3 "Every
front"), under the rules of a shell: the kernel's cwd as root, its
environment as base. They outlive the kernel, and every front of the user
sees them. Only ``%exec_connect --embedded``, or a daemon that cannot run,
puts them in a registry inside this kernel (they then end with it; the
reason is said once). A server or daemon that goes away (a restart) is
looked for again at the next use. No IPython.

`shared` is the connection of this process: the magics' and that of
``ExecProcess("id")``, so a handle made by id reaches what ``%exec`` started.
"""

from __future__ import annotations

import contextlib
import os
import threading

from ..client.discovery import ServerTarget, find_server, user_daemon
from ..client.exec_client import SyncExecClient

__all__ = ["Connection", "shared"]

#: What a kernel says when its processes cannot outlive it.
EMBEDDED_NOTICE = (
    "jupyter-exec: {why}; processes run inside this kernel and end with it "
    "(%exec_connect URL to use a server)."
)


class Connection:
    """This kernel's client, made on first use by discovery (module docstring)."""

    def __init__(self) -> None:
        self._client: SyncExecClient | None = None
        self.target: ServerTarget | None = None
        self._lock = threading.Lock()
        self._embedded: SyncExecClient | None = None
        #: Why the processes run in this kernel, once said (None: they do not, or asked to).
        self.embedded_reason: str | None = None

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
                if target.explicit:
                    raise ConnectionError(f"cannot reach {target.describe()}: {exc}") from exc
                print(
                    f"jupyter-exec: cannot use {target.describe()} ({exc}); "
                    "processes run in this user's exec daemon."
                )
            else:
                self.target = target
                return client
        try:
            return self._daemon_client()
        except Exception as exc:  # DaemonStartError, OSError, a refused hello: say which
            why = f"no exec daemon can run here ({exc})"
            if self.embedded_reason is None:
                print(EMBEDDED_NOTICE.format(why=why))
            self.embedded_reason = why
        return self._embedded_client()

    def _daemon_client(self) -> SyncExecClient:
        """A client of this user's exec daemon (started if none runs), as a shell's front."""
        from ..client.unix_transport import connect_daemon, daemon_front

        daemon = user_daemon()
        front = daemon_front(f"the magics of kernel {os.getpid()}")
        client = SyncExecClient.from_async(lambda: connect_daemon(daemon, front=front))
        self.target = ServerTarget(f"unix:{daemon}", None, "daemon")
        return client

    def _embedded_client(self) -> SyncExecClient:
        if self._embedded is None:
            from ..embedded import sync_embedded  # the server's modules, only when needed

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
        """``%exec_connect --embedded``: asked for, so nothing more is said."""
        with self._lock:
            old = self._client
            self._client = self._embedded_client()
        self._close_unless_embedded(old)
        return self._client

    def reset(self) -> None:
        """Forget the current choice; the next use runs discovery again."""
        with self._lock:
            old, self._client, self.target = self._client, None, None
            self.embedded_reason = None
        self._close_unless_embedded(old)

    def _close_unless_embedded(self, client: SyncExecClient | None) -> None:
        if client is not None and client is not self._embedded:
            client.close()

    def describe(self) -> str:
        if self._client is None:
            return "not connected yet (connects on first use)"
        if self.embedded or self.target is None:
            why = f": {self.embedded_reason}" if self.embedded_reason else ""
            return f"embedded registry in this kernel (processes end with it){why}"
        return self.target.describe()

    def close(self) -> None:
        with self._lock:
            clients = {id(c): c for c in (self._client, self._embedded) if c is not None}
            self._client = self._embedded = None
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()


_shared: Connection | None = None
_shared_lock = threading.Lock()


def shared() -> Connection:
    """This process's connection (module docstring), made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Connection()
        return _shared
