"""A process the next exec daemon lists after a crash keeps its sandbox in the list.

A real daemon runs a sandboxed process that has exited and one still running;
the daemon is killed (SIGKILL) and the next one takes them over: the exited
one from its record (daemon/persist.py), the running one from the holder.
Each must list the sandbox it ran in, as it did before, and the running one,
in its PID namespace, must still end with its own exit code.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.client import ExecClient
from jupyter_exec.client.unix_transport import connect_daemon, daemon_front
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import ensure_daemon
from tests.daemon.harness import daemons_stopped, kill_daemon

from .harness import needs_sandbox

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runtime() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jx-sbx-daemon-"))
    with daemons_stopped(path):
        yield path
    shutil.rmtree(path, ignore_errors=True)


async def client(runtime: Path) -> ExecClient:
    front = daemon_front("the recovery tests")
    return await connect_daemon(paths.socket_path(runtime), front=front)


def test_a_recovered_process_lists_its_sandbox(runtime: Path, tmp_path: Path) -> None:
    needs_sandbox()
    ensure_daemon(runtime)
    sandbox = {"mode": "workspace-write", "network": False, "writableRoots": [str(tmp_path)]}

    async def start() -> dict[str, object]:
        c = await client(runtime)
        await c.start("done", ["true"], cwd=str(tmp_path), sandbox=sandbox)
        wait_then_5 = "while [ ! -e go ]; do sleep 0.05; done; exit 5"
        await c.start("running", ["sh", "-c", wait_then_5], cwd=str(tmp_path), sandbox="read-only")
        await c.wait("done", timeout=30)
        await asyncio.sleep(0.5)  # records are written a moment later (persist.FLUSH_SECONDS)
        listed = {p.process_id: p.sandbox for p in await c.list()}
        await c.close()
        return listed

    before = asyncio.run(start())
    done, running = before["done"], before["running"]
    assert isinstance(done, dict) and str(tmp_path.resolve()) in done["writableRoots"]
    assert (done["mode"], done["network"]) == ("workspace-write", False)
    assert running == {"mode": "read-only", "network": True, "writableRoots": []}
    kill_daemon(runtime)
    ensure_daemon(runtime)

    async def after() -> tuple[dict[str, object], int | None]:
        c = await client(runtime)
        listed = {p.process_id: p.sandbox for p in await c.list()}
        (tmp_path / "go").touch()
        code = (await c.wait("running", timeout=30)).exit_code
        await c.close()
        return listed, code

    assert asyncio.run(after()) == (before, 5)
