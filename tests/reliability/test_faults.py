"""Faults (SPEC 4, 5, 6): children that misbehave, a full disk, a server that is
killed. The output of well-behaved processes stays complete throughout, and
nothing outlives the server.

Already covered elsewhere and not repeated here: the log cap and setsid
escapees ignoring SIGTERM (tests/core/test_guarantees.py), `max_processes`
(tests/core/test_protocol_errors.py), SIGKILL of the stdio server
(tests/transports/test_serve.py), a real Jupyter server's SIGTERM/SIGKILL
(tests/jupyter/test_lifecycle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.client import ExecClient
from jupyter_exec.core.proctree import ProcessRef, descendant_processes, marked_processes
from tests.reliability.rawws import popen
from tests.service import PY, embedded, pid_alive, py, tree_of


async def all_output(client: ExecClient, pid: str) -> tuple[dict[str, bytes], int]:
    """Every readable byte per stream, and the firstSeq the server reported."""
    out: dict[str, list[bytes]] = {}
    cursor, first = 0, 1
    while True:
        r = await client.read(pid, cursor, max_bytes=1 << 22)
        first = r.first_seq
        if not r.chunks:
            return {k: b"".join(v) for k, v in out.items()}, first
        for c in r.chunks:
            out.setdefault(c.stream, []).append(c.data)
        cursor = r.chunks[-1].seq


def wait_gone(pids: set[ProcessRef], seconds: float) -> set[ProcessRef]:
    deadline = time.monotonic() + seconds
    alive = {p for p in pids if pid_alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in alive if pid_alive(p)}
    return alive


# -- children that misbehave --------------------------------------------------------


async def test_child_closing_stdout_early_keeps_running_and_reports_in_order(tmp_path):
    code = (
        "import os, sys, time\n"
        "print('before', flush=True)\n"
        "os.close(1)\n"
        "time.sleep(0.6)\n"
        "sys.stderr.write('after'); sys.stderr.flush()\n"
        "os.close(2)\n"
        "time.sleep(0.4)\n"
        "sys.exit(3)\n"
    )
    async with embedded(tmp_path) as (_, c):
        await c.start("early", py(code))
        first = await c.read("early", 0, wait_ms=5000, until_pattern="before")
        assert first.matched
        await asyncio.sleep(0.3)  # stdout is at EOF now, the child still runs
        info = (await c.list())[0]
        assert info.state == "running"
        done = await c.wait("early", 10)
        assert done.exit_code == 3 and done.closed
        r = await c.read("early", 0)
        streams = [ch.stream for ch in r.chunks]
        assert streams == sorted(streams, key=["stdout", "stderr"].index)  # in order
        assert b"".join(ch.data for ch in r.chunks) == b"before\nafter"
        # exited and closed follow the output; nothing is left running.
        assert r.next_seq == r.chunks[-1].seq + 1 and done.next_seq == r.chunks[-1].seq + 3


async def test_two_thousand_descendants_ignoring_sigterm_are_all_gone_after_terminate(tmp_path):
    n = 2000
    script = (
        "trap '' TERM\n"  # every descendant inherits SIGTERM ignored
        f"i=0; while [ $i -lt {n} ]; do\n"
        "  if [ $((i % 10)) -eq 0 ]; then setsid sleep 300 & else sleep 300 & fi\n"
        "  i=$((i+1))\n"
        "done\n"
        "echo spawned\n"
        "wait\n"
    )
    async with embedded(tmp_path) as (service, c):
        await c.start("bomb", ["sh", "-c", script])
        await c.start(
            "bystander",
            py("import time\nfor i in range(40): print(i, flush=True); time.sleep(0.05)"),
        )
        r = await c.read("bomb", 0, wait_ms=120_000, until_pattern="spawned")
        assert r.matched, "the spawner did not finish"
        marker = service.registry.get("bomb").setup.marker
        root = service.registry.get("bomb").child.ref
        tree = await asyncio.to_thread(
            lambda: marked_processes(marker) | descendant_processes(root)
        )
        assert len(tree) >= n
        t = time.monotonic()
        assert await c.terminate("bomb", grace_ms=300)
        done = await c.wait("bomb", 60)
        assert done.signal == "SIGKILL"  # the shell ignored SIGTERM
        left = await asyncio.to_thread(wait_gone, tree, 30)
        assert not left, f"{len(left)} of {len(tree)} descendants survived"
        elapsed = time.monotonic() - t
        assert elapsed < 30
        b = await c.wait("bystander", 30)
        assert b.exit_code == 0
        streams, _ = await all_output(c, "bystander")
        assert streams["stdout"] == "".join(f"{i}\n" for i in range(40)).encode()


# -- a full disk --------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[Path]:
    """A small tmpfs, when this machine lets us mount one (root in a sandbox)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = Path(f"/tmp/exec-fulldisk-{uuid.uuid4().hex[:8]}")
    mountpoint.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    if r.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


#: 2 MiB in 512 numbered lines of 4 KiB, then a marker.
WRITER = (
    "import sys\n"
    "for i in range(512): sys.stdout.write(str(i).zfill(4095) + '\\n'); sys.stdout.flush()\n"
    "sys.stdout.write('the end\\n')\n"
)


def _line(i: int) -> bytes:
    return str(i).zfill(4095).encode() + b"\n"


async def test_full_disk_sets_failure_and_memory_retention_continues(tmp_path):
    with tiny_tmpfs("256k") as disk:
        # No disk budget: this is about the disk filling up, not about the budget.
        budgets = {"logs_max_use": None, "logs_keep_free": 0}
        async with embedded(
            tmp_path, log_dir=disk, retained_bytes_per_process=256 << 10, **budgets
        ) as (_, c):
            await c.start("filler", py(WRITER))
            done = await c.wait("filler", 30)
            assert done.exit_code == 0
            assert done.failure is not None and "disk full" in done.failure, done.failure
            assert "kept only in memory" in done.failure
            streams, first_seq = await all_output(c, "filler")
            data = streams["stdout"]
            assert data.endswith(_line(511) + b"the end\n")  # memory serves the tail
            assert data.startswith(_line(0))  # what reached the disk is still served
            assert first_seq > 1  # and the client is told that the middle is gone
            # Every byte served is a real, whole part of the output: no torn record.
            lines = data.split(b"\n")[:-2]
            assert all(len(x) == 4095 for x in lines), {len(x) for x in lines}
            # A process started on the full disk still runs, from memory alone.
            await c.start("later", py("print('still here')"))
            later = await c.wait("later", 10)
            assert later.exit_code == 0
            r = await c.read("later", 0)
            assert r.data == b"still here\n"


def _limited_server(tmp_path: Path, fsize: int) -> subprocess.Popen[str]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead

    return subprocess.Popen(
        [PY, "-m", "jupyter_exec.transports.serve", "--listen", "ws://127.0.0.1:0",
         "--log-dir", str(tmp_path / "logs"), "--retained-bytes", str(256 << 10)],
        stdout=subprocess.PIPE, text=True, cwd=tmp_path, preexec_fn=limit,
    )  # fmt: skip


async def test_log_write_failure_without_root_via_rlimit_fsize(tmp_path):
    """The same guarantee where mounting is not allowed: a file size limit (EFBIG)."""
    server = _limited_server(tmp_path, 300_000)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        base, token = url.split("?token=")
        c = await ExecClient.connect(base, token)
        await c.start("filler", py(WRITER))
        done = await c.wait("filler", 30)
        assert done.exit_code == 0 and done.failure is not None
        assert "output log write failed" in done.failure
        streams, first_seq = await all_output(c, "filler")
        data = streams["stdout"]
        assert data.startswith(_line(0)) and data.endswith(_line(511) + b"the end\n")
        lines = data.split(b"\n")[:-2]
        assert all(len(x) == 4095 for x in lines), {len(x) for x in lines}
        assert first_seq > 1
        await c.close()
    finally:
        server.terminate()
        server.wait(20)


# -- the server killed ----------------------------------------------------------------

TREE = (
    "import os, signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "if os.fork() == 0:\n"
    "    os.setsid(); time.sleep(300)\n"
    "print('up', flush=True); time.sleep(300)\n"
)


async def _server_with_trees(
    tmp_path: Path, count: int
) -> tuple[subprocess.Popen[str], set[int], Path]:
    logs = tmp_path / "logs"
    server = popen(
        [PY, "-m", "jupyter_exec.transports.serve", "--listen", "ws://127.0.0.1:0", "--lifetime", "detached",
         "--log-dir", str(logs)],
        cwd=tmp_path,
    )  # fmt: skip
    assert server.stdout is not None
    base, token = server.stdout.readline().strip().split("?token=")
    c = await ExecClient.connect(base, token)
    for i in range(count):
        await c.start(f"t{i}", py(TREE))
    for i in range(count):
        assert (await c.read(f"t{i}", 0, wait_ms=20_000, until_pattern="up")).matched
    roots = {p.pid for p in await c.list() if p.pid}
    await c.close()
    tree = {p for pid in roots for p in tree_of(pid)}
    await asyncio.sleep(0.2)
    tree |= {p for pid in roots for p in tree_of(pid)}
    assert len(tree) >= 2 * count - 2  # each has a setsid grandchild (reparented when orphaned)
    assert any(logs.rglob("*.log"))
    return server, tree, logs


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_server_killed_leaves_no_process_and_no_log(tmp_path, how):
    server, tree, logs = await _server_with_trees(tmp_path, 10)
    marked = marked_processes("", prefix=True) & tree  # all of them carry the marker
    assert marked
    server.send_signal(getattr(signal, how))
    code = await asyncio.to_thread(server.wait, 30)
    if how == "SIGTERM":
        assert code == 0
    left = await asyncio.to_thread(wait_gone, tree, 20)
    assert not left, f"survivors after {how}: {left}"
    assert await asyncio.to_thread(_logs_gone, logs, 10)


def _logs_gone(logs: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(logs.rglob("*.log")):
        time.sleep(0.05)
    return not any(logs.rglob("*.log"))


# -- running out of descriptors -------------------------------------------------------


async def test_descriptor_headroom_refuses_a_start_clearly_and_harms_nothing(tmp_path):
    """The first thing bench/load.py broke: at a 1024-descriptor limit ~190 processes
    exhausted the server, and then even termination failed. The soft limit is now
    raised to the hard one, and a start that would eat the reserve is refused."""
    from jupyter_exec.core import registry as registry_module

    async with embedded(tmp_path) as (service, c):
        await c.start(
            "a", py("import time\nfor i in range(5): print(i, flush=True); time.sleep(0.1)")
        )
        used = registry_module._open_fds()
        service.registry._fd_limit = used + registry_module.FD_RESERVE  # no room for one more
        with pytest.raises(Exception, match="too many open files") as info:
            await c.start("b", ["true"])
        assert getattr(info.value, "remote_code", None) == -32600
        done = await c.wait("a", 10)
        assert done.exit_code == 0
        streams, _ = await all_output(c, "a")
        assert streams["stdout"] == b"0\n1\n2\n3\n4\n"
        service.registry._fd_limit = registry_module.raise_fd_limit()
        await c.start("b", ["true"])
        assert (await c.wait("b", 10)).exit_code == 0


def test_soft_descriptor_limit_is_raised_to_the_hard_limit():
    def child() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))

    code = (
        "import resource\n"
        "from jupyter_exec.rpc.service import build_registry\n"
        "build_registry()\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(soft == hard or soft >= 1 << 20)\n"
    )
    r = subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, preexec_fn=child, timeout=30
    )
    assert r.stdout.strip() == "True", r.stderr
