"""Shared fixtures. pytest-jupyter's plugin runs `async def` tests on a fresh loop each."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_exec.client import SyncExecClient

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Tests never leave the loopback interface, and Jupyter must not serve anyone anonymously.
os.environ.setdefault("JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS", "false")
# Servers started by tests leave their discovery records here, not in the user's runtime dir.
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="jupyter-exec-test-runtime-"))


@pytest.fixture(scope="module")
def api(server: Any) -> Iterator[SyncExecClient]:
    """A client of the requesting module's `server` fixture (a real Jupyter server)."""
    client = SyncExecClient.connect(server.url, server.token)
    try:
        yield client
    finally:
        client.close()
