"""The exec daemon on its own: socket privacy, a crash of the daemon, idle exit, races."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from jupyter_exec.client import ExecClient
from jupyter_exec.client.unix_transport import connect_daemon, daemon_front
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import ensure_daemon
from jupyter_exec.wire.errors import InvalidRequestError
from tests.daemon.harness import (
    daemon_pid,
    daemon_settings,
    holder_pid,
    kill_daemon,
    wait_gone,
)
from tests.daemon.test_server_restart import COUNTER
from tests.service import tree_of

NOBODY = 65534


async def client(runtime: Path, **kwargs: object) -> ExecClient:
    front = daemon_front("the daemon tests")
    return await connect_daemon(paths.socket_path(runtime), front=front, **kwargs)  # type: ignore[arg-type]


def numbered(data: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^(\d+)\r?$", data, re.MULTILINE)]


async def read_all(c: ExecClient, process_id: str) -> bytes:
    data, after = b"", 0
    while chunks := (await c.read(process_id, after)).chunks:
        data += b"".join(ch.data for ch in chunks)
        after = chunks[-1].seq
    return data


def test_socket_is_0600_and_other_users_are_refused(runtime: Path) -> None:
    sock = ensure_daemon(runtime)
    assert sock.stat().st_mode & 0o777 == 0o600
    assert try_as_nobody(sock) == "EACCES"  # the file mode stops them
    os.chmod(sock, 0o666)
    os.chmod(runtime, 0o711)
    assert try_as_nobody(sock) == "refused"  # and SO_PEERCRED, past the mode
    log = paths.log_path(runtime)
    deadline = time.monotonic() + 10
    while "refused a connection from another user" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    os.chmod(sock, 0o600)
    os.chmod(runtime, 0o700)
    # Ours still get in, and nothing else was harmed.
    assert asyncio.run(_list(runtime)) == []


async def _list(runtime: Path) -> list[str]:
    c = await client(runtime)
    try:
        return [p.process_id for p in await c.list()]
    finally:
        await c.close()


def try_as_nobody(path: Path) -> str:
    """Connect as uid nobody in a forked child; what happened, as a word."""
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        word = b"?"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(path))
                s.sendall(b'{"jupyterExecDaemon": 1, "allowedActions": null}\n')
                word = b"answered" if s.recv(4096) else b"refused"
        except PermissionError:
            word = b"EACCES"
        except (ConnectionResetError, BrokenPipeError):  # closed on us, our hello unread
            word = b"refused"
        except OSError as exc:
            word = str(exc).encode()
        os.write(write_end, word)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        word = f.read().decode()
    os.waitpid(pid, 0)
    return word


def test_a_killed_holder_and_daemon_leave_no_orphan_and_their_processes_are_listed_lost(
    runtime: Path,
) -> None:
    """With nothing left to keep their pipes (the holder died too), processes are lost;
    the next daemon lists them so and kills what still runs (test_holder.py: the
    holder alone keeps them)."""
    ensure_daemon(runtime)
    first, holder = daemon_pid(runtime), holder_pid(runtime)
    assert first is not None and holder is not None

    async def start() -> set[int]:
        c = await client(runtime)
        await c.start("count", [sys.executable, "-c", COUNTER])
        await c.start("tty", ["cat"], tty=True)
        await c.start("done", ["sh", "-c", "echo finished; exit 3"])
        await c.wait("done", timeout=30)
        await asyncio.sleep(0.5)
        pids = {p.pid for p in await c.list() if p.pid and p.state == "running"}
        await c.close()
        return set().union(*(tree_of(p) for p in pids))

    tree = asyncio.run(start())
    assert len(tree) >= 2
    os.kill(holder, signal.SIGKILL)
    assert wait_gone([holder])
    kill_daemon(runtime)
    assert any((paths.state_dir(runtime) / "procs").glob("*.json"))  # records kept

    ensure_daemon(runtime)
    assert daemon_pid(runtime) not in (None, first)
    assert wait_gone(tree)  # the next daemon killed the orphans it could not adopt

    async def check() -> None:
        c = await client(runtime)
        listed = {p.process_id: p for p in await c.list()}
        assert {k: p.state for k, p in listed.items()} == {
            "count": "lost",
            "tty": "lost",
            "done": "closed",
        }
        assert listed["count"].failure == "lost: the exec daemon died while it ran"
        assert (listed["done"].exit_code, listed["done"].failure) == (3, None)
        got = numbered(await read_all(c, "count"))
        assert len(got) > 5 and got == list(range(len(got)))
        assert await read_all(c, "done") == b"finished\n"
        result = await c.read("count", 0)
        assert result.exited and result.closed and result.exit_code is None
        # Nothing to stop; removal deletes the log and the record.
        assert not await c.terminate("count")
        await c.request("process/remove", {"processId": "count"})
        assert "count" not in {p.process_id for p in await c.list()}
        await c.close()

    asyncio.run(check())
    procs = paths.state_dir(runtime) / "procs"
    deadline = time.monotonic() + 10  # records are written (and deleted) a moment later
    while len(list(procs.glob("*.json"))) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(procs.glob("*.json"))) == 2
    assert len(list(paths.state_dir(runtime).rglob("*.log"))) <= 2


def test_an_idle_daemon_exits_by_itself(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon_settings(monkeypatch, runtime / "config", daemon_idle_seconds=0.5)
    ensure_daemon(runtime)
    pid = daemon_pid(runtime)
    assert pid is not None
    assert wait_gone([pid])
    assert not paths.socket_path(runtime).exists()
    assert not paths.state_dir(runtime).exists()


def test_racing_starters_get_one_daemon(runtime: Path) -> None:
    sockets: list[Path] = []
    threads = [
        threading.Thread(target=lambda: sockets.append(ensure_daemon(runtime))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(sockets) == 4 and len(set(sockets)) == 1
    pid = daemon_pid(runtime)
    assert pid is not None
    daemons = [p for p in os.listdir("/proc") if p.isdigit() and _is_daemon_of(int(p), runtime)]
    assert daemons == [str(pid)]


def _is_daemon_of(pid: int, runtime: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"jupyter_exec.daemon" in cmdline and os.fsencode(runtime) in cmdline


def test_shutdown_needs_execute_and_a_read_only_peer_changes_nothing(runtime: Path) -> None:
    ensure_daemon(runtime)

    async def check() -> None:
        reader = await client(runtime, allowed_actions={"read"})
        with pytest.raises(InvalidRequestError, match="needs the execute permission"):
            await reader.request("daemon/shutdown", {})
        with pytest.raises(InvalidRequestError, match="needs the execute permission"):
            await reader.start("x", ["true"])
        assert await reader.list() == []
        await reader.close()

    asyncio.run(check())
    assert daemon_pid(runtime) is not None


def test_a_bad_hello_is_answered_and_closed(runtime: Path) -> None:
    sock = ensure_daemon(runtime)

    def hello(line: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            s.sendall(line)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data

    assert b'"error": "this exec daemon speaks protocol 1, not None"' in hello(b"not json\n")
    assert b"not 7" in hello(b'{"jupyterExecDaemon": 7}\n')
    assert asyncio.run(_list(runtime)) == []  # it goes on serving
