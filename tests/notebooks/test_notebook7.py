"""Notebook 7 (`jupyter notebook`), not only JupyterLab, keeps processes in its server.

One real Notebook 7 server (`notebook.app.JupyterNotebookApp`: 127.0.0.1, a
token, its own runtime dir and root). A kernel is made as Notebook 7's UI
makes it, for a notebook path through `POST api/sessions`; the magics start a
job there, the kernel is restarted through the server, and the new kernel
still lists the job and reads on in its output. The server's own REST API
lists the job with the notebook as its origin, and Notebook 7's page loads the
panel's labextension. The job and the session are ended at the end: nothing
is left running.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest

from tests.magics.jupyter_process import JupyterServer, Kernel, jupyter_server, outputs_text

pytestmark = pytest.mark.slow

NOTEBOOK = "work/analysis.ipynb"


class SessionKernel(Kernel):
    """The kernel of a notebook session, as Notebook 7 opens a notebook.

    Its UI sends the file's name as `name`; the server then gives the kernel
    `JPY_SESSION_NAME` = the kernel's cwd joined with it (an absolute path).
    """

    def __init__(self, server: JupyterServer, path: str) -> None:
        self.server = server
        name = path.rsplit("/", 1)[-1]
        self.session = server.request(
            "POST",
            "api/sessions",
            {"path": path, "type": "notebook", "name": name, "kernel": {"name": "python3"}},
        )
        self.id = self.session["kernel"]["id"]
        self.messages: list[dict[str, Any]] = []
        self.client = self._connect()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with jupyter_server(tmp_path_factory.mktemp("notebook7"), app="jupyter-notebook") as running:
        (running.root_dir / "work").mkdir()
        nbformat.write(nbformat.v4.new_notebook(), running.root_dir / NOTEBOOK)
        yield running


def _processes(server: JupyterServer) -> dict[str, dict[str, Any]]:
    return {p["processId"]: p for p in server.request("GET", "api/exec/processes")}


def _job_state(server: JupyterServer) -> str | None:
    job = _processes(server).get("job")
    return None if job is None else str(job["state"])


def test_the_server_is_notebook_7(server: JupyterServer) -> None:
    """The page at /tree is Notebook 7's, and it loads our labextension."""
    with urllib.request.urlopen(f"{server.url}tree?token={server.token}", timeout=60) as page:
        html = page.read().decode()
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      html, re.S)  # fmt: skip
    assert found, html[:2000]
    config = json.loads(found.group(1))
    assert config["appName"] == "Jupyter Notebook" and config["notebookPage"] == "tree", config
    names = [ext["name"] for ext in config["federated_extensions"]]
    assert "jupyter-exec" in names, names


def test_a_job_outlives_a_kernel_restart_in_notebook_7(server: JupyterServer) -> None:
    kernel = SessionKernel(server, NOTEBOOK)
    try:
        kernel.execute("%load_ext jupyter_exec")
        kernel.execute(
            "%exec --quiet --name job -- bash -c "
            "'i=0; while true; do i=$((i+1)); echo count $i; sleep 0.2; done'"
        )
        assert _job_state(server) == "running"

        kernel.restart()
        kernel.execute("%load_ext jupyter_exec")
        _, out = kernel.execute("%ps")
        assert re.search(r"job\b.*running", outputs_text(out)), outputs_text(out)
        time.sleep(0.6)  # a few more counts, written while no kernel read them
        _, out = kernel.execute("%read job")
        counts = [int(n) for n in re.findall(r"count (\d+)", outputs_text(out))]
        assert counts and counts == list(range(1, len(counts) + 1)), outputs_text(out)
        assert len(counts) >= 3, outputs_text(out)

        job = _processes(server)["job"]
        assert job["state"] == "running"
        notebook = str(server.root_dir / NOTEBOOK)
        assert job["origin"] == {"kind": "notebook", "name": notebook}, job

        _, out = kernel.execute("%terminate job")
        assert "terminating job" in outputs_text(out)
        deadline = time.monotonic() + 10
        while _job_state(server) == "running":
            assert time.monotonic() < deadline, _processes(server)["job"]
            time.sleep(0.1)
    finally:
        kernel.client.stop_channels()
        server.request("DELETE", f"api/sessions/{kernel.session['id']}")
    assert server.request("GET", "api/sessions") == []
    assert not [p for p in _processes(server).values() if p["state"] == "running"]
