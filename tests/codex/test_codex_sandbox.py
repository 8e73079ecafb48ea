"""The real Codex with `sandbox_mode = "workspace-write"` and no network, through us.

Over the standalone ws server, inside Jupyter (`/api/exec/ws`) and over stdio
(Codex starts `jupyter-exec serve --listen stdio`), one command tries a write
in its cwd (allowed), a write outside it (denied), and a connection to a
loopback port (denied), as Codex's own exec-server does (docs/sandbox.md).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.harness import needs_sandbox, outside_tmp

from .harness import Codex, RunningServer, processes, stdio_environments_toml
from .model_server import ScriptedModel, exec_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.parametrize("transport", ["standalone", "jupyter", "stdio"])
def test_codex_workspace_write_without_network(
    codex: Codex,
    model: ScriptedModel,
    server_root: Path,
    listener: int,
    transport: str,
    request: pytest.FixtureRequest,
) -> None:
    needs_sandbox()
    workdir = server_root / f"sandboxed-{transport}"
    workdir.mkdir()
    connect = f"import socket; socket.create_connection(('127.0.0.1', {listener}), timeout=5)"
    with outside_tmp() as outside:
        model.script(
            [[exec_command(
                f"echo in > inside.txt; echo out > {outside}/outside.txt;"
                f" {sys.executable} -c \"{connect}\" 2>&1 | tail -1; echo end"
            )]]
        )  # fmt: skip
        codex.sandbox_mode = "workspace-write"  # network_access is off by default
        url = None
        if transport == "stdio":
            codex.environments_toml = stdio_environments_toml(server_root)
        else:
            server: RunningServer = request.getfixturevalue(transport)
            url = server.url
        result = codex.run(workdir, url)

        commands = result.items("command_execution")
        assert len(commands) == 1, result.describe()
        output = commands[0]["aggregated_output"]
        assert (workdir / "inside.txt").read_text() == "in\n", output
        assert not (outside / "outside.txt").exists(), output
        assert f"{outside}/outside.txt: Permission denied" in output
        assert "PermissionError: [Errno 13] Permission denied" in output
        assert output.endswith("end\n")
    if url is not None:
        ours = [p for p in processes(url) if (p.get("label") or "").startswith("codex:")]
        sandbox = ours[-1]["sandbox"]
        assert sandbox["mode"] == "workspace-write" and sandbox["network"] is False
        assert str(workdir) in sandbox["writableRoots"]
