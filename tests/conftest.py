"""Shared fixtures. pytest-jupyter's plugin runs `async def` tests on a fresh loop each."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from jupyter_exec.client import SyncExecClient
from tests.daemon.harness import stop_daemons_under

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Tests never leave the loopback interface, and Jupyter must not serve anyone anonymously.
os.environ.setdefault("JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS", "false")
# Servers started by tests leave their discovery records here, not in the user's runtime dir.
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="jupyter-exec-test-runtime-"))

# Hypothesis runs with a fixed, derandomized profile so CI is reproducible; set
# `HYPOTHESIS_PROFILE=explore` locally to search with fresh random seeds.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore",
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _no_exec_daemon_left(tmp_path: Path) -> Iterator[None]:
    """Servers keep their processes in an exec daemon that outlives them: stop the
    daemons of this test's runtime dirs (pytest-jupyter's are under tmp_path)."""
    yield
    stop_daemons_under(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _no_exec_daemon_left_at_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """And those of module-scoped servers, at the end of the session."""
    yield
    stop_daemons_under(tmp_path_factory.getbasetemp())
    stop_daemons_under(Path(os.environ["JUPYTER_RUNTIME_DIR"]))


@pytest.fixture(scope="module")
def api(server: Any) -> Iterator[SyncExecClient]:
    """A client of the requesting module's `server` fixture (a real Jupyter server)."""
    client = SyncExecClient.connect(server.url, server.token)
    try:
        yield client
    finally:
        client.close()
