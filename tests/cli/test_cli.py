"""`jupyter exec ...` through subprocess against real servers, `attach` through a real PTY."""

from __future__ import annotations

import contextlib
import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ptyprocess import PtyProcess

from jupyter_exec.frontends.cli import parse_detach_key
from tests.daemon.harness import daemon_pid, daemons_stopped
from tests.service import NUMBERED, NUMBERED_LINES, assert_numbered, stop_process

from ..magics.jupyter_process import BIN, JupyterServer, clean_env, jupyter_server

pytestmark = pytest.mark.slow
PY = sys.executable
CLI = str(BIN / "jupyter-exec")


@dataclass
class Standalone:
    url: str
    env: dict[str, str]

    def run(
        self, *args: str, timeout: float = 60, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "--url", self.url, *args], capture_output=True, text=True,
            env=self.env, timeout=timeout, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


@contextlib.contextmanager
def serving(runtime: Path, *options: str) -> Iterator[Standalone]:
    """`jupyter exec serve` on a free port, with `options`; stopped after."""
    env = clean_env(runtime)
    proc = subprocess.Popen(
        [CLI, "serve", "--listen", "ws://127.0.0.1:0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://127.0.0.1:"), url
        yield Standalone(url, env)
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with serving(tmp_path_factory.mktemp("runtime")) as server:
        yield server


def wait_running_state(
    server: Standalone, process_id: str, state: str, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        infos = json.loads(server.run("ps", "--json").stdout)
        if any(i["processId"] == process_id and i["state"] == state for i in infos):
            return
        assert time.monotonic() < deadline, infos
        time.sleep(0.1)


def test_run_streams_both_streams_and_exits_with_the_status(standalone: Standalone) -> None:
    done = standalone.run("run", "--", "bash", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    killed = standalone.run("run", "--", "bash", "-c", "kill -TERM $$")
    assert killed.returncode == 128 + signal.SIGTERM


def test_run_forwards_stdin_env_and_cwd(standalone: Standalone, tmp_path: Path) -> None:
    done = standalone.run(
        "run", "-i", "--env", "X=1", "--cwd", str(tmp_path), "--",
        "bash", "-c", 'echo "$X $(pwd)"; cat', input="piped\n",
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == f"1 {tmp_path}\npiped\n"


def test_detach_ps_logs_write_kill(standalone: Standalone) -> None:
    started = standalone.run(
        "run", "-d", "-i", "--name", "svc", "--", PY, "-c",
        "import sys\nprint('up', flush=True)\nfor line in sys.stdin: print('got', line.strip(), flush=True)",
    )  # fmt: skip
    assert (started.returncode, started.stdout) == (0, "svc\n")
    ps = standalone.run("ps")
    assert re.search(r"^svc\s+running\s", ps.stdout, re.M), ps.stdout
    follower = subprocess.Popen(
        [CLI, "--url", standalone.url, "logs", "-f", "svc"],
        stdout=subprocess.PIPE, text=True, env=standalone.env,
    )  # fmt: skip
    assert standalone.run("write", "svc", "hello").returncode == 0
    assert standalone.run("write", "svc", "--eof").returncode == 0
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0
    assert out == "up\ngot hello\n"
    assert standalone.run("logs", "--tail", "1", "svc").stdout == "got hello\n"
    closed = standalone.run("write", "svc", "late")
    assert closed.returncode == 1 and "stdinClosed" in closed.stderr


def test_ps_shows_a_multi_line_command_on_one_row(standalone: Standalone) -> None:
    script = "echo first\necho second\nsleep 60"
    started = standalone.run("run", "-d", "--name", "script", "--", "bash", "-c", script)
    assert started.returncode == 0, started.stderr
    try:
        rows = [r for r in standalone.run("ps").stdout.splitlines() if r.startswith("script ")]
        assert len(rows) == 1 and "echo first⏎echo second⏎sleep 60" in rows[0], rows
        infos = json.loads(standalone.run("ps", "--json").stdout)  # --json keeps it exact
        assert next(i for i in infos if i["processId"] == "script")["argv"][2] == script
    finally:
        standalone.run("kill", "script")


def test_kill_with_and_without_signal(standalone: Standalone) -> None:
    standalone.run("run", "-d", "--name", "sleeper", "--", "sleep", "60")
    assert standalone.run("kill", "sleeper", "--signal", "USR1").returncode == 0
    wait_running_state(standalone, "sleeper", "closed")
    infos = json.loads(standalone.run("ps", "--json").stdout)
    assert next(i for i in infos if i["processId"] == "sleeper")["signal"] == "SIGUSR1"
    standalone.run("run", "-d", "--name", "sleeper2", "--", "sleep", "60")
    assert standalone.run("kill", "sleeper2").returncode == 0
    wait_running_state(standalone, "sleeper2", "closed")
    unknown = standalone.run("kill", "nosuch")
    assert unknown.returncode == 1 and "unknown process id nosuch" in unknown.stderr


def test_ctrl_c_interrupts_the_process_not_the_cli(standalone: Standalone) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: (print('got SIGINT', flush=True), sys.exit(5)))\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [CLI, "--url", standalone.url, "run", "--", PY, "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=standalone.env,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert out == "got SIGINT\n"
    assert proc.returncode == 5
    assert "[sent SIGINT to python" in err  # the same escalation notices as the magics


def test_without_any_server(tmp_path: Path) -> None:
    """No server: the user's exec daemon is started (SPEC 3 "Every front"); ``ps`` with
    nothing in it prints the bare table and succeeds."""
    runtime = tmp_path / "runtime"
    env = clean_env(runtime)
    with daemons_stopped(runtime):
        ps = subprocess.run([CLI, "ps"], capture_output=True, text=True, env=env, timeout=30)
        assert (ps.returncode, ps.stderr) == (0, "")
        assert ps.stdout.split() == ["ID", "STATE", "EXIT", "RUNTIME", "COMMAND"]
        assert daemon_pid(runtime) is not None
        local = subprocess.run(
            [CLI, "run", "--name", "here", "--", "echo", "in the daemon"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert (local.returncode, local.stdout, local.stderr) == (0, "in the daemon\n", "")
        listed = subprocess.run([CLI, "ps"], capture_output=True, text=True, env=env, timeout=30)
        assert re.search(r"^here\s+(exited|closed)\s+0", listed.stdout, re.M), listed.stdout
        asked = subprocess.run(
            [CLI, "run", "--embedded", "--name", "here", "--", "echo", "embedded"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert (asked.returncode, asked.stdout, asked.stderr) == (0, "embedded\n", "")
        nowhere = subprocess.run(
            [CLI, "run", "--embedded", "-d", "--", "true"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert nowhere.returncode == 2 and "--detach needs the exec daemon" in nowhere.stderr
        both = subprocess.run(
            [CLI, "run", "--embedded", "--url", "ws://127.0.0.1:9/", "--", "true"],
            capture_output=True, text=True, env=env, timeout=30,
        )  # fmt: skip
        assert both.returncode == 2 and "--embedded and --url exclude each other" in both.stderr
    module = subprocess.run(
        [PY, "-m", "jupyter_exec", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert module.returncode == 0 and "--listen" in module.stdout


def test_without_a_usable_runtime_dir_it_runs_inside_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a runtime dir cannot be under a file, even for root")
    env = clean_env(tmp_path / "file" / "runtime")
    why = "no exec daemon can run here (cannot use the runtime dir"
    ps = subprocess.run([CLI, "ps"], capture_output=True, text=True, env=env, timeout=30)
    assert ps.returncode == 0 and ps.stdout.split()[0] == "ID"
    assert ps.stderr.count(why) == 1 and "Not a directory" in ps.stderr
    local = subprocess.run(
        [CLI, "run", "--", "echo", "inside"], capture_output=True, text=True, env=env, timeout=30
    )
    assert (local.returncode, local.stdout) == (0, "inside\n")
    assert "processes run inside this command and end with it" in local.stderr
    detached = subprocess.run(
        [CLI, "run", "-d", "--", "true"], capture_output=True, text=True, env=env, timeout=30
    )
    assert detached.returncode == 2 and f"--detach needs the exec daemon: {why}" in detached.stderr


def test_finds_a_running_jupyter_server_from_a_shell(tmp_path: Path) -> None:
    """`jupyter exec logs -f train` from a plain shell, via Jupyter's runtime records."""
    server: JupyterServer
    with jupyter_server(tmp_path) as server:
        env = dict(server.env)
        started = subprocess.run(
            [str(BIN / "jupyter"), "exec", "run", "-d", "--name", "train", "--",
             "bash", "-c", "echo epoch 1; sleep 0.5; echo epoch 2"],
            capture_output=True, text=True, env=env, timeout=60, cwd=server.root_dir,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        follow = subprocess.run(
            [CLI, "logs", "-f", "train"], capture_output=True, text=True, env=env, timeout=60
        )
        assert (follow.returncode, follow.stdout) == (0, "epoch 1\nepoch 2\n"), follow.stderr
        listed = server.request("GET", "api/exec/processes")
        assert any(p["processId"] == "train" for p in listed)


def read_until(pty: PtyProcess, pattern: str, timeout: float = 20) -> str:
    """Read the PTY until ``pattern`` shows up; fail (not hang) after ``timeout``."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern.encode(), seen):
        left = deadline - time.monotonic()
        assert left > 0, seen
        if select.select([pty.fd], [], [], min(left, 0.5))[0]:
            try:
                seen += pty.read(4096)
            except EOFError:
                break
    return seen.decode(errors="replace")


def wait_exit(pty: PtyProcess, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while pty.isalive():
        assert time.monotonic() < deadline, "still running"
        if select.select([pty.fd], [], [], 0.2)[0]:
            with contextlib.suppress(EOFError):
                pty.read(4096)
    return int(pty.exitstatus)


def test_attach_is_an_interactive_terminal(standalone: Standalone) -> None:
    program = (
        "import os, sys\n"
        "print('hello from tty', sys.stdin.isatty(), flush=True)\n"
        "while True:\n"
        "    line = input('> ')\n"
        "    if line == 'size': print('size', *os.get_terminal_size(), flush=True)\n"
        "    elif line == 'quit': sys.exit(3)\n"
        "    else: print('echo:' + line, flush=True)\n"
    )
    assert (
        standalone.run("run", "-d", "-t", "--name", "repl", "--", PY, "-c", program).returncode == 0
    )
    pty = PtyProcess.spawn(
        [CLI, "--url", standalone.url, "attach", "repl"], env=standalone.env, dimensions=(30, 90)
    )
    try:
        out = read_until(pty, r"hello from tty True[\s\S]*> ")  # replayed, then live
        assert "[attached to repl; ctrl-] detaches]" in out
        pty.write(b"size\r")
        assert "size 90 30" in read_until(pty, r"size \d+ \d+")
        pty.setwinsize(40, 100)  # SIGWINCH -> process/resize
        time.sleep(0.5)
        pty.write(b"size\r")
        read_until(pty, r"size 100 40")
        pty.write(b"hi there\r")
        read_until(pty, "echo:hi there")
        pty.write(b"\x1d")  # the detach key
        assert "[detached from repl; it keeps running]" in read_until(pty, "detached")
        assert wait_exit(pty) == 0
    finally:
        if pty.isalive():
            pty.terminate(force=True)
    wait_running_state(standalone, "repl", "running")
    # Attach again: the process ends and attach exits with its status.
    pty = PtyProcess.spawn(
        [CLI, "--url", standalone.url, "attach", "--no-replay", "repl"], env=standalone.env
    )
    try:
        read_until(pty, "attached")
        pty.write(b"quit\r")
        read_until(pty, "quit")
        assert wait_exit(pty) == 3
    finally:
        if pty.isalive():
            pty.terminate(force=True)


@pytest.mark.parametrize(
    ("spec", "key"), [("ctrl-]", b"\x1d"), ("^P,^Q", b"\x10\x11"), ("ctrl-x", b"\x18")]
)
def test_parse_detach_key(spec: str, key: bytes) -> None:
    assert parse_detach_key(spec) == key
    with pytest.raises(ValueError):
        parse_detach_key("ctrl-")


def test_run_tty_interactive_from_a_terminal(standalone: Standalone) -> None:
    program = "import sys; print(sys.stdin.isatty()); print('you said', input('x? ')); sys.exit(4)"
    pty = PtyProcess.spawn(
        [CLI, "--url", standalone.url, "run", "-t", "-i", "--", PY, "-c", program],
        env=standalone.env,
    )
    try:
        read_until(pty, r"True\s+x\? ")
        pty.write(b"hey\r")
        assert "you said hey" in read_until(pty, "you said hey")
        assert wait_exit(pty) == 4
    finally:
        if pty.isalive():
            pty.terminate(force=True)


def test_run_with_time_memory_and_cpu_limits(standalone: Standalone) -> None:
    timed = standalone.run("run", "--time-limit", "0.5", "--", "sleep", "30")
    assert timed.returncode == 128 + signal.SIGTERM
    script = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0], resource.getrlimit(resource.RLIMIT_CPU))"
    limited = standalone.run(
        "run", "--memory-limit", "2G", "--cpu-limit", "30", "--", sys.executable, "-c", script
    )
    assert (limited.returncode, limited.stdout) == (0, f"{2 << 30} (30, 31)\n")
    bad = standalone.run("run", "--memory-limit", "lots", "--", "true")
    assert bad.returncode == 2 and "memory limit 'lots' is not a size like 512M or 2G" in bad.stderr
    assert "true" not in {p["argv"][0] for p in json.loads(standalone.run("ps", "--json").stdout)}


def test_more_than_2_mib_through_run_logs_and_attach(standalone: Standalone) -> None:
    """Every line once, in order, whichever command reads it (1-MiB pages, SPEC 4)."""
    done = standalone.run("run", "--name", "numbered", "--", *NUMBERED)
    assert done.returncode == 0, done.stderr
    assert_numbered(done.stdout)
    assert_numbered(standalone.run("logs", "numbered").stdout)
    last = f"{NUMBERED_LINES - 2}\n{NUMBERED_LINES - 1}\n"
    assert standalone.run("logs", "--tail", "2", "numbered").stdout == last  # as `tail -n 2`
    assert standalone.run("logs", "--tail", "0", "numbered").stdout == ""
    assert standalone.run("run", "--name", "open", "--", "printf", "a\nb\nc").stdout == "a\nb\nc"
    assert standalone.run("logs", "--tail", "2", "open").stdout == "b\nc"  # c: a line, unended
    bad = standalone.run("logs", "--tail", "-1", "numbered")
    assert bad.returncode == 2 and "--tail -1: the number of lines must be 0 or more" in bad.stderr
    attached = standalone.run("attach", "numbered", input="")  # not a terminal: replay and follow
    assert attached.returncode == 0, attached.stderr
    assert_numbered(attached.stdout)


def test_wait_exits_with_the_worst_status(standalone: Standalone) -> None:
    standalone.run("run", "-d", "--name", "ok", "--", PY, "-c", "import time; time.sleep(5)")
    standalone.run("run", "-d", "--name", "bad", "--", PY, "-c", "import sys; sys.exit(5)")
    standalone.run("run", "-d", "--name", "long", "--", "sleep", "60")
    started = time.monotonic()
    both = standalone.run("wait", "ok", "bad")
    assert time.monotonic() - started > 1  # not before "ok" ended
    assert both.returncode == 5, both
    assert both.stdout == "ok: exited 0\nbad: exited 5\n"
    timed_out = standalone.run("wait", "ok", "long", "--timeout", "0.3")
    assert timed_out.returncode == 124 and "long: still running" in timed_out.stdout
    # A timeout wins over a known failure, even one above 124: not all of them ended.
    standalone.run("run", "-d", "--name", "killed", "--", "bash", "-c", "kill -TERM $$")
    killed_and_running = standalone.run("wait", "killed", "long", "--timeout", "0.3")
    assert killed_and_running.returncode == 124, killed_and_running
    assert killed_and_running.stdout == "killed: killed by SIGTERM\nlong: still running\n"
    all_ended = standalone.run("wait", "bad", "killed")  # all ended: the highest status
    assert all_ended.returncode == 128 + signal.SIGTERM
    unknown = standalone.run("wait", "ok", "nosuch")
    assert unknown.returncode == 1 and "unknown process id nosuch" in unknown.stderr
    negative = standalone.run("wait", "ok", "--timeout", "-1")
    assert negative.returncode == 2 and "must not be negative" in negative.stderr
    assert standalone.run("kill", "long").returncode == 0


def test_run_wait_for_port_and_ps_show_the_port(standalone: Standalone) -> None:
    served = standalone.run(
        "run", "--wait-for-port", "--name", "web", "--",
        PY, "-m", "http.server", "0", "--bind", "127.0.0.1",
    )  # fmt: skip
    try:
        assert served.returncode == 0, served.stderr
        name, listening = served.stdout.splitlines()
        port = int(re.fullmatch(r"listening on 127\.0\.0\.1:(\d+) \(pid \d+\)", listening)[1])
        assert name == "web"
        row = next(r for r in standalone.run("ps").stdout.splitlines() if r.startswith("web "))
        assert re.search(rf"\s{port}\s", row) and "%" in row, row
        [info] = [
            i for i in json.loads(standalone.run("ps", "--json").stdout) if i["processId"] == "web"
        ]
        assert info["ports"][0]["port"] == port and info["usage"]["processes"] == 1
        assert info["origin"] == {"kind": "cli", "name": "jupyter exec"}
    finally:
        standalone.run("kill", "web")
    never = standalone.run("run", "--wait-for-port", "--", PY, "-c", "pass")
    assert never.returncode == 1 and "before it listened on a port" in never.stderr
    quiet = standalone.run(
        "run", "--wait-for-port", "--port-timeout", "0.5", "--name", "mute", "--", "sleep", "30"
    )
    assert quiet.returncode == 1 and "listens on no port after 0.5 s" in quiet.stderr
    assert "it keeps running" in quiet.stderr
    assert standalone.run("kill", "mute").returncode == 0
