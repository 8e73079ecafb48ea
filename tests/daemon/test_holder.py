"""SPEC 3: no process is lost to the exec daemon. Its holder keeps them across its death."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_exec._version import __version__
from jupyter_exec.client import ExecClient
from jupyter_exec.daemon import paths, sockets
from jupyter_exec.daemon.holder import receive, send
from jupyter_exec.daemon.start import ensure_daemon, holder_request
from tests.daemon.harness import (
    daemon_pid,
    daemon_settings,
    holder_pid,
    kill_daemon,
    wait_gone,
)
from tests.daemon.test_daemon import client, numbered, read_all, try_as_nobody
from tests.daemon.test_server_restart import COUNTER
from tests.magics.jupyter_process import BIN, clean_env
from tests.service import pid_alive, tree_of


async def seqs(c: ExecClient, process_id: str) -> list[int]:
    out, after = [], 0
    while chunks := (await c.read(process_id, after)).chunks:
        out += [ch.seq for ch in chunks]
        after = chunks[-1].seq
    return out


async def wait_for(c: ExecClient, process_id: str, needle: bytes) -> bytes:
    for _ in range(200):
        data = await read_all(c, process_id)
        if needle in data:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} never came: {data!r}")


@pytest.mark.timeout(120)
def test_a_killed_daemon_loses_no_process_and_no_byte(runtime: Path) -> None:
    ensure_daemon(runtime)
    holder = holder_pid(runtime)

    async def start() -> tuple[dict[str, int], list[int]]:
        c = await client(runtime)
        await c.start("pipe", [sys.executable, "-c", COUNTER])
        await c.start("tty", ["cat"], tty=True)
        await c.start("late", ["sh", "-c", "echo before; sleep 1; echo after; exit 7"])
        await c.start("done", ["sh", "-c", "echo finished; exit 3"])
        await c.wait("done", timeout=30)
        await c.write("tty", b"one\n")
        await wait_for(c, "tty", b"one\r\none\r\n")
        pids = {p.process_id: p.pid for p in await c.list()}
        printed = numbered(await read_all(c, "pipe"))
        await c.close()
        return pids, printed

    pids, printed = asyncio.run(start())
    tree = tree_of(pids["pipe"]) | tree_of(pids["tty"])
    kill_daemon(runtime)
    time.sleep(1.5)  # the counter goes on printing, "late" exits: no daemon is up
    assert all(pid_alive(p) for p in tree)
    assert holder_pid(runtime) == holder

    ensure_daemon(runtime)

    async def check() -> None:
        c = await client(runtime)
        listed = {p.process_id: p for p in await c.list()}
        assert {k: p.pid for k, p in listed.items()} == pids
        assert {k: p.state for k, p in listed.items()} == {
            "pipe": "running", "tty": "running", "late": "closed", "done": "closed",
        }  # fmt: skip
        assert (listed["late"].exit_code, listed["done"].exit_code) == (7, 3)
        assert await read_all(c, "late") == b"before\nafter\n"
        # Every line, from seq 1 with no gap: the ones printed while no daemon was up too.
        got = numbered(await read_all(c, "pipe"))
        assert got == list(range(len(got))) and len(got) > len(printed) + 20
        chunk_seqs = await seqs(c, "pipe")
        assert chunk_seqs == list(range(1, len(chunk_seqs) + 1))
        # The tty still echoes, and its seqs go on from the old daemon's.
        await c.write("tty", b"two\n")
        assert (await wait_for(c, "tty", b"two\r\ntwo\r\n")).startswith(b"one\r\none\r\n")
        tty_seqs = await seqs(c, "tty")
        assert tty_seqs == list(range(1, len(tty_seqs) + 1))
        # Stopping works as for the daemon's own children.
        for name in ("pipe", "tty"):
            assert await c.terminate(name)
            assert (await c.wait(name, timeout=30)).exit_code == 143
        await c.close()

    asyncio.run(check())
    assert wait_gone(tree)
    _shutdown(runtime)
    assert holder is not None and wait_gone([holder])  # nothing held, no daemon: it exits


def _shutdown(runtime: Path) -> None:
    cli = subprocess.run(
        [str(BIN / "jupyter-exec"), "shutdown"],
        capture_output=True, text=True, env=clean_env(runtime), timeout=60,
    )  # fmt: skip
    assert cli.stdout == "stopped every process and the exec daemon\n", cli.stderr


@pytest.mark.timeout(120)
def test_stop_and_restart_leave_processes_running(runtime: Path) -> None:
    ensure_daemon(runtime)

    async def start() -> int:
        c = await client(runtime)
        origin = {"kind": "notebook", "name": "work/a.ipynb"}
        await c.start("pipe", [sys.executable, "-c", COUNTER], origin=origin)
        (info,) = await c.list()
        await c.close()
        return info.pid

    pid = asyncio.run(start())
    first = daemon_pid(runtime)
    assert first is not None

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "jupyter-exec"), "daemon", *args],
            capture_output=True, text=True, env=clean_env(runtime), timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    status = cli("status")
    assert f"daemon   pid {first}, version {__version__} (protocol 1)" in status
    assert "1 processes (1 running)" in status and "holding 1 processes" in status
    assert f"started  daemon {first}: first use" in status

    # SIGTERM stops the daemon only.
    os.kill(first, signal.SIGTERM)
    assert wait_gone([first]) and pid_alive(pid)
    assert "daemon   none running" in cli("status")
    ensure_daemon(runtime)
    second = daemon_pid(runtime)
    assert cli("stop").startswith(f"stopped the exec daemon {second}")
    assert second is not None and wait_gone([second]) and pid_alive(pid)
    assert cli("restart").startswith("restarted: the exec daemon")
    third = daemon_pid(runtime)
    assert third not in (None, first, second)
    assert "restarted by `jupyter exec daemon restart`" in cli("status")

    async def check() -> None:
        c = await client(runtime)
        (info,) = await c.list()
        assert (info.pid, info.state) == (pid, "running")
        assert info.origin == {"kind": "notebook", "name": "work/a.ipynb"}  # kept by the holder
        got = numbered(await read_all(c, "pipe"))
        assert got == list(range(len(got)))
        await c.close()

    asyncio.run(check())
    holder = holder_pid(runtime)
    _shutdown(runtime)
    assert third is not None and holder is not None and wait_gone([pid, third, holder])
    assert cli("status") == "daemon   none running\nholder   none running\n"


@pytest.mark.timeout(60)
def test_idle_exit_keeps_finished_processes_on_disk(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exited processes, kept for an hour, no longer keep the daemon up for that hour.
    settings = {"daemon_idle_seconds": 1, "exited_retention_seconds": 3600}
    daemon_settings(monkeypatch, runtime / "config", **settings)
    ensure_daemon(runtime)
    daemon, holder = daemon_pid(runtime), holder_pid(runtime)

    async def start() -> None:
        c = await client(runtime)
        await c.start(
            "done", ["sh", "-c", "echo kept; exit 4"], origin={"kind": "cli", "name": "x"}
        )
        await c.wait("done", timeout=30)
        await c.close()

    asyncio.run(start())
    assert wait_gone([daemon or 0, holder or 0], 15)
    assert len(list((paths.state_dir(runtime) / "procs").glob("*.json"))) == 1

    ensure_daemon(runtime)

    async def check() -> None:
        c = await client(runtime)
        (info,) = await c.list()
        assert (info.process_id, info.state, info.exit_code) == ("done", "closed", 4)
        assert info.origin == {"kind": "cli", "name": "x"}  # kept in its record
        assert await read_all(c, "done") == b"kept\n"
        await c.close()

    asyncio.run(check())


@pytest.mark.timeout(120)
def test_a_newer_daemon_adopts_an_older_ones_processes(
    runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.VERSION_ENV, "0.0.9")  # an "older" installed version
    ensure_daemon(runtime)
    old = daemon_pid(runtime)
    assert json.loads(paths.record_path(runtime).read_text())["version"] == "0.0.9"

    async def start() -> int:
        c = await client(runtime)
        await c.start("job", [sys.executable, "-c", COUNTER])
        await asyncio.sleep(0.5)
        (info,) = await c.list()
        await c.close()
        return info.pid

    pid = asyncio.run(start())
    monkeypatch.delenv(paths.VERSION_ENV)
    ensure_daemon(runtime)  # this package is newer: the old daemon hands over
    new = daemon_pid(runtime)
    assert new not in (None, old) and old is not None and wait_gone([old])
    assert json.loads(paths.record_path(runtime).read_text())["version"] == __version__
    status = holder_request(runtime, {"op": "status"})
    assert status is not None
    reason = f"replaces daemon {old} (version 0.0.9): version {__version__} is installed"
    assert {"pid": new, "reason": reason} in [
        {"pid": d["pid"], "reason": d["reason"]} for d in status["daemons"]
    ]
    log = paths.log_path(runtime).read_text()
    assert f"stopping ({reason}): processes stay with the holder" in log

    async def check() -> None:
        c = await client(runtime)
        (info,) = await c.list()
        assert (info.pid, info.state) == (pid, "running")
        await asyncio.sleep(0.3)
        got = numbered(await read_all(c, "job"))
        assert got == list(range(len(got))) and len(got) > 10
        await c.close()

    asyncio.run(check())


@pytest.mark.timeout(60)
def test_bad_holder_requests_are_answered_and_harm_nothing(runtime: Path) -> None:
    ensure_daemon(runtime)
    path = paths.holder_socket_path(runtime)
    assert path.stat().st_mode & 0o777 == 0o600
    assert try_as_nobody(path) == "EACCES"

    sock = sockets.connect(path, 10, socket.SOCK_SEQPACKET)
    assert sock is not None
    r, w = os.pipe()

    def ask(message: dict[str, object], fds: list[int] | None = None) -> object:
        send(sock, message, fds or [])
        answer, extra = receive(sock)
        assert extra == []
        return answer

    with sock:
        sock.send(b"not json")  # no id: nothing to answer, nothing harmed
        assert ask({"id": 1, "op": "nope"}) == {
            "id": 1, "error": "unknown op 'nope' (holder protocol 1)",
        }  # fmt: skip
        assert "attach first" in str(ask({"id": 2, "op": "hold", "key": "k", "meta": {},
                                          "names": ["stdout"]}, [w]))  # fmt: skip
        assert "takes 1 descriptors, not 0" in str(ask({"id": 3, "op": "pid", "key": "k"}))
        assert "takes 0 descriptors, not 1" in str(ask({"id": 4, "op": "status"}, [w]))
        assert "KeyError" in str(ask({"id": 5, "op": "reap", "key": "nobody"}))
        scope = paths.state_dir(runtime).name
        assert "is held by daemon" in str(ask({"id": 6, "op": "attach", "scope": scope}))
    os.close(w)
    assert os.read(r, 1) == b""  # every copy of the pipe's write end was closed
    os.close(r)

    async def check() -> None:  # the daemon goes on serving, the holder too
        c = await client(runtime)
        await c.start("echo", ["echo", "fine"])
        await c.wait("echo", timeout=30)
        assert await read_all(c, "echo") == b"fine\n"
        await c.close()

    asyncio.run(check())
    status = holder_request(runtime, {"op": "status"})
    assert status is not None and status["pid"] == holder_pid(runtime)


@pytest.mark.timeout(60)
def test_an_exit_the_killed_daemon_saw_but_did_not_record_is_kept(runtime: Path) -> None:
    # Killed within the moment between reaping a child and writing its record: the
    # holder still has it, and its true status.
    ensure_daemon(runtime)

    async def start() -> None:
        c = await client(runtime)
        await c.start("done", ["sh", "-c", "echo finished; exit 3"])
        assert (await c.wait("done", timeout=30)).exit_code == 3
        kill_daemon(runtime)
        await c.close()

    asyncio.run(start())
    status = holder_request(runtime, {"op": "status"})
    assert status is not None and sum(status["held"].values()) == 1
    ensure_daemon(runtime)

    async def check() -> None:
        c = await client(runtime)
        (info,) = await c.list()
        assert (info.state, info.exit_code, info.failure) == ("closed", 3, None)
        assert await read_all(c, "done") == b"finished\n"
        await c.close()

    asyncio.run(check())


@pytest.mark.timeout(60)
def test_stdin_goes_on_and_its_eof_reaches_the_child_after_a_restart(runtime: Path) -> None:
    # The holder's copy of the stdin pipe is closed with ours: cat sees end of file.
    ensure_daemon(runtime)

    async def start() -> None:
        c = await client(runtime)
        await c.start("cat", ["cat"], pipe_stdin=True)
        assert await c.write("cat", b"before ") == "accepted"
        await wait_for(c, "cat", b"before ")
        await c.close()

    asyncio.run(start())
    kill_daemon(runtime)
    ensure_daemon(runtime)

    async def check() -> None:
        c = await client(runtime)
        assert await c.write("cat", b"after", eof=True) == "accepted"
        result = await c.wait("cat", timeout=30)
        assert result.exit_code == 0
        assert await read_all(c, "cat") == b"before after"
        await c.close()

    asyncio.run(check())
