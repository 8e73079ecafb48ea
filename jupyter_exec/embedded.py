"""Embedded mode: a client talking to a registry inside this very process.

When no server is reachable, ``jupyter exec run`` and the magics still work
with a private registry; processes then end with this process. The client
speaks the same JSON-RPC as over a websocket, to an in-process connection of
the service (no sockets), so nothing behaves differently but the lifetime.

This module is the only client-side code that imports the server's modules,
so that :mod:`jupyter_exec.client` (and ``jupyter exec ps``) never load them.
"""

from __future__ import annotations

from typing import Any

from .client.exec_client import ExecClient, SyncExecClient
from .config import ExecConfig
from .rpc.dispatch import ExecService
from .rpc.service import build_service
from .wire.models import Lifetime

__all__ = ["EMBEDDED", "connect_service", "start_embedded", "sync_embedded"]

#: How errors name an embedded registry's front (its rules: this process's cwd and env).
EMBEDDED = "the registry embedded in this process"


async def connect_service(
    service: ExecService, *, client_name: str = "jupyter-exec", owns_service: bool = False
) -> ExecClient:
    """An initialized client of ``service``; with ``owns_service``, closing it stops the service."""
    client: ExecClient | None = None

    async def deliver(message: bytes) -> None:  # one encoded message (dispatch.Write)
        assert client is not None
        client.receive(message)

    connection = service.connect(deliver)

    async def send(text: str) -> None:
        connection.receive(text)

    async def close() -> None:
        await connection.aclose()
        if owns_service:
            await service.aclose()  # terminates and awaits its processes

    client = ExecClient(send, close)
    await client.initialize(client_name)
    return client


async def start_embedded(
    *, default_lifetime: Lifetime, client_name: str = "jupyter-exec", **config: Any
) -> ExecClient:
    """A new private registry and a client that owns it; `config`: `ExecConfig` fields."""
    exec_config = ExecConfig(default_lifetime=default_lifetime, **config)
    service = build_service(exec_config, exec_config.front_rules(EMBEDDED))
    return await connect_service(service, client_name=client_name, owns_service=True)


def sync_embedded(**config: Any) -> SyncExecClient:
    """A blocking client of a private registry; processes default to ``detached``
    (they outlive the client's connection, not this process)."""
    return SyncExecClient.from_async(lambda: start_embedded(default_lifetime="detached", **config))
