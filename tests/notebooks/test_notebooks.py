"""The demo notebooks (notebooks/*.ipynb) run top to bottom, unedited, in JupyterLab's setup.

One real `jupyter server` (127.0.0.1, token, the jupyter_exec extension) serves
a temporary copy of notebooks/; each notebook runs in a kernel that server
started for it (see runner.py), so the magics and the client discover the
server as they do for a reader. Any cell error fails the test, and so does a
process a notebook leaves running. Notebook 2 restarts its kernel midway
(its `restart-kernel` cell) and must find its training job still running.
Executed copies go to test-artifacts/notebooks/ for inspection.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from jupyter_exec.client import SyncExecClient
from tests.magics.jupyter_process import JupyterServer, jupyter_server

from .runner import RESTART_TAG, error_outputs, run_notebook

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
ARTIFACTS = REPO / "test-artifacts" / "notebooks"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with pytest.MonkeyPatch.context() as mp:
        # As in an activated environment (Binder, `make run`): `python` and
        # `jupyter-exec` in a kernel's commands are this environment's.
        mp.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        with jupyter_server(tmp_path_factory.mktemp("notebooks")) as running:
            for path in NOTEBOOKS:
                shutil.copy(path, running.root_dir / path.name)
            yield running


def test_the_six_demos_exist() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "01-getting-started.ipynb",
        "02-long-job.ipynb",
        "03-web-server.ipynb",
        "04-client-and-protocol.ipynb",
        "05-agent-loop.ipynb",
        "06-sweep-queue.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_saved_without_outputs(path: Path) -> None:
    """CI runs them fresh; saved outputs would go stale (and could hold a token)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (path.name, cell.source)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
async def test_notebook_runs_against_a_real_server(
    path: Path, server: JupyterServer, api: SyncExecClient
) -> None:
    before = {info.process_id for info in api.list()}
    started = time.monotonic()
    nb = await run_notebook(server, server.root_dir / path.name)
    elapsed = time.monotonic() - started
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, ARTIFACTS / path.name)
    assert not error_outputs(nb)

    # Every process the notebook started has ended (the demos clean up after themselves).
    deadline = time.monotonic() + 10
    while True:
        left = [
            f"{info.process_id}: {info.argv}"
            for info in api.list()
            if info.process_id not in before and info.state == "running"
        ]
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not left, f"{path.name} left processes running: {left}"
    assert elapsed < 60, f"{path.name} took {elapsed:.0f}s; keep demos short"


def test_long_job_notebook_restarts_its_kernel() -> None:
    """The restart is part of the run (runner.py restarts at the tagged cell)."""
    nb = nbformat.read(REPO / "notebooks" / "02-long-job.ipynb", as_version=4)
    tagged = [c for c in nb.cells if RESTART_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1
