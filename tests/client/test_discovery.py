"""discovery.py against a temporary runtime directory with real server records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.client.discovery import find_server, running_servers, server_url


@pytest.fixture
def other_process() -> Iterator[int]:
    """A live pid that is not ours (a record must name a running process)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def write_record(directory: Path, pid: int, port: int, **extra: object) -> None:
    record = {
        "base_url": "/", "hostname": "127.0.0.1", "pid": pid, "port": port, "secure": False,
        "token": f"tok-{port}", "root_dir": "/", "url": f"http://127.0.0.1:{port}/",
    }  # fmt: skip
    record.update(extra)
    (directory / f"jpserver-{pid}-{port}.json").write_text(json.dumps(record))


def test_explicit_url_wins_and_finds_its_token(tmp_path: Path, other_process: int) -> None:
    write_record(tmp_path, other_process, 8888)
    target = find_server("http://localhost:8888/", environ={}, runtime_dir=tmp_path)
    assert target is not None
    assert (target.url, target.token, target.source) == (
        "http://localhost:8888/",
        "tok-8888",
        "explicit",
    )


def test_environment_beats_the_kernel_parent(tmp_path: Path, other_process: int) -> None:
    write_record(tmp_path, other_process, 8888)
    env = {
        "JUPYTER_EXEC_URL": "ws://127.0.0.1:9/ws",
        "JUPYTER_EXEC_TOKEN": "t",
        "JPY_PARENT_PID": str(other_process),
    }
    target = find_server(environ=env, runtime_dir=tmp_path)
    assert target is not None
    assert (target.url, target.token, target.source) == ("ws://127.0.0.1:9/ws", "t", "environment")


def test_kernel_parent_pid_selects_its_server(tmp_path: Path, other_process: int) -> None:
    write_record(tmp_path, os.getpid(), 7000)
    write_record(tmp_path, other_process, 8888, base_url="/user/me/")
    target = find_server(environ={"JPY_PARENT_PID": str(other_process)}, runtime_dir=tmp_path)
    assert target is not None
    assert target.url == "http://127.0.0.1:8888/user/me/"
    assert target.token == "tok-8888"
    assert target.source == "kernel-parent"


def test_no_parent_means_embedded_for_magics_but_any_server_for_the_cli(
    tmp_path: Path, other_process: int
) -> None:
    write_record(tmp_path, other_process, 8888, root_dir=str(tmp_path))
    assert find_server(environ={}, runtime_dir=tmp_path) is None
    target = find_server(environ={}, runtime_dir=tmp_path, any_server=True, cwd=str(tmp_path))
    assert target is not None and target.source == "running"


def test_records_of_dead_servers_are_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_record(tmp_path, dead.pid, 8888)
    (tmp_path / "jpserver-garbage.json").write_text("{not json")
    assert running_servers(tmp_path) == []
    assert find_server(environ={"JPY_PARENT_PID": str(dead.pid)}, runtime_dir=tmp_path) is None


def test_jupyter_terminal_url_and_hub_token(tmp_path: Path, other_process: int) -> None:
    write_record(tmp_path, other_process, 8888, token="")
    env = {"JUPYTER_SERVER_URL": "http://localhost:8888/", "JUPYTERHUB_API_TOKEN": "hub"}
    target = find_server(environ=env, runtime_dir=tmp_path)
    assert target is not None
    assert (target.source, target.token) == ("terminal", "hub")


def test_standalone_record_is_found_by_the_cli(tmp_path: Path, other_process: int) -> None:
    record = {"pid": other_process, "url": "ws://127.0.0.1:5555/", "token": "s"}
    (tmp_path / f"jpexec-{other_process}.json").write_text(json.dumps(record))
    target = find_server(environ={}, runtime_dir=tmp_path, any_server=True)
    assert target is not None
    assert (target.url, target.token, target.source) == ("ws://127.0.0.1:5555/", "s", "standalone")


@pytest.mark.parametrize(
    ("record", "url"),
    [
        ({"hostname": "0.0.0.0", "port": 1, "base_url": "/"}, "http://127.0.0.1:1/"),
        ({"hostname": "::1", "port": 2, "base_url": "x", "secure": True}, "https://[::1]:2/x/"),
        ({"hostname": "localhost", "port": 3}, "http://localhost:3/"),
    ],
)
def test_server_url(record: dict[str, object], url: str) -> None:
    assert server_url(record) == url
