"""SPEC 11 from a shell: `run --restart/--queue/--after`, `queue`, and what `ps`, `kill`
and `wait` say of them, against a real standalone server. The commands run in this
process (`main`, the entry point's own code, its output read from the real file
descriptors): the same as the subprocesses of test_cli.py without an interpreter's
start for each of the many calls. One test goes through a subprocess and the user's
exec daemon, as a shell does."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.frontends.cli import main
from tests.daemon.harness import daemons_stopped, kill_daemon

from ..magics.jupyter_process import clean_env
from . import test_cli
from .test_cli import CLI, PY, Standalone

#: A standalone server for this module, made as test_cli.py makes its own.
standalone = test_cli.standalone

pytestmark = pytest.mark.slow


@dataclass
class InProcess:
    """`jupyter exec --url URL ...` as `main` in this process (module docstring)."""

    url: str
    capfd: pytest.CaptureFixture[str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.capfd.readouterr()
        try:
            status = main(["--url", self.url, *args])
        except SystemExit as exc:  # argparse refusing the line
            status = exc.code if isinstance(exc.code, int) else 2
        out, err = self.capfd.readouterr()
        return subprocess.CompletedProcess(["jupyter exec", *args], status, out, err)


@pytest.fixture
def jx(standalone: Standalone, capfd: pytest.CaptureFixture[str]) -> InProcess:
    return InProcess(standalone.url, capfd)


def infos(server: InProcess) -> dict[str, dict[str, Any]]:
    return {i["processId"]: i for i in json.loads(server.run("ps", "--json").stdout)}


def until(server: InProcess, check: Any, timeout: float = 15) -> dict[str, dict[str, Any]]:
    """`ps --json` once `check(processes)` holds."""
    deadline = time.monotonic() + timeout
    while not check(found := infos(server)):
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    return found


def row(server: InProcess, process_id: str) -> list[str]:
    return next(
        r.split() for r in server.run("ps").stdout.splitlines() if r.split()[0] == process_id
    )


def test_run_restarts_on_failure_in_one_stream(jx: InProcess) -> None:
    done = jx.run(
        "run", "--name", "flaky", "--restart", "on-failure", "--max-restarts", "2",
        "--restart-delay", "50", "--", "bash", "-c", "echo run; exit 3",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stdout == "run\nrun\nrun\n"  # every run, one stream, in order
    assert done.stderr == "[flaky exited 3; restart 1]\n[flaky exited 3; restart 2]\n"
    flaky = infos(jx)["flaky"]
    assert (flaky["restarts"], flaky["exitCode"], flaky["state"]) == (2, 3, "closed")
    assert flaky["restartPolicy"] == {"policy": "on-failure", "maxRestarts": 2, "delayMs": 50}
    assert row(jx, "flaky")[1:4] == ["closed", "3", "2/2"]
    assert jx.run("logs", "flaky").stdout == "run\nrun\nrun\n"


def test_a_queue_runs_its_processes_in_order_within_its_parallel(jx: InProcess) -> None:
    listed = jx.run("queue", "slot", "--parallel", "1")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split() == ["slot", "1", "0", "0"]
    for name in ("q1", "q2", "q3"):
        started = jx.run("run", "-d", "--queue", "slot", "--name", name, "--", "sleep", "30")
        assert started.stdout == f"{name}\n", started.stderr
    found = until(jx, lambda f: f["q1"]["state"] == "running")
    assert [(found[n]["state"], found[n]["pid"]) for n in ("q2", "q3")] == [("queued", None)] * 2
    assert row(jx, "q2")[1:3] == ["queued", "slot"]
    [slot] = json.loads(jx.run("queue", "slot", "--json").stdout)
    assert slot == {"name": "slot", "parallel": 1, "running": 1, "queued": 2}
    assert "slot" in jx.run("queue").stdout  # every queue
    # The first one's end starts the next, not the one after it.
    assert jx.run("kill", "q1").returncode == 0
    found = until(jx, lambda f: f["q2"]["state"] == "running")
    assert found["q3"]["state"] == "queued"
    # A raised limit starts what waits.
    raised = jx.run("queue", "slot", "--parallel", "2")
    assert raised.stdout.splitlines()[1].split()[:2] == ["slot", "2"]
    until(jx, lambda f: f["q3"]["state"] == "running")
    for name in ("q2", "q3"):
        assert jx.run("kill", name).returncode == 0


def test_after_runs_on_success_and_never_on_a_failure(jx: InProcess) -> None:
    jx.run("run", "-d", "--name", "dep-ok", "--", PY, "-c", "import time; time.sleep(0.5)")
    after_ok = jx.run("run", "--after", "dep-ok", "--", "echo", "went")
    assert (after_ok.returncode, after_ok.stdout) == (0, "went\n")
    jx.run("run", "-d", "--name", "dep-bad", "--", "bash", "-c", "sleep 0.3; exit 4")
    never = jx.run("run", "--name", "blocked", "--after", "dep-bad", "--", "echo", "no")
    assert (never.returncode, never.stdout) == (1, "")
    queued, failed = never.stderr.splitlines()
    assert queued == "[blocked queued: after dep-bad]"  # followed: why nothing comes yet
    assert failed.startswith("jupyter exec run: blocked never started: ")
    assert "dep-bad" in failed and "4" in failed, failed
    blocked = infos(jx)["blocked"]
    assert (blocked["exitCode"], blocked["pid"], blocked["after"]) == (None, None, ["dep-bad"])
    assert row(jx, "blocked")[1:4] == ["closed", "never", "started"]
    waited = jx.run("wait", "dep-bad", "blocked")
    assert waited.returncode == 4 and waited.stdout == "dep-bad: exited 4\nblocked: never started\n"


def test_kill_a_queued_or_restarting_process_says_what_it_stopped(jx: InProcess) -> None:
    jx.run("run", "-d", "--name", "long-dep", "--", "sleep", "30")
    jx.run("run", "-d", "--name", "waits", "--after", "long-dep", "--", "echo", "x")
    killed = jx.run("kill", "waits")
    assert (killed.returncode, killed.stderr) == (0, "waits was queued: it ends without starting\n")
    waits = until(jx, lambda f: f["waits"]["state"] == "closed")["waits"]
    assert waits["exitCode"] is None and waits["failure"]
    jx.run(
        "run", "-d", "--name", "loop", "--restart", "always", "--restart-delay", "60000",
        "--", "true",
    )  # fmt: skip
    until(jx, lambda f: f["loop"]["state"] == "restarting")
    stopped = jx.run("kill", "loop")
    assert stopped.stderr == "loop was waiting to restart: it restarts no more\n"
    loop = until(jx, lambda f: f["loop"]["state"] == "closed")["loop"]
    assert loop["restarts"] == 0
    jx.run("kill", "long-dep")


#: `run` options that the CLI refuses itself (status 2), and what it says.
BAD_RUN_OPTIONS = [
    (["--restart", "sometimes"], "unknown restart policy 'sometimes'; use one of"),
    (["--max-restarts", "2"], "--max-restarts needs --restart on-failure or --restart always"),
    (["--restart-delay", "10"], "--restart-delay needs --restart"),
    (["--restart", "always", "--restart-delay", "-1"], "--restart-delay -1 must be 0 to"),
    (["--restart", "always", "--max-restarts", "-2"], "--max-restarts -2 must be 0 to"),
    (["--queue", ""], "a queue name must not be empty"),
    (["--after", ""], "--after needs a process id"),
    (["--max-restarts", "x"], "argument --max-restarts: invalid int value: 'x'"),
]


def test_bad_scheduling_options_are_status_2_and_nothing_starts(jx: InProcess) -> None:
    before = set(infos(jx))
    for options, message in BAD_RUN_OPTIONS:
        bad = jx.run("run", "--name", "bad-one", *options, "--", "echo", "hi")
        assert bad.returncode == 2 and message in bad.stderr, (options, bad.stderr)
        assert bad.stdout == ""
    assert set(infos(jx)) == before


def test_what_only_the_server_knows_is_status_1_and_nothing_starts(jx: InProcess) -> None:
    before = set(infos(jx))
    unknown = jx.run("run", "--name", "orphan", "--after", "nosuch", "--", "true")
    assert unknown.returncode == 1 and "unknown process id 'nosuch'" in unknown.stderr
    itself = jx.run("run", "--name", "selfish", "--after", "selfish", "--", "true")
    assert itself.returncode == 1 and "the process itself" in itself.stderr
    assert set(infos(jx)) == before


def test_bad_queue_lines(jx: InProcess) -> None:
    for args, status, message in [
        (["--parallel", "2"], 2, "--parallel needs a queue NAME"),
        (["slot2", "--parallel", "0"], 2, "--parallel 0 must be at least 1"),
        (["", "--parallel", "1"], 2, "a queue name must not be empty"),
        (["never-made"], 1, "no queue named never-made yet"),
    ]:
        bad = jx.run("queue", *args)
        assert bad.returncode == status and message in bad.stderr, (args, bad.stderr)
    assert "slot2" not in jx.run("queue").stdout  # nothing was set


def test_through_the_exec_daemon_a_queue_and_a_dependency_outlive_its_sigkill(
    tmp_path: Path,
) -> None:
    """No server: the CLI's scheduled processes live in the user's exec daemon (SPEC 3
    "Every front"); killed with SIGKILL, the next daemon keeps their places."""
    runtime = tmp_path / "runtime"
    env = clean_env(runtime)  # no server anywhere: discovery ends at the daemon

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60)

    with daemons_stopped(runtime):
        gate = tmp_path / "go"  # d1 runs until the test opens the gate
        wait_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
        cli("run", "-d", "--name", "d1", "--queue", "dq", "--", "bash", "-c", wait_gate)
        cli("run", "-d", "--name", "d2", "--queue", "dq", "--", "echo", "second")
        cli("run", "-d", "--name", "d3", "--after", "d2", "--", "echo", "third")
        waiting = {i["processId"]: i["state"] for i in json.loads(cli("ps", "--json").stdout)}
        assert waiting == {"d1": "running", "d2": "queued", "d3": "queued"}
        kill_daemon(runtime)
        assert cli("queue", "dq").stdout.splitlines()[1].split() == ["dq", "1", "1", "1"]
        gate.touch()
        waited = cli("wait", "d1", "d2", "d3", "--timeout", "30")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert (cli("logs", "d2").stdout, cli("logs", "d3").stdout) == ("second\n", "third\n")
        ran = {i["processId"]: i for i in json.loads(cli("ps", "--json").stdout)}
        assert ran["d1"]["exitedAt"] <= ran["d2"]["startedAt"] <= ran["d3"]["startedAt"]
