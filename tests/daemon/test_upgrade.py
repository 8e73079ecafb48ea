"""Upgrades never kill work: a front meeting an older daemon starts its own beside it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from jupyter_exec.client.unix_transport import DaemonHandshakeError, connect_daemon
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import ensure_daemon
from tests.daemon.harness import (
    daemon_pid,
    daemon_settings,
    daemons_stopped,
    start_server,
    wait_gone,
)


@pytest.mark.timeout(120)
def test_a_newer_front_leaves_an_older_daemon_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jx-upgrade-"))
    runtime = tmp / "runtime"
    with daemons_stopped(runtime, 0, paths.DAEMON_PROTOCOL):
        # An "older" package: protocol 0, the same runtime dir.
        monkeypatch.setenv(paths.PROTOCOL_ENV, "0")
        settings = {"daemon_idle_seconds": 0.5, "exited_retention_seconds": 0.5}
        daemon_settings(monkeypatch, tmp / "old-config", **settings)
        old_socket = ensure_daemon(runtime)
        assert old_socket.name == "jupyter-exec-d0.sock"
        old = daemon_pid(runtime, 0)
        asyncio.run(_start_old_job(old_socket))
        monkeypatch.delenv(paths.PROTOCOL_ENV)
        monkeypatch.delenv("JUPYTER_CONFIG_DIR")

        # The old daemon refuses the new protocol in its handshake...
        with pytest.raises(DaemonHandshakeError, match="speaks protocol 0, not 1"):
            asyncio.run(connect_daemon(old_socket))
        # ...so the newer Jupyter server starts a daemon of its own beside it.
        server = start_server(tmp)
        try:
            server.request("POST", "api/exec/processes", {"processId": "new", "argv": ["true"]})
            new = daemon_pid(runtime, paths.DAEMON_PROTOCOL)
            assert new is not None and old is not None and new != old
            listed = server.request("GET", "api/exec/processes")
            assert [p["processId"] for p in listed] == ["new"]
            # The old job keeps running and finishes; then its idle daemon leaves.
            assert daemon_pid(runtime, 0) == old
            (tmp / "gate").touch()
            assert wait_gone([old], 30)
            assert (tmp / "job-done").read_text() == "finished"
            assert daemon_pid(runtime, paths.DAEMON_PROTOCOL) == new
        finally:
            server.proc.terminate()
            server.proc.wait(30)


async def _start_old_job(sock: Path) -> None:
    client = await connect_daemon(sock)
    tmp = sock.parent.parent
    script = (
        f"while [ ! -e {tmp / 'gate'} ]; do sleep 0.05; done; printf finished > {tmp / 'job-done'}"
    )
    await client.start("old-job", ["sh", "-c", script], lifetime="detached")
    await client.close()
