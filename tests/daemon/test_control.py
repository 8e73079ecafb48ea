"""daemon/control.py against a real daemon: one call, a stop that keeps the processes,
a shutdown that ends them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jupyter_exec.daemon import paths
from jupyter_exec.daemon.control import (
    call_daemon,
    listening,
    shutdown_daemon_and_processes,
    stop_daemon_keeping_processes,
)
from jupyter_exec.daemon.start import ensure_daemon
from jupyter_exec.wire.errors import DaemonHandshakeError
from tests.daemon.harness import daemon_pid, wait_gone
from tests.daemon.test_daemon import client
from tests.service import pid_alive, py

SLEEPER = py("import time; time.sleep(600)")


async def _start_sleeper(runtime: Path) -> int:
    c = await client(runtime)
    try:
        await c.start("sleeper", SLEEPER)
        (info,) = await c.list()
        assert info.pid is not None
        return info.pid
    finally:
        await c.close()


async def _state(runtime: Path, process_id: str) -> str:
    c = await client(runtime)
    try:
        return next(p.state for p in await c.list() if p.process_id == process_id)
    finally:
        await c.close()


def test_no_daemon_is_none_and_false(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"
    assert call_daemon(path, "process/list", {}) is None
    assert stop_daemon_keeping_processes(path, "a test") is False
    assert shutdown_daemon_and_processes(path) is False


def test_one_call_answers_and_permissions_hold(runtime: Path) -> None:
    sock = ensure_daemon(runtime)
    answer = call_daemon(sock, "daemon/settings", {}, allowed_actions=["read"])
    assert answer is not None and answer["result"]["pid"] == daemon_pid(runtime), answer
    refused = call_daemon(sock, "daemon/shutdown", {}, allowed_actions=["read"])
    assert refused is not None and "needs the execute permission" in refused["error"]["message"]
    assert listening(sock) and daemon_pid(runtime) == answer["result"]["pid"]  # still serving


def test_stop_keeps_the_processes_and_shutdown_ends_them(runtime: Path) -> None:
    sock = ensure_daemon(runtime)
    pid = asyncio.run(_start_sleeper(runtime))
    first = daemon_pid(runtime)
    assert first is not None
    assert stop_daemon_keeping_processes(sock, "a test of control.py") is True
    assert not listening(sock) and wait_gone([first])
    assert pid_alive(pid)  # kept by the holder
    sock = ensure_daemon(runtime)  # the next daemon takes it over
    assert daemon_pid(runtime) != first
    assert asyncio.run(_state(runtime, "sleeper")) == "running"
    assert shutdown_daemon_and_processes(sock) is True
    assert wait_gone([pid]) and not listening(sock)
    assert shutdown_daemon_and_processes(sock) is False  # none running any more


def test_a_hello_of_another_protocol_is_a_handshake_error(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = ensure_daemon(runtime)
    monkeypatch.setattr(paths, "daemon_protocol", lambda: 0)
    with pytest.raises(DaemonHandshakeError, match="not 0"):
        call_daemon(sock, "process/list", {})
    assert stop_daemon_keeping_processes(sock, "refused") is False
    monkeypatch.undo()
    assert listening(sock)  # the refused stop changed nothing
