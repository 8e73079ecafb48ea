"""The real Codex with `sandbox_mode = "workspace-write"` and no network, through us.

Over the standalone ws server, inside Jupyter (`/api/exec/ws`) and over stdio
(Codex starts `jupyter-exec serve --listen stdio`), one command tries a write
in its cwd (allowed), a write outside it (denied), and a connection to a
loopback port (denied), as Codex's own exec-server does (docs/sandbox.md).

Its `apply_patch` writes through our `fs/*` with its `sandbox` object: a patch
inside the workspace lands; one outside is refused. Codex itself rejects a
path outside its project roots before asking us, so the patches that reach us
go out through symlinks inside the workspace, which only the server can see
through (recorded against Codex's own exec-server: it refuses them with
-32603 "Read-only file system", and so do we).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox.harness import needs_sandbox, outside_tmp

from .harness import Codex, RunningServer, point_at, processes
from .model_server import ScriptedModel, apply_patch, exec_command, tool_outputs

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
        server = None if transport == "stdio" else request.getfixturevalue(transport)
        url = point_at(codex, transport, server_root, server)
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


def patch(action: str, path: str, body: str = "") -> str:
    return f"*** Begin Patch\n*** {action} File: {path}\n{body}*** End Patch\n"


@pytest.mark.parametrize("transport", ["standalone", "jupyter"])
def test_codex_patches_land_in_the_workspace_only(
    codex: Codex, model: ScriptedModel, server_root: Path, transport: str,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    server: RunningServer = request.getfixturevalue(transport)
    workdir = server_root / f"patched-{transport}"
    (workdir / ".git").mkdir(parents=True)
    with outside_tmp() as outside:
        (outside / "victim.txt").write_text("victim\n")
        (workdir / "esc").symlink_to(outside)
        (workdir / "g").symlink_to(workdir / ".git")
        model.script(
            [
                [apply_patch(patch("Add", "inside.txt", "+inside\n"))],
                [apply_patch(patch("Add", "esc/out.txt", "+out\n"))],
                [apply_patch(patch("Add", "esc/new/out.txt", "+out\n"))],
                [apply_patch(patch("Update", "esc/victim.txt", "@@\n-victim\n+changed\n"))],
                [apply_patch(patch("Delete", "esc/victim.txt"))],
                [apply_patch(patch("Add", "g/pre-commit", "+hook\n"))],
                [apply_patch(patch("Add", f"{outside}/direct.txt", "+out\n"))],
            ]
        )
        codex.sandbox_mode = "workspace-write"
        result = codex.run(workdir, server.url)

        statuses = [c["status"] for c in result.items("file_change")]
        assert statuses == ["completed"] + ["failed"] * 5, result.describe()
        assert (workdir / "inside.txt").read_text() == "inside\n"
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
        assert (outside / "victim.txt").read_text() == "victim\n"
        assert list((workdir / ".git").iterdir()) == []
        outputs = tool_outputs(model.requests[-1])
    expected = [
        "Success. Updated the following files",
        f"Failed to write file {workdir}/esc/out.txt",
        f"Failed to create parent directories for {workdir}/esc/new/out.txt",
        f"Failed to write file {workdir}/esc/victim.txt",
        f"Failed to delete file {workdir}/esc/victim.txt",
        f"Failed to write file {workdir}/g/pre-commit",
        "patch rejected: writing outside of the project",  # Codex's own check, before us
    ]
    assert len(outputs) == len(expected), outputs
    for output, words in zip(outputs, expected, strict=True):
        assert words in output, outputs
