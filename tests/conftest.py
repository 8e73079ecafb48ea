"""Shared fixtures. pytest-jupyter's plugin runs `async def` tests on a fresh loop each."""

from __future__ import annotations

import os
import tempfile

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Tests never leave the loopback interface, and Jupyter must not serve anyone anonymously.
os.environ.setdefault("JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS", "false")
# Servers started by tests leave their discovery records here, not in the user's runtime dir.
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="jupyter-exec-test-runtime-"))
