"""`%exec --restart/--queue/--after`, `%queue`, and what `%ps`, `%terminate`, the handle
and the live view make of SPEC 11's states, in a real IPython shell (test_shell.py's:
the embedded registry, whose core is the daemon's)."""

from __future__ import annotations

import sys
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_exec.frontends.handle import ExecProcess, NeverStartedError
from jupyter_exec.frontends.magics import ExecMagics

from . import test_shell
from .test_shell import RecordingPublisher, line

#: This module's shell and its fixtures, made as test_shell.py makes its own.
ip, magics, recorder = test_shell.ip, test_shell.magics, test_shell.recorder

PY = sys.executable


def state_of(handle: ExecProcess, state: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while handle.info.state != state:
        assert time.monotonic() < deadline, handle.info
        time.sleep(0.05)


def ps_row(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], process_id: str) -> list[str]:
    capsys.readouterr()
    line(ip, "ps", "")
    rows = capsys.readouterr().out.splitlines()
    return next(r.split() for r in rows if r.split()[:1] == [process_id])


def test_exec_restart_on_failure_keeps_one_id_and_one_stream(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    p = line(
        ip, "exec",
        "-q --name m-flaky --restart on-failure --max-restarts 2 --restart-delay 20 "
        "bash -c 'echo run; exit 3'",
    )  # fmt: skip
    assert p.wait(30) == 3
    assert (p.info.restarts, p.info.restart_policy) == (
        2, {"policy": "on-failure", "maxRestarts": 2, "delayMs": 20},
    )  # fmt: skip
    assert p.output == "run\nrun\nrun\n"
    assert ps_row(ip, capsys, "m-flaky")[1:4] == ["closed", "3", "2/2"]


def test_queue_magic_and_a_queue_of_one(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "queue", "m-slot --parallel 1")
    assert capsys.readouterr().out.splitlines()[1].split() == ["m-slot", "1", "0", "0"]
    first = line(ip, "exec", "-q --name m-q1 --queue m-slot sleep 30")
    second = line(ip, "exec", "-q --name m-q2 --queue m-slot sleep 30")
    state_of(first, "running")
    assert (second.info.state, second.info.pid, second.running) == ("queued", None, False)
    assert ps_row(ip, capsys, "m-q2")[1:3] == ["queued", "m-slot"]
    line(ip, "queue", "m-slot")
    assert capsys.readouterr().out.splitlines()[1].split() == ["m-slot", "1", "1", "1"]
    line(ip, "terminate", "m-q2")  # taken out of its queue: it never starts
    assert capsys.readouterr().out == "m-q2 was queued: it ends without starting\n"
    assert second.wait(10) == -1 and second.exit_code is None and second.info.failure
    # Without a live view, %exec says the process waits, or never starts, not "started".
    magics.live_display = False
    line(ip, "exec", "--name m-q3 --queue m-slot --after m-q1 true")
    assert capsys.readouterr().out == "queued m-q3: true  (%read m-q3)\n"
    line(ip, "terminate", "m-q1")
    first.wait(10)
    line(ip, "exec", "--name m-q4 --after m-q1 true")
    assert capsys.readouterr().out == "terminating m-q1\nnever started m-q4: true  (%read m-q4)\n"


def test_exec_after_and_a_dependency_that_fails(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "exec", f"-q --name m-dep {PY} -c 'import time; time.sleep(0.3)'")
    follows = line(ip, "exec", "-q --name m-follows --after m-dep echo went")
    assert follows.wait(30, check=True) == 0 and follows.output == "went\n"
    line(ip, "exec", "-q --name m-broken bash -c 'exit 5'")
    blocked = line(ip, "exec", "-q --name m-blocked --after m-broken echo no")
    with pytest.raises(NeverStartedError, match=r"m-blocked never started: .*m-broken"):
        blocked.wait(30, check=True)
    assert (blocked.exit_code, blocked.output, blocked.info.after) == (None, "", ["m-broken"])
    assert ps_row(ip, capsys, "m-blocked")[1:4] == ["closed", "never", "started"]
    capsys.readouterr()
    with pytest.raises(UsageError, match="m-broken exited 5; m-blocked never started"):
        line(ip, "wait", "m-broken m-blocked")
    assert capsys.readouterr().out == "m-broken: exited 5\nm-blocked: never started\n"
    assert repr(blocked) == "<exec m-blocked: never started>"


def test_the_live_view_follows_a_queued_process_until_it_ends(
    ip: InteractiveShell, recorder: RecordingPublisher
) -> None:
    line(ip, "exec", "-q --name m-gate sleep 0.5")
    result = ip.run_cell("v = %exec --name m-viewed --after m-gate echo through")
    assert result.success, result.error_in_exec
    display_id = recorder.messages[0]["display_id"]
    first = recorder.for_id(display_id)[0]["data"]
    assert "m-viewed: queued" in first["text/plain"]
    assert " · after m-gate" in first["text/html"]
    ip.user_ns["v"].wait(30)
    deadline = time.monotonic() + 10
    while "exited 0" not in recorder.for_id(display_id)[-1]["data"]["text/plain"]:
        assert time.monotonic() < deadline, recorder.for_id(display_id)[-1]
        time.sleep(0.1)
    assert "through" in recorder.for_id(display_id)[-1]["data"]["text/plain"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--restart sometimes", "unknown restart policy 'sometimes'"),
        ("--max-restarts 2", "--max-restarts needs --restart"),
        ("--restart always --restart-delay -1", "--restart-delay -1 must be 0 to 60000"),
        ("--queue ''", "a queue name must not be empty"),
        ("--after nosuch", "unknown process id 'nosuch'"),
        ("--after m-bad", "the process itself"),
    ],
)
def test_bad_options_are_usage_errors_and_nothing_starts(
    ip: InteractiveShell, magics: ExecMagics, options: str, message: str
) -> None:
    before = {info.process_id for info in magics.client.list()}
    with pytest.raises(UsageError, match=message):
        line(ip, "exec", f"-q --name m-bad {options} echo hi")
    assert {info.process_id for info in magics.client.list()} == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--parallel 2", "--parallel needs a queue name"),
        ("m-slot2 --parallel 0", "--parallel 0 must be at least 1"),
        ("'' --parallel 1", "a queue name must not be empty"),
    ],
)
def test_bad_queue_lines_are_usage_errors(
    ip: InteractiveShell, magics: ExecMagics, text: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        line(ip, "queue", text)
    assert "m-slot2" not in {q.name for q in magics.client.queues()}


def test_queue_magic_without_queues_or_that_queue(
    ip: InteractiveShell, magics: ExecMagics, capsys: pytest.CaptureFixture[str]
) -> None:
    line(ip, "queue", "m-never-made")
    assert capsys.readouterr().out == "no queue named m-never-made yet\n"
