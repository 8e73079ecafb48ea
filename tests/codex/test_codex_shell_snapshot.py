"""The real Codex with `shell_snapshot_v2` runs its commands through our shell snapshots.

Codex 0.171 sends `shellSnapshot {scopeId: "THREAD:ENVIRONMENT", shell}` on
each `process/start` when `environment/info` offers `shellSnapshotV2` and its
feature is on (recorded in docs/codex.md). Over stdio Codex starts our server
with its own environment, so the ``HOME`` here (with a profile that logs each
sourcing) is the one both commands' shells start from: the profile runs once
for the thread, and both commands see what it set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Codex, stdio_environments_toml
from .model_server import ScriptedModel, exec_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROFILE = """echo profile >> "$HOME/sourced.log"
export FROM_PROFILE=profile-value
greet() { echo "greet $1"; }
echo profile-noise
"""


def test_codex_commands_share_one_profile_run(
    codex: Codex, model: ScriptedModel, server_root: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_profile").write_text(PROFILE)
    workdir = server_root / "snapshots"
    workdir.mkdir()
    show = 'echo "FP=$FROM_PROFILE"; greet x'
    model.script([[exec_command(show)], [exec_command(show)]])
    codex.environments_toml = stdio_environments_toml(server_root)
    codex.extra_config = "\n[features]\nshell_snapshot_v2 = true\n"
    codex.extra_env = {"HOME": str(home), "SHELL": "/bin/bash"}

    result = codex.run(workdir, exec_server_url=None)

    commands = result.items("command_execution")
    assert len(commands) == 2, result.describe()
    for command in commands:
        assert command["aggregated_output"] == "FP=profile-value\ngreet x\n", result.describe()
    assert (home / "sourced.log").read_text().split() == ["profile"]  # one capture, no more
