"""Upgrades from real earlier builds: their wheels installed, jobs started, this build over them.

Each earlier build is a wheel of a commit (`git archive`, built once and kept
in the test cache, tests/npm_cache.py), installed without dependencies into
a directory put first on PYTHONPATH: the test's own environment supplies the
dependencies, and the upgrade replaces those files in place, as
`pip install -U` does, while the old daemon and holder still run from them.

- 0.3.0 (the last release, with the holder): its jobs run on across the
  upgrade. This build's first command replaces the daemon (`daemon/stop`),
  the new daemon adopts every job from 0.3.0's holder, still running, and
  lists 0.3.0's finished job from its record on disk: every byte, in seq order.
- The commit before the holder: its daemon cannot hand its children over, so
  this build serves it as it is while its job runs, and replaces it once none
  does (docs/daemon.md "Upgrades").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_exec.client.unix_transport import connect_daemon
from jupyter_exec.core.proctree import ProcessRef, identify, kill_verified
from jupyter_exec.daemon import paths
from tests.daemon.harness import daemon_pid, daemons_stopped, holder_pid, wait_gone
from tests.magics.jupyter_process import clean_env
from tests.npm_cache import cache_dir

REPO = Path(__file__).resolve().parents[2]
#: The last release, with the holder (tag v0.3.0).
RELEASE_0_3_0 = "c986ee6"
#: Prints 0..29, waits for its gate file, prints 30..59, exits 5.
JOB = (
    "import os, sys, time\n"
    "for n in range(30): print(n, flush=True); time.sleep(0.01)\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
    "for n in range(30, 60): print(n, flush=True)\n"
    "sys.exit(5)"
)
LINES = [str(n) for n in range(60)]


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def wheel_of(commit: str | None) -> Path:
    """The wheel of `commit` (kept in the test cache), or of this working tree (None)."""
    env = {**os.environ, "HATCH_BUILD_NO_HOOKS": "true"}  # no panel build: not needed here
    pip = [sys.executable, "-m", "pip", "-q", "wheel", "--no-deps"]
    if commit is None:
        out = Path(tempfile.mkdtemp(prefix="jx-wheel-"))
        subprocess.run([*pip, "-w", str(out), str(REPO)], env=env, check=True)
        return next(out.glob("jupyter_exec-*.whl"))
    out = cache_dir() / "wheels" / commit
    found = list(out.glob("jupyter_exec-*.whl"))
    if found:
        return found[0]
    source = Path(tempfile.mkdtemp(prefix="jx-src-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    subprocess.run([*pip, "-w", str(out), str(source)], env=env, check=True)
    return next(out.glob("jupyter_exec-*.whl"))


def install(wheel: Path, target: Path) -> None:
    """`wheel` into `target` (over what is there: an upgrade in place)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
         "--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip


def commit_of(ref: str) -> str | None:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError:
        return None


@pytest.fixture(scope="session")
def builds() -> dict[str, Path]:
    """The earlier builds' wheels, by name (built once: kept in the test cache)."""
    before_holder = git(
        "log", "--diff-filter=A", "--format=%H", "--", "jupyter_exec/daemon/holder.py"
    ).split()
    release = commit_of(RELEASE_0_3_0)
    if not before_holder or release is None:
        pytest.skip("no git history here to build the earlier wheels from")
    return {"0.3.0": wheel_of(release), "before-holder": wheel_of(f"{before_holder[-1]}^")}


def cli(site: Path, runtime: Path, *args: str, version: str | None = None) -> str:
    """`jupyter-exec ARGS` of the build installed in `site`; `version`: what it reports."""
    env = {**clean_env(runtime), "PYTHONPATH": str(site)}
    if version is not None:
        env[paths.VERSION_ENV] = version
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_exec", *args],
        capture_output=True, text=True, env=env, timeout=60, cwd=runtime,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def listed(site: Path, runtime: Path, version: str | None = None) -> dict[str, dict[str, object]]:
    rows = json.loads(cli(site, runtime, "ps", "--json", version=version))
    return {str(row["processId"]): row for row in rows}


def wait_for(check: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


async def every_event(runtime: Path, process_id: str) -> list[tuple[int, str, bytes]]:
    """Everything the daemon keeps of a process, replayed: (seq, kind, data)."""
    client = await connect_daemon(paths.socket_path(runtime))
    try:
        events = []
        async for event in client.events(process_id, 0):
            data = getattr(event, "data", b"")
            events.append((event.seq, type(event).__name__, data))
        return events
    finally:
        await client.close()


def assert_every_byte_in_order(runtime: Path, process_id: str, newline: bytes) -> None:
    events = asyncio.run(every_event(runtime, process_id))
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))  # no seq lost
    assert [kind for _, kind, _ in events[-2:]] == ["ExitedEvent", "ClosedEvent"]
    output = b"".join(data for _, kind, data in events if kind == "OutputEvent")
    assert output == b"".join(line.encode() + newline for line in LINES)


@contextlib.contextmanager
def jobs_ended() -> Iterator[list[ProcessRef]]:
    """Afterwards, the jobs put in the list are gone, whatever a failed adoption left."""
    refs: list[ProcessRef] = []
    try:
        yield refs
    finally:
        kill_verified(refs, signal.SIGKILL)


@pytest.mark.timeout(240)
def test_jobs_of_0_3_0_survive_an_upgrade_to_this_build(builds: dict[str, Path]) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="jx-wheel-"))
    site, gate = runtime / "site", runtime / "gate"
    install(builds["0.3.0"], site)
    with daemons_stopped(runtime), jobs_ended() as refs:
        # 0.3.0 runs a PTY job and a pipe job, half way each, and one that finished.
        for name, tty in (("pty", ["--tty"]), ("pipe", [])):
            cli(site, runtime, "run", "-d", *tty, "--name", name, "--",
                sys.executable, "-c", JOB, str(gate))  # fmt: skip
        cli(site, runtime, "run", "-d", "--name", "done", "--",
            sys.executable, "-c", "print('done'); raise SystemExit(7)")  # fmt: skip
        old, holder = daemon_pid(runtime), holder_pid(runtime)
        assert old is not None and holder is not None
        record = json.loads(paths.record_path(runtime).read_text())
        assert (record["version"], record["holder"]) == ("0.3.0", holder)
        wait_for(lambda: listed(site, runtime)["done"]["state"] == "closed")
        for name in ("pty", "pipe"):
            wait_for(lambda n=name: cli(site, runtime, "logs", n).split() == LINES[:30])
        jobs = {n: listed(site, runtime)[n]["pid"] for n in ("pty", "pipe")}
        pids = [int(p) for p in jobs.values()]  # type: ignore[call-overload]
        refs.extend(ref for ref in map(identify, pids) if ref is not None)

        # This build is installed over it (a newer version), and its first command
        # replaces the daemon: the new one adopts both jobs, running, from the holder.
        install(wheel_of(None), site)
        new_listing = listed(site, runtime, version="0.3.1")
        new = daemon_pid(runtime)
        assert new not in (None, old) and wait_gone([old])
        assert holder_pid(runtime) == holder  # the holder outlives upgrades
        record = json.loads(paths.record_path(runtime).read_text())
        assert (record["version"], record["holder"]) == ("0.3.1", holder)
        for name in ("pty", "pipe"):
            assert (new_listing[name]["state"], new_listing[name]["pid"]) == (
                "running", jobs[name],
            )  # fmt: skip
        done = new_listing["done"]
        assert (done["state"], done["exitCode"]) == ("closed", 7)
        assert cli(site, runtime, "logs", "done", version="0.3.1") == "done\n"

        # The jobs go on under the new daemon and end there: no byte, no seq lost.
        gate.touch()
        wait_for(lambda: listed(site, runtime, "0.3.1")["pipe"]["state"] == "closed")
        wait_for(lambda: listed(site, runtime, "0.3.1")["pty"]["state"] == "closed")
        final = listed(site, runtime, "0.3.1")
        assert (final["pty"]["exitCode"], final["pipe"]["exitCode"]) == (5, 5)
        assert daemon_pid(runtime) == new and wait_gone(pids)
        assert_every_byte_in_order(runtime, "pipe", b"\n")
        assert_every_byte_in_order(runtime, "pty", b"\r\n")
        status = cli(site, runtime, "daemon", "status", version="0.3.1")
        assert f"replaces daemon {old} (version 0.3.0): version 0.3.1 is installed" in status


@pytest.mark.timeout(240)
def test_an_upgrade_from_the_build_before_the_holder(builds: dict[str, Path]) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="jx-wheel-"))
    site, gate = runtime / "site", runtime / "gate"
    install(builds["before-holder"], site)
    this = REPO  # this build, as the test imports it
    with daemons_stopped(runtime):
        # The old build starts its daemon and a job.
        cli(site, runtime, "run", "-d", "--name", "job", "--",
            sys.executable, "-c", JOB, str(gate))  # fmt: skip
        old = daemon_pid(runtime)
        assert old is not None and "holder" not in json.loads(
            paths.record_path(runtime).read_text()
        )
        time.sleep(0.5)

        # This build is installed: it serves the old daemon's job as it is, every line.
        status = cli(this, runtime, "daemon", "status")
        assert f"daemon   pid {old}" in status and "from before the holder" in status
        assert "job" in cli(this, runtime, "ps")
        cli(this, runtime, "run", "-d", "--name", "beside", "--", "true")  # the old one runs it
        assert daemon_pid(runtime) == old
        gate.touch()
        wait_for(lambda: "closed" in cli(this, runtime, "ps").split("job", 1)[1].split("\n")[0])

        # Nothing of it runs any more: the next start replaces it, its records kept.
        cli(this, runtime, "run", "-d", "--name", "after", "--", "echo", "new")
        new = daemon_pid(runtime)
        assert new not in (None, old) and wait_gone([old])
        record = json.loads(paths.record_path(runtime).read_text())
        assert record["holder"]
        logs = cli(this, runtime, "logs", "job")
        assert logs.split() == LINES
        listing = cli(this, runtime, "ps")
        assert "job" in listing and "5" in listing.split("job", 1)[1].split("\n")[0]
        status = cli(this, runtime, "daemon", "status")
        assert "it was from before the holder and ran nothing any more" in status
