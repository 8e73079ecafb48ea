"""Shared fixtures. pytest-jupyter's plugin runs `async def` tests on a fresh loop each."""

from __future__ import annotations

import os

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Tests never leave the loopback interface, and Jupyter must not serve anyone anonymously.
os.environ.setdefault("JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS", "false")
