"""`jupyter-exec mcp` on stdio with no server: an agent's processes go to the user's exec
daemon (SPEC 10, SPEC 3 "Every front") and outlive the agent's session."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.daemon.harness import daemons_stopped
from tests.magics.jupyter_process import clean_env

from .conftest import BIN, stdio_session, text_of

pytestmark = pytest.mark.slow


async def test_an_agents_process_outlives_its_session(tmp_path: Path) -> None:
    runtime, work = tmp_path / "runtime", tmp_path / "work"
    work.mkdir()
    env = clean_env(runtime)
    notices = tmp_path / "stderr.txt"
    with daemons_stopped(runtime):
        async with stdio_session(["mcp"], env, notices, cwd=work) as s:
            r = await s.call_tool(
                "start_process",
                {"command": "pwd; echo ready; sleep 300", "process_id": "agent-job",
                 "wait_for": "ready"},
            )  # fmt: skip
            assert not r.is_error, text_of(r)
            # No cwd given: the root is the agent host's cwd, as for a shell.
            assert r.structured_content["output"] == f"{work}\nready\n"
        assert "processes run in this user's exec daemon" in notices.read_text()
        # The session and its `jupyter-exec mcp` are gone; the process is not.
        ps = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "jupyter-exec"), "ps", "--json"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert ps.returncode == 0, ps.stderr
        job = {p["processId"]: p for p in json.loads(ps.stdout)}["agent-job"]
        assert job["state"] == "running"
        os.kill(job["pid"], 0)


async def test_with_no_usable_runtime_dir_it_runs_them_itself_and_says_why(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("a runtime dir cannot be under a file, even for root")
    notices = tmp_path / "stderr.txt"
    async with stdio_session(["mcp"], clean_env(tmp_path / "file" / "rt"), notices) as s:
        r = await s.call_tool("run_command", {"command": "echo inside"})
        assert r.structured_content["output"] == "inside\n"
    said = notices.read_text()
    assert said.count("no exec daemon can run here (cannot use the runtime dir") == 1, said
    assert "processes run in this process and end with it" in said


def test_embedded_and_a_url_exclude_each_other(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "jupyter-exec"), "mcp", "--embedded", "--url", "http://127.0.0.1:9/"],
        capture_output=True, text=True, env=clean_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--embedded and --url exclude each other" in done.stderr
    assert not list(tmp_path.glob("jupyter-exec-*"))  # nothing was started
