"""The magics in a real IPython InteractiveShell with the embedded registry.

No server, and ``%exec_connect --embedded``: processes live in this test
process (terminal IPython with the user's exec daemon is tested at the end). Live views are forced on and their display messages
recorded through a DisplayPublisher, the same path ipykernel's publisher takes.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_exec.frontends import magics as magics_module
from jupyter_exec.frontends.handle import ExecProcess, ProcessExitedError
from jupyter_exec.frontends.magics import ExecMagics
from jupyter_exec.frontends.view import live_views, stop_all_views
from jupyter_exec.wire.errors import ExecError
from tests.daemon.harness import daemons_stopped
from tests.service import NUMBERED, NUMBERED_LINES, assert_numbered

PY = sys.executable


class RecordingPublisher(DisplayPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def publish(  # type: ignore[override]
        self, data: dict[str, Any], metadata: Any = None, source: Any = None, *,
        transient: dict[str, Any] | None = None, update: bool = False, **kwargs: Any,
    ) -> None:  # fmt: skip
        with self.lock:
            self.messages.append(
                {"data": data, "display_id": (transient or {}).get("display_id"), "update": update,
                 "thread": threading.current_thread().name}
            )  # fmt: skip

    def for_id(self, display_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m["display_id"] == display_id]


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    saved = {
        k: os.environ.pop(k) for k in ("JUPYTER_EXEC_URL", "JPY_PARENT_PID") if k in os.environ
    }
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_exec")
    shell.run_line_magic("exec_connect", "--embedded")
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "jupyter_exec")
        os.environ.update(saved)


@pytest.fixture
def magics(ip: InteractiveShell) -> Iterator[ExecMagics]:
    found = magics_module._loaded[id(ip)]
    found.live_display = False
    yield found
    found.live_display = None


@pytest.fixture
def recorder(ip: InteractiveShell, magics: ExecMagics) -> Iterator[RecordingPublisher]:
    saved = ip.display_pub
    ip.display_pub = RecordingPublisher()
    magics.live_display = True
    try:
        yield ip.display_pub
    finally:
        stop_all_views()
        ip.display_pub = saved


def line(ip: InteractiveShell, magic: str, text: str) -> Any:
    return ip.run_line_magic(magic, text)


def test_exec_returns_a_handle_with_the_whole_api(ip: InteractiveShell, magics: ExecMagics) -> None:
    p = line(
        ip,
        "exec",
        f"-q {PY} -c \"import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)\"",
    )
    assert isinstance(p, ExecProcess)
    assert p.id.startswith("p")
    assert p.wait(10) == 3
    assert (p.exit_code, p.returncode) == (3, 3)
    assert sorted(p.output.splitlines()) == ["err", "out"]
    assert p.read().chunks[0].data[:3] in (b"out", b"err")
    assert p.info.state == "closed"
    assert re.fullmatch(rf"<exec {p.id}: exited 3 after \d+\.\ds>", repr(p))
    assert "exited 3" in p._repr_html_()
    q = line(ip, "exec", "-q true")
    assert int(q.id[1:]) > int(p.id[1:])  # short, readable, unique


def test_named_process_and_duplicate_name(ip: InteractiveShell, magics: ExecMagics) -> None:
    p = line(ip, "exec", "-q --name dup sleep 5")
    assert p.id == "dup"
    with pytest.raises(UsageError, match="already exists"):
        line(ip, "exec", "-q --name dup true")
    assert p.terminate(grace=1)
    assert p.wait(10) == 128 + signal.SIGTERM
    assert p.returncode == -signal.SIGTERM
    with pytest.raises(UsageError, match="already exists"):  # exited, but still kept
        line(ip, "exec", "-q --name dup true")
    again = line(ip, "exec", "-q --name dup --replace sh -c 'exit 4'")
    assert again.id == "dup" and again.wait(10) == 4


def test_cell_magic_runs_bash_with_env_and_cwd(
    ip: InteractiveShell, magics: ExecMagics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ip.run_cell(
        f"%%exec --wait --name script1 --env GREETING=hi --cwd {tmp_path}\n"
        'echo "$GREETING from $(pwd)"\nexit 0\n'
    )
    assert result.success, result.error_in_exec
    handle = result.result
    assert handle.output == f"hi from {tmp_path}\n"
    assert handle.info.label.startswith("bash: echo")
    assert f"hi from {tmp_path}" in capsys.readouterr().out  # streamed: no kernel here


def test_wait_check_raises_called_process_error(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        line(ip, "exec", "-q --wait --check -- bash -c 'echo boom; exit 2'")
    assert info.value.returncode == 2 and "boom" in str(info.value)
    capsys.readouterr()
    ok = line(ip, "exec", "-q --wait -- bash -c 'exit 2'")  # no --check: no error, but said
    assert ok.exit_code == 2
    assert capsys.readouterr().err == f"[{ok.id} exited with status 2]\n"


def test_wait_reports_a_failing_exit_and_its_signal(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    """Terminal IPython: the output streams, then how it ended when it went wrong."""
    failed = line(ip, "exec", "--wait -- bash -c 'echo trying; exit 3'")
    out, err = capsys.readouterr()
    assert "trying\n" in out and err == f"[{failed.id} exited with status 3]\n"
    killed = line(ip, "exec", "--wait -- bash -c 'kill -TERM $$'")
    assert capsys.readouterr().err == f"[{killed.id} was killed by SIGTERM]\n"
    assert killed.exit_code == 128 + signal.SIGTERM
    fine = line(ip, "exec", "--wait true")
    assert fine.exit_code == 0 and capsys.readouterr().err == ""  # success stays quiet


def test_wait_for_returns_at_the_match_and_fails_clearly(
    ip: InteractiveShell, magics: ExecMagics
) -> None:
    start = time.monotonic()
    server = line(
        ip,
        "exec",
        f"-q --wait-for 'Listening on \\d+' {PY} -c \"import time; time.sleep(0.3); print('Listening on 8080', flush=True); time.sleep(30)\"",
    )
    assert time.monotonic() - start < 10
    assert server.running
    match = server.wait_for(r"on (\d+)")
    assert match.group(1) == "8080"
    server.terminate(grace=1)
    with pytest.raises(ProcessExitedError, match="exited with status 1 before its output matched"):
        line(ip, "exec", "-q --wait-for never -- bash -c 'echo nope; exit 1'")
    slow = line(ip, "exec", "-q sleep 20")
    with pytest.raises(TimeoutError):
        slow.wait_for("x", timeout=0.5)
    with pytest.raises(TimeoutError):
        line(ip, "exec", "-q --wait --timeout 0.5 sleep 20")
    slow.terminate(grace=1)


def test_read_magic_options(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    p = line(
        ip,
        "exec",
        '-q --name reader -- bash -c \'for i in 1 2 3 4; do echo line$i; done; printf "50%%\\r100%%\\n"; printf "\\033[31mred\\033[0m\\n"\'',
    )
    p.wait(10)
    capsys.readouterr()
    line(ip, "read", "reader")
    out = capsys.readouterr().out
    assert "line1\nline2\nline3\nline4\n100%\n" in out
    assert "\x1b[31mred" in out
    assert "[reader: exited 0 after" not in out and "[reader: exited 0;" in out
    line(ip, "read", "reader --tail 2")
    assert capsys.readouterr().out.startswith("100%\n\x1b[0m\x1b[31mred")
    line(ip, "read", "reader --raw")
    assert "50%\r100%" in capsys.readouterr().out
    with pytest.raises(UsageError, match="unknown process id nosuch"):
        line(ip, "read", "nosuch")


def test_read_until_waits_on_the_server(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "exec", "-q --name until -- bash -c 'echo a; sleep 0.3; echo ready; sleep 20'")
    capsys.readouterr()
    line(ip, "read", "until --wait 5000 --until ready")
    out = capsys.readouterr().out
    assert "a\nready\n" in out and "matched" in out
    line(ip, "terminate", "until")
    assert "terminating until" in capsys.readouterr().out


def test_write_eof_and_tty(ip: InteractiveShell, magics: ExecMagics) -> None:
    cat = line(ip, "exec", "-q --stdin cat")
    line(ip, "write", f'{cat.id} print("quoted  text")')
    line(ip, "write", f"{cat.id} -n no newline")
    line(ip, "write", f"{cat.id} --eof")
    assert cat.wait(10) == 0
    assert cat.output == 'print("quoted  text")\nno newline'
    plain = line(ip, "exec", "-q sleep 5")
    with pytest.raises(UsageError, match="stdinClosed"):
        line(ip, "write", f"{plain.id} hello")
    plain.kill()
    tty = line(
        ip, "exec", f"-q --tty {PY} -c \"import sys; print(sys.stdin.isatty(), input('name? '))\""
    )
    tty.wait_for("name\\? ", timeout=10)
    tty.write("ada\n")
    assert tty.wait(10) == 0
    assert "True ada" in tty.text


def test_signal_and_ps(
    ip: InteractiveShell,
    magics: ExecMagics,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for the whole command
    script = "import signal, sys, time; signal.signal(signal.SIGUSR1, lambda *a: (print('usr1', flush=True), sys.exit(9))); print('ready', flush=True); time.sleep(30)"
    p = line(ip, "exec", f'-q --name sig {PY} -c "{script}"')
    p.wait_for("ready", timeout=10)
    line(ip, "signal", "sig SIGUSR1")
    assert p.wait(10) == 9
    with pytest.raises(UsageError, match="unknown signal"):
        line(ip, "signal", "sig BOGUS")
    capsys.readouterr()
    line(ip, "ps", "")
    out = capsys.readouterr().out
    assert "ID" in out and "sig" in out and "closed" in out
    script = line(ip, "exec", "-q --name multi -- bash -c 'echo a\necho b'")
    script.wait(10)
    line(ip, "ps", "")
    rows = [r for r in capsys.readouterr().out.splitlines() if "multi" in r]
    assert len(rows) == 1 and "echo a⏎echo b" in rows[0]  # one row, newline shown


@pytest.mark.parametrize("quiet", ["-q", ""])
def test_interrupt_during_wait_goes_to_the_process(
    ip: InteractiveShell, magics: ExecMagics, quiet: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quiet, `p.wait` is interrupted; else the terminal stream, which then reads on."""
    script = "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: (print('got SIGINT', flush=True), sys.exit(5))); print('ready', flush=True); time.sleep(30)"
    client = magics.client  # the magics' own connection, before the cell blocks on it
    stop = threading.Event()

    def ctrl_c_once_ready() -> None:
        """Ctrl-C only once the child handles SIGINT and the magic is waiting (a fixed
        delay raced a slow start: the interrupt then hit the start, not the wait)."""
        while not stop.is_set():
            try:
                if b"ready" in client.read(f"intr{quiet}", 0).data:
                    break
            except ExecError:  # not started yet
                pass
            time.sleep(0.05)
        if stop.wait(0.5):
            return
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C raises KeyboardInterrupt, as in a kernel or a terminal, even when this
    # pytest inherited SIGINT ignored (a background job of a non-interactive shell).
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=ctrl_c_once_ready)
    presser.start()
    try:
        p = line(ip, "exec", f'{quiet} --wait --name intr{quiet} {PY} -c "{script}"')
    finally:
        stop.set()
        presser.join()
        signal.signal(signal.SIGINT, saved)
    assert p.exit_code == 5
    assert p.output == "ready\ngot SIGINT\n"
    if not quiet:  # streamed, every line once
        notice = "[sent SIGINT to intr; interrupt again to terminate it]\n"
        assert capsys.readouterr().out == "ready\n" + notice + "got SIGINT\n"


def test_live_view_updates_one_display_in_place(
    ip: InteractiveShell, recorder: RecordingPublisher, tmp_path: Path
) -> None:
    script = tmp_path / "progress.py"
    script.write_text(
        "import time\n"
        "for i in range(11):\n"
        "    print(f'\\r{i*10}%|' + '#'*i, end='', flush=True); time.sleep(0.05)\n"
        "print()\nprint('\\033[32mdone\\033[0m')\n"
    )
    result = ip.run_cell(f"p = %exec --name live {PY} {script}\np")
    assert result.success, result.error_in_exec
    p = ip.user_ns["p"]
    first = recorder.messages[0]
    assert first["update"] is False and first["display_id"]
    assert first["thread"] == threading.main_thread().name
    display_id = first["display_id"]
    # `p` on the last line shows nothing of its own: its live view is on screen...
    assert ip.display_formatter.format(p) == ({}, {})
    assert p.wait(10) == 0
    deadline = time.monotonic() + 10
    while "exited 0" not in recorder.for_id(display_id)[-1]["data"]["text/html"]:
        assert time.monotonic() < deadline, recorder.for_id(display_id)[-1]
        time.sleep(0.05)
    updates = recorder.for_id(display_id)[1:]
    assert updates and all(m["update"] for m in updates)
    assert all(m["thread"].startswith("jupyter-exec-view") for m in updates)
    assert len(updates) <= 30  # throttled, not one per chunk
    final = updates[-1]["data"]
    assert "100%|##########" in final["text/html"] and "0%|" not in final["text/html"].replace(
        "100%|", ""
    )
    assert '<span style="color:#00cd00">done</span>' in final["text/html"]
    assert final["text/plain"].endswith(
        "[live: exited 0 after " + final["text/plain"].rsplit("after ", 1)[1]
    )
    assert ip.run_cell("1").success  # ...but in a later cell it shows its summary
    recorder.messages.clear()
    ip.display_formatter.format(p)
    summary = recorder.messages[-1]["data"]
    assert summary["text/plain"].startswith("<exec live: exited 0 after ")
    assert "exited 0" in summary["text/html"] and "done" in summary["text/html"]


def test_live_view_survives_other_cells_and_stops_when_closed(
    ip: InteractiveShell, recorder: RecordingPublisher
) -> None:
    result = ip.run_cell("q = %exec --name follow -- bash -c 'echo one; sleep 1; echo two'")
    assert result.success
    display_id = recorder.messages[0]["display_id"]
    assert ip.run_cell("x = sum(range(10))").success  # another cell runs meanwhile
    ip.user_ns["q"].wait(10)
    deadline = time.monotonic() + 10
    while live_views():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    final = recorder.for_id(display_id)[-1]["data"]["text/html"]
    assert "one\ntwo" in final and "exited 0" in final


def test_attach_replays_then_follows(ip: InteractiveShell, recorder: RecordingPublisher) -> None:
    p = line(ip, "exec", "-q --name att -- bash -c 'echo before; sleep 0.5; echo after'")
    p.wait_for("before", timeout=10)
    recorder.messages.clear()
    handle = line(ip, "attach", "att")
    assert handle.id == "att"
    display_id = recorder.messages[0]["display_id"]
    handle.wait(10)
    deadline = time.monotonic() + 10
    while "exited 0" not in recorder.for_id(display_id)[-1]["data"]["text/html"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "before\nafter" in recorder.for_id(display_id)[-1]["data"]["text/html"]


def test_rerunning_a_cell_stops_its_old_view(
    ip: InteractiveShell, recorder: RecordingPublisher, magics: ExecMagics
) -> None:
    p = line(ip, "exec", "--name rerun sleep 30")
    view = next(v for v in live_views() if v.process_id == "rerun")
    view.cell_id = "cell-1"

    class Info:
        cell_id = "cell-1"

    magics._pre_run_cell(Info())
    view.join(timeout=3)
    assert not view.alive
    p.terminate(grace=1)


def test_exec_connect_shows_and_switches(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "exec_connect", "")
    assert "embedded registry" in capsys.readouterr().out
    with pytest.raises(UsageError, match="cannot connect"):
        line(ip, "exec_connect", "ws://127.0.0.1:9/ws --token x")
    line(ip, "exec_connect", "--embedded")
    assert "embedded registry" in capsys.readouterr().out


def test_a_handle_by_id_alone_uses_the_magics_connection(
    ip: InteractiveShell, magics: ExecMagics
) -> None:
    line(ip, "exec", "-q --name by-id sleep 30")
    handle = ExecProcess("by-id")  # what a new kernel writes after a restart
    assert handle.client is magics.client and handle.running
    handle.terminate(grace=100)
    with pytest.raises(LookupError, match="unknown process id nothing-here"):
        _ = ExecProcess("nothing-here").info
    with pytest.raises(TypeError, match=r"ExecProcess\(process_id\)"):
        ExecProcess(magics.client)


def test_usage_errors(ip: InteractiveShell, magics: ExecMagics) -> None:
    with pytest.raises(UsageError, match="needs a command"):
        line(ip, "exec", "--quiet")
    with pytest.raises(UsageError, match="KEY=VALUE"):
        line(ip, "exec", "--env nope true")
    with pytest.raises(UsageError, match="--check needs --wait"):
        line(ip, "exec", "--check true")
    with pytest.raises(UsageError):
        ip.run_cell_magic("exec", "python", "print(1)")
    assert "--wait-for REGEX" in ip.find_line_magic("exec").__doc__


def terminal_ipython(runtime: Path, code: str) -> subprocess.CompletedProcess[str]:
    """A real terminal IPython, no server around, runtime dir ``runtime``."""
    env = {k: v for k, v in os.environ.items() if k not in ("JPY_PARENT_PID", "JUPYTER_EXEC_URL")}
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    return subprocess.run(
        [PY, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor"],
        input=code, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_terminal_ipython_puts_its_processes_in_the_exec_daemon(tmp_path: Path) -> None:
    """Plain IPython, no server: the job outlives IPython, and the CLI lists it."""
    runtime = tmp_path / "runtime"
    with daemons_stopped(runtime):
        code = (
            "%load_ext jupyter_exec\n"
            "p = %exec -q --name stays sleep 60\n"
            "print('pid', p.info.pid)\n"
            "%exec_connect\n"
            "exit\n"
        )
        out = terminal_ipython(runtime, code)
        assert "exec daemon: processes outlive this front" in out.stdout, out
        assert "inside this kernel" not in out.stdout and "Traceback" not in out.stderr
        pid = int(out.stdout.split("pid ")[1].split()[0])
        os.kill(pid, 0)  # still running, IPython gone
        ps = subprocess.run(
            [str(Path(PY).parent / "jupyter-exec"), "ps"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
        )  # fmt: skip
        assert re.search(r"^stays\s+running", ps.stdout, re.M), ps


def test_terminal_ipython_falls_back_in_process_and_says_why_once(tmp_path: Path) -> None:
    """A runtime dir that cannot exist (under a regular file, which stops root too):
    no daemon can run, so the processes run in IPython and end with it; said once."""
    (tmp_path / "file").write_text("not a directory")
    pidfile = tmp_path / "pid"
    code = (
        "%load_ext jupyter_exec\n"
        "p = %exec -q sleep 60\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.info.pid))\n"
        "%ps\n"
        "%exec -q true\n"
        "exit\n"
    )
    out = terminal_ipython(tmp_path / "file" / "runtime", code)
    notices = re.findall(r"jupyter-exec: .*", out.stdout)
    assert len(notices) == 1, out.stdout
    assert "cannot use the runtime dir" in notices[0] and "Not a directory" in notices[0]
    assert "processes run inside this kernel and end with it" in notices[0]
    assert "sleep 60" in out.stdout
    assert re.search(r"Out\[\d+\]: <exec p2: (running|exited 0)", out.stdout), out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_exec_time_and_resource_limits(ip: InteractiveShell, magics: ExecMagics) -> None:
    timed = line(ip, "exec", "-q --wait --time-limit 0.5 -- sleep 30")
    assert timed.exit_code == 128 + signal.SIGTERM and timed.info.timed_out
    busy = line(ip, "exec", f"-q --wait --cpu-limit 1 -- {sys.executable} -c 'while True: pass'")
    assert busy.info.limit_exceeded == "cpu" and busy.info.limits == {"cpuSeconds": 1}
    grab = "b = bytearray(256 << 20)"
    small = line(ip, "exec", f"-q --wait --memory-limit 128M -- {sys.executable} -c '{grab}'")
    assert small.exit_code == 1 and "MemoryError" in small.output
    with pytest.raises(UsageError, match=r"time limit -1\.0 must be more than 0 seconds"):
        line(ip, "exec", "-q --time-limit -1 -- true")


# -- more than 2 MiB: every reader crosses 1-MiB pages (ExecClient.pages) ---------------------


@pytest.fixture(scope="module")
def numbered(ip: InteractiveShell) -> ExecProcess:
    """One closed process of `NUMBERED`'s lines, read below through each face."""
    p = line(ip, "exec", f"-q --name numbered -- {shlex.join(NUMBERED)}")
    assert p.wait(60) == 0
    return p  # type: ignore[no-any-return]


def test_handle_output_has_every_line_once(numbered: ExecProcess) -> None:
    assert_numbered(numbered.output)


def test_handle_text_and_read_as_a_terminal_have_every_line_once(
    ip: InteractiveShell,
    magics: ExecMagics,
    numbered: ExecProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the terminal emulator (TerminalLog), as `.text` and `%read` show it."""
    assert_numbered(numbered.text)
    assert numbered.tail(2) == f"{NUMBERED_LINES - 2}\n{NUMBERED_LINES - 1}"
    capsys.readouterr()
    line(ip, "read", "numbered")
    shown, status = capsys.readouterr().out.rsplit("\n[numbered: ", 1)
    assert_numbered(shown + "\n")
    assert status.startswith("exited 0;"), status


def test_read_magic_has_every_line_once(
    ip: InteractiveShell,
    magics: ExecMagics,
    numbered: ExecProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    line(ip, "read", "numbered --raw")
    assert_numbered(capsys.readouterr().out)
    after = numbered.read(0, max_bytes=1).chunks[0].seq  # from a cursor: only what follows
    first = numbered.read(0, max_bytes=1).data.decode()
    line(ip, "read", f"numbered --raw --after {after}")
    assert_numbered(first + capsys.readouterr().out)


def test_wait_in_a_terminal_streams_every_line_once(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    """`%exec --wait` outside a kernel copies the output as it comes (terminal_stream)."""
    capsys.readouterr()
    p = line(ip, "exec", f"--wait --name streamed -- {shlex.join(NUMBERED)}")
    assert p.exit_code == 0
    assert_numbered(capsys.readouterr().out)


def test_attach_view_shows_the_end_of_a_long_output(
    ip: InteractiveShell, recorder: RecordingPublisher, numbered: ExecProcess
) -> None:
    """The live view reads on past 'closed' until nothing is left (more than one page)."""
    recorder.messages.clear()
    line(ip, "attach", "numbered")
    display_id = recorder.messages[0]["display_id"]
    deadline = time.monotonic() + 60
    while live_views():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    final = recorder.for_id(display_id)[-1]["data"]["text/plain"]
    assert f"{NUMBERED_LINES - 2}\n{NUMBERED_LINES - 1}\n" in final, final[-300:]
    assert "numbered: exited 0" in final


def test_wait_magic_waits_for_all_and_raises_on_a_failure(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "exec", f'-q --name w-ok {PY} -c "import time; time.sleep(1)"')
    line(ip, "exec", f'-q --name w-bad {PY} -c "import sys; sys.exit(2)"')
    line(ip, "exec", "-q --name w-long sleep 60")
    capsys.readouterr()
    started = time.monotonic()
    with pytest.raises(UsageError, match="w-bad exited 2"):
        line(ip, "wait", "w-ok w-bad")
    assert time.monotonic() - started > 0.8
    assert capsys.readouterr().out == "w-ok: exited 0\nw-bad: exited 2\n"
    line(ip, "wait", "w-ok w-long --timeout 0.2")
    assert capsys.readouterr().out == "w-ok: exited 0\nw-long: still running\n"
    with pytest.raises(UsageError, match="unknown process id nosuch"):
        line(ip, "wait", "w-ok nosuch")
    with pytest.raises(UsageError, match="must not be negative"):
        line(ip, "wait", "w-ok --timeout -1")
    line(ip, "terminate", "w-long")


def test_exec_wait_for_port_and_the_kernels_origin(
    ip: InteractiveShell,
    magics: ExecMagics,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "work/analysis.ipynb")
    served = f"-q --name web --wait-for-port {PY} -m http.server 0 --bind 127.0.0.1"
    line(ip, "exec", served)
    said = capsys.readouterr().out
    assert re.fullmatch(r"web listens on 127\.0\.0\.1:\d+\n", said), said
    info = magics.client.wait_for_port("web", 1)
    assert info.origin == {"kind": "notebook", "name": "work/analysis.ipynb"}
    line(ip, "ps", "")
    row = next(r for r in capsys.readouterr().out.splitlines() if r.startswith("web "))
    assert str(info.ports[0]["port"]) in row
    line(ip, "terminate", "web")
    monkeypatch.delenv("JPY_SESSION_NAME")
    with pytest.raises(UsageError, match="exited 0 before it listened on a port"):
        line(ip, "exec", "-q --name quiet --wait-for-port true")
    assert magics.client.wait_for_port("quiet", 1).origin == {"kind": "console", "name": "IPython"}


def test_live_view_header_shows_the_port_and_usage_while_it_runs(
    ip: InteractiveShell, recorder: RecordingPublisher
) -> None:
    served = f"--name lv-web --wait-for-port {PY} -m http.server 0 --bind 127.0.0.1"
    result = ip.run_cell(f"p = %exec {served}")
    assert result.success, result.error_in_exec
    display_id = recorder.messages[0]["display_id"]
    port = ip.user_ns["p"].info.ports[0]["port"]
    deadline = time.monotonic() + 10
    while f" · :{port}" not in recorder.for_id(display_id)[-1]["data"]["text/html"]:
        assert time.monotonic() < deadline, recorder.for_id(display_id)[-1]
        time.sleep(0.1)
    header = recorder.for_id(display_id)[-1]["data"]["text/html"]
    assert re.search(r" · cpu \d+% · \d+(\.\d)?M", header), header
    line(ip, "terminate", "lv-web")
