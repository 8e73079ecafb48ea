"""Fixtures for the Codex end-to-end tests: Codex itself, a scripted model, our servers,
and the differential tests' pair of servers (differential.py)."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .differential import TRANSPORTS, Pair, Side, codex_side, our_side
from .harness import Codex, RunningServer, install_codex, jupyter_server, standalone_server
from .model_server import ScriptedModel


@pytest.fixture(scope="session")
def codex_launcher() -> Path:
    """Installed once per session (npm, into a cache directory that survives sessions)."""
    return install_codex()


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as model:
        yield model


@contextlib.contextmanager
def outside_temp() -> Iterator[Path]:
    """A fresh directory outside the temporary directory, removed after: Codex refuses to
    make its sandbox helpers under one (``Refusing to create helper binaries under
    temporary dir``), and with a system bubblewrap its sandbox with a managed network then
    fails (``execvp codex-linux-sandbox``); docs/codex.md."""
    path = Path.home() / ".cache" / "jupyter-exec-test" / "codex-homes" / uuid.uuid4().hex[:12]
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def codex(codex_launcher: Path, model: ScriptedModel) -> Iterator[Codex]:
    with outside_temp() as base:
        yield Codex(codex_launcher, base / "codex-home", model.base_url)


@pytest.fixture(scope="module")
def server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exec-root").resolve()


@pytest.fixture(scope="module")
def standalone(server_root: Path) -> Iterator[RunningServer]:
    with standalone_server(server_root) as server:
        yield server


@pytest.fixture(scope="module")
def jupyter(server_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    runtime = tmp_path_factory.mktemp("jupyter-runtime")
    with jupyter_server(server_root, runtime, secrets.token_hex(16)) as server:
        yield server


@pytest.fixture(params=["standalone", "jupyter"])
def server(request: pytest.FixtureRequest) -> RunningServer:
    """Each test runs against both: the standalone ws server and /api/exec/ws in Jupyter."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def workdir(server: RunningServer, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the server's root for one test: Codex's cwd."""
    name = request.node.name.replace("[", "-").replace("]", "")
    path = server.root / name
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def setup_home() -> Callable[[Path], None]:
    """Fills both differential sides' ``CODEX_HOME`` before their servers start
    (a module overrides it, as test_differential_fs.py installs skills and plugins)."""
    return lambda home: None


@pytest.fixture(scope="module")
def server_environment() -> None:
    """Set up before both differential sides' servers start; a module overrides it
    (test_differential_http.py sets a variable the servers must inherit)."""


@pytest.fixture(scope="module")
def codex_server(
    codex_launcher: Path,
    setup_home: Callable[[Path], None],
    server_environment: None,
) -> Iterator[Side]:
    """Codex's own exec-server, one per differential test module (its home outside the
    temporary directory, as `codex`'s)."""
    with outside_temp() as base, codex_side(codex_launcher, base, setup_home) as side:
        yield side


@pytest.fixture(scope="module", params=TRANSPORTS)
def pair(
    request: pytest.FixtureRequest,
    codex_server: Side,
    tmp_path_factory: pytest.TempPathFactory,
    setup_home: Callable[[Path], None],
    server_environment: None,
) -> Iterator[Pair]:
    """Codex's server and ours over each transport, for a whole differential module."""
    base = tmp_path_factory.mktemp(request.param)
    with our_side(request.param, base, setup_home) as ours:
        yield Pair(codex_server, ours)
