"""The real Codex CLI (0.171) as MCP host: `jupyter-exec mcp` on stdio, README's config.

A scripted model on loopback drives Codex: it waits one turn (Codex starts its
MCP servers after the first model request may have gone out), finds our tools
with Codex's `tool_search` (0.171 defers MCP tools behind it), then calls
`mcp__jupyter` `run_command`. The command runs in the module's Jupyter server.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.codex.harness import VENV_BIN, Codex, install_codex
from tests.codex.model_server import ScriptedModel, exec_command, last_output

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def codex_mcp_config(url: str, token: str) -> str:
    """README "From an agent (MCP)", with this test's server."""
    return f"""
[features]
tool_search_always_defer_mcp_tools = false

[mcp_servers.jupyter]
command = {json.dumps(str(VENV_BIN / "jupyter-exec"))}
args = ["mcp"]
env = {{ JUPYTER_EXEC_URL = {json.dumps(url)}, JUPYTER_EXEC_TOKEN = {json.dumps(token)} }}
"""


def search_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    assert "mcp__jupyter" in json.dumps(body), "Codex did not list the jupyter MCP server"
    arguments = {"query": "jupyter run command", "limit": 8}
    call = {"type": "tool_search_call", "id": "ts_1", "call_id": "call_ts_1"}
    return [{**call, "execution": "client", "arguments": arguments, "status": "completed"}]


def run_command(command: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_run",
        "call_id": "call_run",
        "namespace": "mcp__jupyter",
        "name": "run_command",
        "arguments": json.dumps({"command": command}),
        "status": "completed",
    }


def test_codex_runs_a_command_through_jupyter_exec_mcp(server, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    with ScriptedModel() as model:
        codex = Codex(install_codex(), tmp_path / "codex-home", model.base_url)
        codex.extra_config = codex_mcp_config(server.url, server.token)
        model.script(
            [
                [exec_command("sleep 2")],  # a turn for Codex's MCP servers to start
                search_tools,
                [run_command(f"echo {marker}-$((6*7)); exit 5")],
            ]
        )
        result = codex.run(tmp_path, None)
        final = model.requests[-1]
    assert len(model.requests) == 4, result.describe()
    answer = last_output(final)
    assert f"{marker}-42" in answer and '"exit_code":5' in answer.replace(" ", ""), answer
    ours = [p for p in server.request("GET", "api/exec/processes") if marker in " ".join(p["argv"])]
    assert len(ours) == 1 and ours[0]["exitCode"] == 5 and ours[0]["label"].startswith("mcp: ")
