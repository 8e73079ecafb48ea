"""Codex's `auth_bearer_token` (environments.toml) authenticates it to our servers.

Codex 0.171 sends an environment's `auth_bearer_token` as `Authorization:
Bearer TOKEN` on its websocket handshake, so the URL can go without
`?token=`. Both fronts accept it: the standalone server and Jupyter (whose
identity provider takes `token` or `bearer`). A wrong token gets no command
run.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .harness import Codex, RunningServer, processes
from .model_server import ScriptedModel, exec_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def bearer_environments_toml(server: RunningServer, token: str) -> str:
    bare_url = server.url.split("?", 1)[0]
    return f"""\
default = "remote"
include_local = false

[[environments]]
id = "remote"
url = {json.dumps(bare_url)}
auth_bearer_token = {json.dumps(token)}
"""


def test_codex_authenticates_with_auth_bearer_token(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    marker = uuid.uuid4().hex
    model.script([[exec_command(f"echo {marker}-$((6*7))")]])
    codex.environments_toml = bearer_environments_toml(server, server.token)

    result = codex.run(workdir, None)

    commands = result.items("command_execution")
    assert len(commands) == 1, result.describe()
    assert f"{marker}-42" in commands[0]["aggregated_output"], result.describe()
    ours = [p for p in processes(server.url) if marker in " ".join(p["argv"])]
    assert len(ours) == 1, processes(server.url)


def test_a_wrong_bearer_token_runs_nothing(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    marker = uuid.uuid4().hex
    model.script([[exec_command(f"echo {marker}")]])
    codex.environments_toml = bearer_environments_toml(server, "not-" + server.token)

    result = codex.run(workdir, None)

    assert not any(
        marker in c.get("aggregated_output", "") for c in result.items("command_execution")
    ), result.describe()
    assert not [p for p in processes(server.url) if marker in " ".join(p["argv"])]
