"""The real Codex CLI uses jupyter-exec as its remote executor, unchanged (SPEC 9).

Codex runs ``codex exec --json`` with a scripted model on loopback (see
``model_server``). Every check looks at what Codex reports (its JSON events)
and at effects on our side (files, our registry), never at Codex's exit code:
Codex exits 0 even when it cannot reach the executor.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from .harness import Codex, RunningServer, processes, stdio_environments_toml
from .model_server import (
    ScriptedModel,
    exec_command,
    last_output,
    session_id_in,
    tool_outputs,
    write_stdin,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def call_id_of(item: dict[str, Any]) -> str:
    return str(item["call_id"])


def test_pipe_command_runs_in_our_registry(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    marker = uuid.uuid4().hex
    call = exec_command(f"echo {marker}-$((6*7)); echo to-stderr >&2; pwd > where.txt")
    model.script([[call]])

    result = codex.run(workdir, server.url)

    commands = result.items("command_execution")
    assert len(commands) == 1, result.describe()
    assert f"{marker}-42" in commands[0]["aggregated_output"]
    assert "to-stderr" in commands[0]["aggregated_output"]
    assert commands[0]["exit_code"] == 0 and commands[0]["status"] == "completed"
    assert (workdir / "where.txt").read_text().strip() == str(workdir)
    # the process is ours: our registry lists it, labelled from Codex's metadata
    ours = [p for p in processes(server.url) if marker in " ".join(p["argv"])]
    assert len(ours) == 1, processes(server.url)
    assert call_id_of(call) in (ours[0]["label"] or "")
    assert ours[0]["tty"] is False
    assert ours[0]["exitCode"] == 0


def test_interactive_python_in_a_tty(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    seen_running: list[dict[str, Any]] = []

    def ask(body: dict[str, Any]) -> list[dict[str, Any]]:
        # Codex is waiting for the model while python3 runs: it must be in our list.
        seen_running.extend(p for p in processes(server.url) if "python3 -i" in " ".join(p["argv"]))
        return [write_stdin(session_id_in(last_output(body)), "print(6*7)\n")]

    def leave(body: dict[str, Any]) -> list[dict[str, Any]]:
        return [write_stdin(session_id_in(tool_outputs(body)[0]), "exit()\n")]

    model.script([[exec_command("python3 -i -q", tty=True, yield_time_ms=1500)], ask, leave])

    result = codex.run(workdir, server.url)

    outputs = tool_outputs(model.requests[-1])
    assert len(outputs) == 3, result.describe()
    assert "Process running with session ID" in outputs[0], outputs
    assert "42" in outputs[1], outputs
    running = [p for p in seen_running if p["state"] == "running"]
    assert running and running[0]["tty"] is True, seen_running
    commands = result.items("command_execution")
    assert len(commands) == 1 and "42" in commands[0]["aggregated_output"], result.describe()


def test_agents_md_is_found(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path
) -> None:
    marker = f"Project rule {uuid.uuid4().hex}"
    (workdir / "AGENTS.md").write_text(f"{marker}\n")
    model.script([])  # no tool call: we only look at what Codex sends the model

    result = codex.run(workdir, server.url)

    assert model.requests, result.describe()
    assert marker in json.dumps(model.requests[0]["input"]), result.describe()


def test_stdio_through_environments_toml(
    codex: Codex, model: ScriptedModel, server_root: Path, tmp_path: Path
) -> None:
    """Codex starts ``jupyter-exec serve --listen stdio`` itself (environments.toml)."""
    workdir = server_root / f"stdio-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    (workdir / "AGENTS.md").write_text("stdio rule\n")
    marker = uuid.uuid4().hex
    model.script([[exec_command(f"echo {marker} over stdio")]])
    codex.environments_toml = stdio_environments_toml(server_root)

    result = codex.run(workdir, exec_server_url=None)

    commands = result.items("command_execution")
    assert len(commands) == 1, result.describe()
    assert f"{marker} over stdio" in commands[0]["aggregated_output"]
    assert "stdio rule" in json.dumps(model.requests[0]["input"])


@pytest.mark.parametrize("token", ["wrong-token", ""])
def test_wrong_token_is_refused(
    codex: Codex, model: ScriptedModel, server: RunningServer, workdir: Path, token: str
) -> None:
    url = server.url.replace(f"token={server.token}", f"token={token}")
    assert url != server.url
    model.script([[exec_command("touch must-not-exist.txt")]])

    result = codex.run(workdir, url)

    assert not (workdir / "must-not-exist.txt").exists(), result.describe()
    assert all(c["status"] != "completed" for c in result.items("command_execution"))
    # Codex did try: the model's call came back without an environment to run it in
    assert "No usable execution environment" in last_output(model.requests[-1])
    assert not any("must-not-exist" in " ".join(p["argv"]) for p in processes(server.url))
