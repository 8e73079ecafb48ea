"""Codex's ``apply_patch`` works wherever its commands run, on every transport (SPEC 4).

The real Codex CLI runs from a directory outside the server's root, over the
standalone ws server, inside Jupyter (``/api/exec/ws``) and over stdio (Codex
starts ``jupyter-exec serve --listen stdio`` itself from ``environments.toml``).
One Codex run per transport: it patches a file into a new directory below its
cwd, and a command in that cwd reads it back. A last run against a server with
``--confine-to-root`` shows that the patches really go through our ``fs/*``:
there, the same kind of patch outside the root fails (Codex shows only "Failed
to write file"; test_fs_access.py checks the message that names the setting).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .harness import Codex, point_at, standalone_server
from .model_server import ScriptedModel, apply_patch, exec_command, tool_outputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def add_file(path: str, line: str) -> str:
    return f"*** Begin Patch\n*** Add File: {path}\n+{line}\n*** End Patch\n"


@pytest.fixture
def elsewhere(server_root: Path, tmp_path: Path) -> Path:
    """Codex's cwd: a fresh directory outside the servers' root."""
    path = (tmp_path / "project").resolve()
    path.mkdir()
    assert not path.is_relative_to(server_root)
    return path


@pytest.mark.parametrize("transport", ["standalone", "jupyter", "stdio"])
def test_apply_patch_outside_the_root(
    codex: Codex,
    model: ScriptedModel,
    server_root: Path,
    elsewhere: Path,
    transport: str,
    request: pytest.FixtureRequest,
) -> None:
    marker = uuid.uuid4().hex
    model.script(
        [
            [apply_patch(add_file("notes/added.txt", f"patched {marker}"))],
            [exec_command("cat notes/added.txt; pwd")],
        ]
    )
    server = None if transport == "stdio" else request.getfixturevalue(transport)
    url = point_at(codex, transport, server_root, server)

    result = codex.run(elsewhere, url)

    changes = result.items("file_change")
    assert [c["status"] for c in changes] == ["completed"], result.describe()
    assert (elsewhere / "notes" / "added.txt").read_text() == f"patched {marker}\n"
    commands = result.items("command_execution")
    assert len(commands) == 1, result.describe()
    # Its login shell may say first that it cannot write outside the root: agents run
    # in `agent_sandbox` (workspace-write of the root) by default.
    assert commands[0]["aggregated_output"].endswith(f"patched {marker}\n{elsewhere}\n")


def test_confined_server_refuses_patches_outside_the_root(
    codex: Codex, model: ScriptedModel, server_root: Path, tmp_path: Path
) -> None:
    """Codex may write anywhere itself (danger-full-access): only our fs/* refuses here."""
    workdir = server_root / f"confined-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    escape = tmp_path / "escape.txt"
    model.script(
        [
            [apply_patch(add_file("inside.txt", "inside"))],
            [apply_patch(add_file(str(escape), "nope"))],
        ]
    )
    with standalone_server(server_root, "--confine-to-root") as server:
        result = codex.run(workdir, server.url)

    changes = result.items("file_change")
    assert [c["status"] for c in changes] == ["completed", "failed"], result.describe()
    assert (workdir / "inside.txt").read_text() == "inside\n"
    assert not escape.exists()
    first, second = tool_outputs(model.requests[-1])
    assert "Success" in first, first
    assert f"Failed to write file {escape}" in second, second
