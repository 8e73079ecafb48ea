"""`--sandbox` on the CLI and the magics, `sandbox` on the MCP tools, `agent_sandbox` for agents.

Real fronts: the CLI as a subprocess against `jupyter-exec serve`, the magics
in a real IPython shell, the MCP tools through the real SDK client against a
real Jupyter server (whose default `agent_sandbox`, workspace-write, applies).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.magics.jupyter_process import BIN, JupyterServer, clean_env, jupyter_server
from tests.mcp.conftest import mcp_session, text_of
from tests.service import stop_process

from .harness import needs_sandbox, outside_tmp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
CLI = str(BIN / "jupyter-exec")


def test_cli_run_sandbox(tmp_path: Path) -> None:
    needs_sandbox()
    env = clean_env(tmp_path / "runtime")
    proc = subprocess.Popen([CLI, "serve", "--listen", "ws://127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([CLI, "--url", url, "run", *args], capture_output=True,
                                  text=True, env=env, cwd=tmp_path, timeout=60)  # fmt: skip

        touch = ["--", "bash", "-c", "touch made && echo made"]
        denied = run("--sandbox", "read-only", *touch)
        assert denied.returncode == 1 and "Permission denied" in denied.stderr
        assert not (tmp_path / "made").exists()
        allowed = run("--sandbox", "workspace-write:network-off", *touch)
        assert allowed.stdout == "made\n" and (tmp_path / "made").exists()
        bad = run("--sandbox", "strict", *touch)
        assert bad.returncode != 0 and "sandbox 'strict' is not one of" in bad.stderr
    finally:
        stop_process(proc)


def test_magics_exec_sandbox(tmp_path: Path) -> None:
    needs_sandbox()
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_exec")
    try:
        handle = shell.run_line_magic(
            "exec", f"--sandbox read-only --cwd {tmp_path} -- bash -c 'touch x; echo rc=$?'"
        )
        handle.wait(30)
        assert "rc=1" in handle.output and not (tmp_path / "x").exists()
        with pytest.raises(UsageError, match="sandbox 'loose' is not one of"):
            shell.run_line_magic("exec", "--sandbox loose -- true")
    finally:
        shell.run_line_magic("unload_ext", "jupyter_exec")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with jupyter_server(tmp_path_factory.mktemp("mcp-sandbox")) as running:
        yield running


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_agents_run_in_the_agent_sandbox(server: JupyterServer, transport: str) -> None:
    needs_sandbox()
    with outside_tmp() as outside:
        async with mcp_session(server, transport) as session:
            script = f"touch {server.root_dir}/by-{transport} {outside}/by-{transport}; echo rc=$?"
            result = await session.call_tool("run_command", {"command": script})
            assert "rc=1" in text_of(result) and "Permission denied" in text_of(result)
            assert (server.root_dir / f"by-{transport}").exists()  # the root is its workspace
            assert not (outside / f"by-{transport}").exists()
            stricter = await session.call_tool(
                "run_command", {"command": "touch ro-try; echo rc=$?", "sandbox": "read-only"}
            )
            assert "rc=1" in text_of(stricter) and not (server.root_dir / "ro-try").exists()
            listed = await session.call_tool("list_processes", {})
            assert not listed.is_error
