"""An upgrade from a real earlier build: the wheel of the commit before the holder, then this one.

A daemon from before the holder cannot hand its children over (their pipes
are its own, its guardian kills them if it dies). So this build serves it as
it is while its job runs: every line readable, nothing killed. Once nothing
of it runs, the next start replaces it with a daemon of this build, which
lists the finished job with its exit status and every line, from the old
daemon's records (docs/daemon.md "Upgrades"). Upgrades between builds that
both have the holder hand running processes over: test_holder.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jupyter_exec.daemon import paths
from tests.daemon.harness import daemon_pid, daemons_stopped, wait_gone
from tests.magics.jupyter_process import BIN, clean_env

REPO = Path(__file__).resolve().parents[2]
JOB = (
    "import os, sys, time\n"
    "for n in range(30): print(n, flush=True); time.sleep(0.01)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
    "for n in range(30, 60): print(n, flush=True)\n"
    "sys.exit(5)"
)


@pytest.fixture(scope="session")
def old_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel of the last commit before the holder (built once a session)."""
    added = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--",
         "jupyter_exec/daemon/holder.py"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not added:
        pytest.skip("no git history here to build the previous wheel from")
    root = tmp_path_factory.mktemp("old-build")
    source = root / "src"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", f"{added[-1]}^"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    env = {**os.environ, "HATCH_BUILD_NO_HOOKS": "true"}
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(root), str(source)], env=env, check=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = root.glob("jupyter_exec-*.whl")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True)
    return venv


def cli(build: Path, runtime: Path, *args: str) -> str:
    done = subprocess.run(
        [str(build / "jupyter-exec"), *args],
        capture_output=True, text=True, env=clean_env(runtime), timeout=60, cwd=runtime,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(240)
def test_an_upgrade_from_the_build_before_the_holder(old_build: Path) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="jx-wheel-"))
    gate = runtime / "gate"
    with daemons_stopped(runtime):
        # The old build starts its daemon and a job.
        cli(old_build / "bin", runtime, "run", "-d", "--name", "job", "--",
            sys.executable, "-c", JOB, str(gate))  # fmt: skip
        old = daemon_pid(runtime)
        assert old is not None and "holder" not in json.loads(
            paths.record_path(runtime).read_text()
        )
        time.sleep(0.5)

        # This build is installed: it serves the old daemon's job as it is, every line.
        status = cli(BIN, runtime, "daemon", "status")
        assert f"daemon   pid {old}" in status and "from before the holder" in status
        assert "job" in cli(BIN, runtime, "ps")
        cli(BIN, runtime, "run", "-d", "--name", "beside", "--", "true")  # the old one runs it
        assert daemon_pid(runtime) == old
        gate.touch()
        deadline = time.monotonic() + 30
        while "closed" not in cli(BIN, runtime, "ps").split("job", 1)[1].split("\n")[0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        # Nothing of it runs any more: the next start replaces it, its records kept.
        cli(BIN, runtime, "run", "-d", "--name", "after", "--", "echo", "new")
        new = daemon_pid(runtime)
        assert new not in (None, old) and wait_gone([old])
        record = json.loads(paths.record_path(runtime).read_text())
        assert record["holder"]
        logs = cli(BIN, runtime, "logs", "job")
        assert logs.split() == [str(n) for n in range(60)]
        listing = cli(BIN, runtime, "ps")
        assert "job" in listing and "5" in listing.split("job", 1)[1].split("\n")[0]
        status = cli(BIN, runtime, "daemon", "status")
        assert "it was from before the holder and ran nothing any more" in status
