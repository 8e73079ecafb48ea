"""A sandbox's own PID namespace (core/pidns.py) on a real service, against no sandbox.

Each behaviour is run unsandboxed first where it can differ, so that the
sandboxed answer is shown to be the same (exit codes, signals, a PTY), or
the namespace's doing (what ps, /proc and kill see; nothing left behind).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil
import pytest

from tests.sandbox.harness import run, session

pytestmark = pytest.mark.timeout(120)
BOX = {"mode": "workspace-write", "network": False}
TTY = pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])


@TTY
async def test_exit_codes_and_signal_deaths_are_the_programs(tmp_path: Path, tty: bool) -> None:
    async with session(tmp_path) as peer:
        for script, code in (("exit 7", 7), ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 137)):
            free = await run(peer, ["sh", "-c", script], tty=tty)
            boxed = await run(peer, ["sh", "-c", script], tty=tty, sandbox=BOX)
            assert free.exit_code == boxed.exit_code == code, (script, free, boxed)


@TTY
async def test_it_sees_and_signals_only_its_own_processes(tmp_path: Path, tty: bool) -> None:
    outsider = await asyncio.create_subprocess_exec("sleep", "60")
    script = (
        "sleep 30 & child=$!\n"
        'echo "me $$ child-seen $(ps -o pid= -p $child | tr -d " ")"\n'
        "kill $child; wait $child; echo child-status $?\n"
        'echo "processes $(ls /proc | grep -c "^[0-9]")"\n'
        f"kill -0 {outsider.pid} 2>/dev/null && echo outsider-signalled || echo outsider-refused\n"
        f"cat /proc/{outsider.pid}/cmdline 2>/dev/null && echo cmdline-read || echo no-cmdline\n"
    )
    try:
        async with session(tmp_path) as peer:
            free = await run(peer, ["sh", "-c", script], tty=tty)
            assert "outsider-signalled" in free.output and "cmdline-read" in free.output, free
            boxed = await run(peer, ["sh", "-c", script], tty=tty, sandbox=BOX)
        lines = [x for x in boxed.output.split("\n") if x and "Terminated" not in x]
        me, child = lines[0].split()[1], lines[0].split()[3]
        assert me == "2" and child.isdigit(), boxed  # pid 1 is its init, 2 the program
        # Its init, itself, and the commands of the count: none of the machine's others.
        assert lines[1] == "child-status 143" and int(lines[2].split()[1]) <= 6, boxed
        assert lines[3:] == ["outsider-refused", "no-cmdline"], boxed
    finally:
        outsider.kill()
        await outsider.wait()


@TTY
async def test_a_signal_to_the_group_reaches_the_program_once(tmp_path: Path, tty: bool) -> None:
    code = (
        "import signal, sys, time\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append('INT'))\n"
        "signal.signal(signal.SIGHUP, lambda *a: got.append('HUP'))\n"
        "print('ready', flush=True)\n"
        "while len(got) < 2: time.sleep(0.01)\n"
        "time.sleep(0.3)\n"
        "print(*got, flush=True)\n"
    )
    async with session(tmp_path) as peer:
        start = {"processId": "sig", "argv": [sys.executable, "-c", code], "tty": tty,
                 "sandbox": BOX}  # fmt: skip
        assert "result" in await peer.call("process/start", start)
        await _output_until(peer, "sig", "ready")
        for name in ("interrupt", "hangup"):
            assert "result" in await peer.call("process/signal", {"processId": "sig",
                                                                 "signal": name})  # fmt: skip
        output = await _output_until(peer, "sig", "HUP")
        output += await _output_until(peer, "sig", "\n") if not output.endswith("\n") else ""
        assert sorted(output.split()) == ["HUP", "INT"], output  # each once


async def test_nothing_outlives_it_not_even_what_left_its_session(tmp_path: Path) -> None:
    """Terminated or ended by itself: its init ends, and the kernel kills the rest."""
    async with session(tmp_path) as peer:
        for ending in ("terminate", "exit"):
            last = "exec sleep 300" if ending == "terminate" else "sleep 2; exit 3"
            script = f"setsid sleep 300 & sleep 300 & echo started; {last}"
            pid = f"tree-{ending}"
            reply = await peer.call("process/start", {"processId": pid, "sandbox": BOX,
                                                      "argv": ["sh", "-c", script]})  # fmt: skip
            assert "result" in reply, reply
            root = psutil.Process(await _pid_of(peer, pid))
            await _output_until(peer, pid, "started")
            await asyncio.sleep(0.5)  # each has exec'd sleep by now
            tree = [p for p in root.children(recursive=True) if p.name() == "sleep"]
            assert len(tree) >= 2, tree  # both left behind (and maybe the last command)
            if ending == "terminate":
                await peer.call("process/terminate", {"processId": pid, "graceMs": 2000})
            _, alive = psutil.wait_procs(tree, timeout=10)
            assert alive == [], alive


async def _pid_of(peer: object, process_id: str) -> int:
    reply = await peer.call("process/list", {})  # type: ignore[attr-defined]
    found = [p for p in reply["result"]["processes"] if p["processId"] == process_id]
    return int(found[0]["pid"])


async def _output_until(peer: object, process_id: str, text: str) -> str:
    import base64

    seen = ""
    while text not in seen:
        pending = peer.seen  # type: ignore[attr-defined]
        message = pending.pop(0) if pending else await peer.recv(30)  # type: ignore[attr-defined]
        params = message.get("params", {})
        if message.get("method") == "process/output" and params.get("processId") == process_id:
            seen += base64.b64decode(params["chunk"]).decode(errors="replace")
    return seen


def test_the_supervisors_block_what_the_group_may_be_sent() -> None:
    import signal

    from jupyter_exec.core.pidns import BLOCKED

    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH} <= BLOCKED
    assert signal.SIGKILL not in BLOCKED and signal.SIGSEGV not in BLOCKED
    assert os.sep == "/"


async def test_its_usage_counts_the_program_not_the_supervisors(tmp_path: Path) -> None:
    """Both supervisors are forks of the daemon (tens of MiB of shared pages in their RSS)."""
    async with session(tmp_path) as peer:
        reply = await peer.call("process/start", {"processId": "u", "sandbox": BOX,
                                                  "argv": ["sleep", "30"]})  # fmt: skip
        assert "result" in reply, reply
        usage: dict[str, int] = {}
        for _ in range(100):
            listed = await peer.call("process/list", {})
            usage = listed["result"]["processes"][0].get("usage") or {}
            if usage.get("processes") == 3 and usage.get("rssBytes"):
                break  # all three there, and the program exec'd (a fork still named
                # sandbox-init counts no RSS)
            await asyncio.sleep(0.1)
        assert usage["processes"] == 3, usage  # outer, init, sleep
        assert 0 < usage["rssBytes"] < 8 * 1024 * 1024, usage  # sleep's alone
        await peer.call("process/terminate", {"processId": "u", "graceMs": 100})


@pytest.mark.parametrize("sandbox", [None, BOX], ids=["free", "boxed"])
async def test_an_interactive_shell_in_a_pty_keeps_job_control(
    tmp_path: Path, sandbox: object
) -> None:
    """bash -i takes the terminal (its own process group: the namespace hides outer's);
    ^C typed into the PTY interrupts its foreground job, and bash carries on."""
    import base64

    async with session(tmp_path) as peer:
        start = {"processId": "sh", "argv": ["bash", "--norc", "-i"], "tty": True,
                 "sandbox": sandbox, "env": {"PS1": "$ ", "PATH": os.environ["PATH"]}}  # fmt: skip
        assert "result" in await peer.call("process/start", start)

        async def write(text: str) -> None:
            chunk = base64.b64encode(text.encode()).decode()
            await peer.call("process/write", {"processId": "sh", "chunk": chunk})

        await _output_until(peer, "sh", "$ ")
        await write("sleep 30\n")
        await asyncio.sleep(0.5)
        await write("\x03")
        await write("echo after-$?\n")
        assert "after-130" in await _output_until(peer, "sh", "after-1")
        await write("exit 4\n")
        await _output_until(peer, "sh", "exit")
