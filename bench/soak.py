"""Soak: no process and no byte lost to crashes of the exec daemon or the Jupyter server.

Issue 19 part 4. `--processes` children print numbered lines (pipes and ttys,
some finishing with a known exit code), `--clients` websocket clients stream
their output through a Jupyter server, and the daemon and the server are each
SIGKILLed `--kills` times, interleaved, at random moments (the server is
started again on the same port; the next client call starts a daemon, which
adopts everything from the holder). Then it checks that:

- every process has its first pid and is running, or closed with its true exit code;
- every log holds every line, in order, from seq 1 (the counters tell);
- what each client streamed is exactly the start of the log (no gap, no repeat);
- once everything is stopped, no process is left (pids, and the marker in /proc).

`--scheduled` processes more use SPEC 11 (issue 27), started as the kills go on:
a third restart on failure (`maxRestarts`), a third wait in one queue of
`QUEUE_PARALLEL` slots, a third each wait for the one before it (`after`). The
check adds that none is lost or doubled (each restarting one ran exactly
`maxRestarts + 1` whole runs and ended with its exit code; each queued or
waiting one ran once, whole), and none started out of order (the queue's in
the order they were started and never more than its slots at once; each
`after` one once the one before it had exited).

Exits 1 if any check fails. `python bench/soak.py [--processes 50 --clients 20
--kills 10 --scheduled 30 --seed N]`; tests/daemon/test_soak.py runs a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from websockets.exceptions import WebSocketException  # noqa: E402

from jupyter_exec.client import ExecClient  # noqa: E402
from jupyter_exec.client.exec_client import ConnectionLostError  # noqa: E402
from jupyter_exec.core.proctree import kill_verified, marked_processes  # noqa: E402
from jupyter_exec.daemon import paths  # noqa: E402


@dataclass
class Job:
    """One child: `lines` numbered lines (None: forever), then `exit_code`."""

    name: str
    tty: bool
    lines: int | None
    exit_code: int
    pad: int
    delay: float

    def argv(self) -> list[str]:
        body = f"print(f'{{n}} {'x' * self.pad}', flush=True); time.sleep({self.delay})"
        loop = "n = 0\nwhile True:\n" if self.lines is None else f"for n in range({self.lines}):\n"
        step = "" if self.lines is not None else "\n    n += 1"
        code = f"import sys, time\n{loop}    {body}{step}\nsys.exit({self.exit_code})"
        return [sys.executable, "-c", code]

    def check(self, data: bytes) -> str | None:
        """What is wrong with this output (every line whole, numbered 0, 1, ...), or None."""
        lines = data.split(b"\n")
        if lines[-1]:
            return f"a torn last line {lines[-1][:60]!r}"
        numbers = []
        for line in lines[:-1]:
            m = re.fullmatch(rb"(\d+) (x*)\r?", line)
            if m is None or len(m.group(2)) != self.pad:
                return f"bad line {line[:60]!r}"
            numbers.append(int(m.group(1)))
        if numbers != list(range(len(numbers))):
            gap = next(i for i, n in enumerate(numbers) if n != i)
            return f"line {gap} is {numbers[gap]}"
        return None


#: The soak's queue runs this many at once (SPEC 11 `queue/set`).
QUEUE_PARALLEL = 2


@dataclass
class Scheduled:
    """A SPEC 11 child: `kind` "restart", "queue" or "after"; each run prints `begin`,
    `lines` numbered lines, `end` (with times in ns), then exits with `exit_code`."""

    name: str
    kind: str
    lines: int
    delay: float
    exit_code: int = 0
    max_restarts: int = 0
    after: str | None = None

    def argv(self) -> list[str]:
        code = (
            "import os, sys, time\n"
            "print('begin', time.time_ns(), flush=True)\n"
            f"for n in range({self.lines}):\n"
            f"    print(n, flush=True); time.sleep({self.delay})\n"
            "print('end', time.time_ns(), flush=True)\n"
            f"sys.exit({self.exit_code})"
        )
        return [sys.executable, "-c", code]

    def params(self) -> dict[str, object]:
        if self.kind == "restart":
            policy = {"policy": "on-failure", "maxRestarts": self.max_restarts, "delayMs": 200}
            return {"restart": policy}
        if self.kind == "queue":
            return {"queue": "soak"}
        return {"after": [self.after]} if self.after else {}

    def runs(self, data: bytes) -> tuple[list[tuple[int, int]], str | None]:
        """Each whole run's (begin, end) ns, and what is wrong with the output, or None."""
        runs: list[tuple[int, int]] = []
        lines = data.decode(errors="replace").split("\n")
        if lines[-1]:
            return runs, f"a torn last line {lines[-1][:60]!r}"
        i = 0
        while i < len(lines) - 1:
            block = lines[i : i + self.lines + 2]
            numbers = [str(n) for n in range(self.lines)]
            if (
                len(block) < self.lines + 2
                or not block[0].startswith("begin ")
                or block[1:-1] != numbers
                or not block[-1].startswith("end ")
            ):
                return runs, f"run {len(runs)} is not whole: {block[:3]!r}..."
            runs.append((int(block[0].split()[1]), int(block[-1].split()[1])))
            i += self.lines + 2
        return runs, None


def scheduled_jobs(count: int, rng: random.Random) -> list[Scheduled]:
    out: list[Scheduled] = []
    previous: str | None = None
    for i in range(count):
        kind = ("restart", "queue", "after")[i % 3]
        job = Scheduled(f"s{i}-{kind}", kind, rng.randint(5, 20), rng.choice([0.03, 0.06]))
        if kind == "restart":
            job.exit_code, job.max_restarts = 3, rng.randint(1, 3)
        elif kind == "after":
            job.after, previous = previous, job.name
        out.append(job)
    return out


@dataclass
class Figures:
    daemon_kills: int = 0
    server_kills: int = 0
    reconnects: int = 0
    back_after: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: SPEC 11: runs of the restarting processes, and processes the queue and `after` held.
    restart_runs: int = 0
    queued_runs: int = 0
    after_runs: int = 0


class Server:
    """A Jupyter server with the extension on a fixed port, started again after a kill."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime),
               "JUPYTER_CONFIG_DIR": str(self.runtime / "config")}  # fmt: skip
        argv = [
            sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.runtime}",
            "--ServerApp.jpserver_extensions={'jupyter_exec': True}",
        ]  # fmt: skip
        log = open(self.runtime / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while not self.answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the Jupyter server did not start; see server.log")
            time.sleep(0.1)

    def answers(self) -> bool:
        req = urllib.request.Request(self.url + "api/exec/processes")
        req.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def post(self, path: str) -> None:
        req = urllib.request.Request(self.url + path, data=b"", method="POST")
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=120):
            pass


class Follower:
    """One client: a websocket through the server, streaming some processes' output."""

    def __init__(self, server: Server, names: list[str], figures: Figures) -> None:
        self.server, self.names, self.figures = server, names, figures
        self.data = {name: bytearray() for name in names}
        self.cursor = dict.fromkeys(names, 0)
        self.done: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and len(self.done) < len(self.names):
            try:
                client = await ExecClient.connect(self.server.url, self.server.token)
            except Exception:
                await asyncio.sleep(0.2)
                continue
            follows = (self._follow(client, n, stop) for n in self.names)
            results = await asyncio.gather(*follows, return_exceptions=True)
            if any(isinstance(r, Exception) for r in results):  # the connection was lost
                self.figures.reconnects += 1
            await client.close()

    async def _follow(self, client: ExecClient, name: str, stop: asyncio.Event) -> None:
        while not stop.is_set() and name not in self.done:
            result = await asyncio.wait_for(client.read(name, self.cursor[name], wait_ms=500), 30)
            for chunk in result.chunks:
                self.data[name] += chunk.data
                self.cursor[name] = chunk.seq
            if result.closed and not result.chunks:
                self.done.add(name)


def jobs(count: int, rng: random.Random) -> list[Job]:
    out = []
    for i in range(count):
        finite = i % 3 == 0
        out.append(
            Job(f"p{i}", tty=i % 5 == 4, lines=rng.randint(50, 400) if finite else None,
                exit_code=i % 7 + 1 if finite else 0, pad=rng.choice([0, 10, 200]),
                delay=rng.choice([0.005, 0.02, 0.05]))
        )  # fmt: skip
    return out


async def kill_daemon(runtime: Path, figures: Figures) -> None:
    pid = _daemon_pid(runtime)
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    figures.daemon_kills += 1
    while _daemon_pid(runtime) in (None, pid):  # the next client call starts one
        await asyncio.sleep(0.02)
        if time.monotonic() - killed > 60:
            raise RuntimeError("no daemon came back within 60 s")
    figures.back_after.append(time.monotonic() - killed)


async def soak(args: argparse.Namespace) -> Figures:
    rng = random.Random(args.seed)
    asyncio.get_running_loop().set_exception_handler(_quiet_lost_connections)
    runtime = Path(tempfile.mkdtemp(prefix="soak-"))
    server = Server(runtime)
    figures = Figures()
    await asyncio.to_thread(server.start)
    marker = ""
    pids: dict[str, int] = {}
    try:
        todo = jobs(args.processes, rng)
        async with await ExecClient.connect(server.url, server.token) as setup:
            for job in todo:
                await setup.start(job.name, job.argv(), tty=job.tty)
            pids = {p.process_id: p.pid for p in await setup.list()}
        marker = (paths.state_dir(runtime) / "registry-id").read_text()
        names = [job.name for job in todo]
        followers = [
            Follower(server, [n for k, n in enumerate(names) if k % args.clients == j
                              or (k + 7) % args.clients == j], figures)
            for j in range(args.clients)
        ]  # fmt: skip
        stop = asyncio.Event()
        streams = [asyncio.create_task(f.run(stop)) for f in followers]
        later = scheduled_jobs(args.scheduled, rng)
        starting = asyncio.create_task(start_scheduled(server, later))
        started = time.monotonic()
        kills = ["daemon", "server"] * args.kills
        rng.shuffle(kills)
        for what in kills:
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            if what == "daemon":
                await kill_daemon(runtime, figures)
            else:
                server.kill()
                figures.server_kills += 1
                await asyncio.to_thread(server.start)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*streams, return_exceptions=True)
        await starting
        figures_time = time.monotonic() - started
        await check(server, todo, pids, followers, figures)
        await check_scheduled(server, later, figures)
        print(f"soak: {figures_time:.1f} s of kills and streaming", flush=True)
    finally:
        with contextlib.suppress(OSError):
            server.post("api/exec/shutdown")
        server.kill()
        left = _leftovers(pids, marker)
        if left:
            figures.failures.append(f"left behind after shutdown: {sorted(left)}")
            kill_verified(marked_processes(f"{marker}/", prefix=True), signal.SIGKILL)
        shutil.rmtree(runtime, ignore_errors=True)
    return figures


async def start_scheduled(server: Server, todo: list[Scheduled]) -> None:
    """Start them one by one while the kills go on, each once (a start whose answer a
    kill cut off is looked for in the list before it is sent again)."""
    done = 0
    while done < len(todo):
        try:
            async with await ExecClient.connect(server.url, server.token) as client:
                await client.queue_set("soak", QUEUE_PARALLEL)
                while done < len(todo):
                    job = todo[done]
                    listed = {p.process_id for p in await client.list()}
                    if job.name not in listed:
                        params = {"processId": job.name, "argv": job.argv(), **job.params()}
                        await client.request("process/start", params)
                    done += 1
                    await asyncio.sleep(0.25)
        except (ConnectionLostError, OSError, WebSocketException):  # a kill cut it off
            await asyncio.sleep(0.2)


async def check_scheduled(server: Server, todo: list[Scheduled], figures: Figures) -> None:
    """None lost or doubled, none started out of order (the module docstring)."""
    if not todo:
        return
    async with await ExecClient.connect(server.url, server.token) as client:
        for job in todo:
            with contextlib.suppress(TimeoutError):
                await client.wait(job.name, timeout=120)
        listed = {p.process_id: p for p in await client.list()}
        spans: dict[str, tuple[int, int]] = {}
        for job in todo:
            info = listed.get(job.name)
            if info is None:
                figures.failures.append(f"{job.name}: lost")
                continue
            runs, problem = job.runs(await _read_all(client, job.name))
            want = job.max_restarts + 1 if job.kind == "restart" else 1
            if problem is None and len(runs) != want:
                problem = f"{len(runs)} runs, not {want}"
            if problem is None and (info.state, info.exit_code) != ("closed", job.exit_code):
                problem = f"{info.state} with exit {info.exit_code}, not {job.exit_code}"
            if problem is None and info.restarts != want - 1:
                problem = f"{info.restarts} restarts, not {want - 1}"
            if problem:
                figures.failures.append(f"{job.name}: {problem}")
                continue
            spans[job.name] = (runs[0][0], runs[-1][1])
            if job.kind == "restart":
                figures.restart_runs += len(runs)
            elif job.kind == "queue":
                figures.queued_runs += 1
            else:
                figures.after_runs += 1
        queued = [spans[j.name] for j in todo if j.kind == "queue" and j.name in spans]
        if [begin for begin, _ in queued] != sorted(begin for begin, _ in queued):
            figures.failures.append("the queue started its processes out of order")
        most = max((sum(b <= at < e for b, e in queued) for at, _ in queued), default=0)
        if most > QUEUE_PARALLEL:
            figures.failures.append(f"the queue ran {most} at once, not {QUEUE_PARALLEL}")
        for job in todo:
            ends = spans.get(job.after or "", (0, 0))[1]
            if job.name in spans and spans[job.name][0] < ends:
                figures.failures.append(f"{job.name} began before {job.after} ended")
        print(
            f"soak: {len(todo)} scheduled processes: {figures.restart_runs} runs of "
            f"restarting ones, {figures.queued_runs} queued, {figures.after_runs} after another"
        )


async def check(
    server: Server, todo: list[Job], pids: dict[str, int], followers: list[Follower],
    figures: Figures,
) -> None:  # fmt: skip
    async with await ExecClient.connect(server.url, server.token) as client:
        listed = {p.process_id: p for p in await client.list()}
        totals = [0, 0]
        for job in todo:
            info = listed.get(job.name)
            if info is None or info.pid != pids[job.name]:
                figures.failures.append(f"{job.name}: not listed with its pid")
                continue
            data = await _read_all(client, job.name)
            lines = data.count(b"\n")
            totals[0] += lines
            totals[1] += len(data)
            problem = job.check(data)
            if info.state == "closed":
                if info.exit_code != job.exit_code:
                    problem = f"exit {info.exit_code}, not {job.exit_code}"
                elif job.lines is not None and lines != job.lines:
                    problem = f"{lines} lines, not {job.lines}"
            elif info.state != "running":
                problem = f"state {info.state}"
            if problem:
                figures.failures.append(f"{job.name}: {problem}")
            for follower in followers:
                seen = bytes(follower.data.get(job.name, b""))
                if job.name in follower.data and not data.startswith(seen):
                    figures.failures.append(f"{job.name}: a client saw other bytes")
        print(f"soak: {len(todo)} processes, {totals[0]} lines, {totals[1]} bytes verified")


async def _read_all(client: ExecClient, name: str) -> bytes:
    data, after = b"", 0
    while chunks := (await client.read(name, after, max_bytes=4 << 20)).chunks:
        data += b"".join(c.data for c in chunks)
        after = chunks[-1].seq
    return data


def _leftovers(pids: dict[str, int], marker: str) -> set[int]:
    deadline = time.monotonic() + 20
    while True:
        alive = {p for p in pids.values() if _alive(p)}
        if marker:
            alive |= {ref.pid for ref in marked_processes(f"{marker}/", prefix=True)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _daemon_pid(runtime: Path) -> int | None:
    try:
        pid = int(json.loads(paths.record_path(runtime).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if _alive(pid) else None


def _quiet_lost_connections(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """A killed server or daemon fails a client's pending calls: expected here."""
    if not isinstance(context.get("exception"), ConnectionLostError):
        loop.default_exception_handler(context)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=50)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--kills", type=int, default=10, help="SIGKILLs of each: daemon and server")
    p.add_argument("--scheduled", type=int, default=30, help="SPEC 11 processes (issue 27)")
    p.add_argument("--seed", type=int, default=int(time.time()))
    args = p.parse_args()
    print(f"soak: seed {args.seed}", flush=True)
    figures = asyncio.run(soak(args))
    back = sorted(figures.back_after)
    print(
        f"soak: {figures.daemon_kills} daemon SIGKILLs, {figures.server_kills} server SIGKILLs, "
        f"{figures.reconnects} client reconnects; a daemon was back (adopting everything) "
        f"after {back[len(back) // 2]:.2f} s median, {back[-1]:.2f} s max"
        if back else "soak: no daemon kill happened"
    )  # fmt: skip
    for failure in figures.failures:
        print(f"soak: FAILED {failure}")
    print("soak: ok" if not figures.failures else f"soak: {len(figures.failures)} failures")
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
