"""Benchmark jupyter-exec against a peer exec server (the Codex exec-server).

One small raw JSON-RPC client, identical for both servers and both transports
(stdio pipes, websocket), speaking the protocol as Codex's own client does:
``initialize``/``initialized``, ``process/start`` with a ``file://`` cwd and an
``envPolicy``, ``process/write`` with a ``writeId``, output counted from
``process/output`` notifications until ``process/closed``, then
``process/terminate``.

Five figures and a check, each measured on a fresh server per run; runs of
ours and the peer's are interleaved (the order alternates every round) and the
table shows medians over rounds. Three pairs: stdio against stdio, standalone
websocket against websocket, and ours inside Jupyter Server (``api/exec/ws``)
against the peer's websocket:

- spawn: ``process/start`` of ``true`` sent -> its ``process/closed`` received
  (the median of ``--spawns`` sequential starts in one run), ms;
- throughput: 200 MB written by ``head -c`` to stdout, bytes carried by
  ``process/output`` notifications / time from start to ``process/closed``, MB/s;
- echo: one byte written to a tty ``cat`` -> its echo received, while ``cat
  /dev/zero`` floods the same connection (median of ``--echoes``), ms;
- CPU: server CPU seconds (user + system, all threads) spent during the
  throughput run, per GB delivered as notifications;
- RSS: VmRSS the server adds with 200 idle children (``sleep``), MB;
- delivered: bytes carried by notifications / bytes written, which must be
  100 % (SPEC 5); the exit status is 1 when a run delivered less.

"The server" is every process of the server's program that the run started
(procs.py): for jupyter-exec the Jupyter server or `serve`, the exec daemon,
its guardian and any helper, for Codex its own processes; never the
workload's children.

Usage: ``.venv/bin/python bench/run.py [--peer codex|none] [--transport
stdio|ws|jupyter|all] [--rounds N] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_client import Client, StdioClient, WsClient
from procs import TAG_VAR, ServerProcesses

REPO = Path(__file__).resolve().parent.parent
OURS_BIN = Path(sys.executable).parent / "jupyter-exec"
LINE_LIMIT = 256 << 20
ECHO_TIMEOUT = 2.0


# -- servers -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv_stdio: list[str]
    argv_ws: list[str]


def our_server(command: str | None = None) -> Server:
    base = [*(shlex.split(command) if command else [str(OURS_BIN)]), "serve", "--root", str(REPO)]
    if command is None:  # like Codex's own server without a `sandbox`: no agent_sandbox here
        base += ["--agent-sandbox", "none"]
    return Server(
        "jupyter-exec", [*base, "--listen", "stdio"], [*base, "--listen", "ws://127.0.0.1:0"]
    )


def codex_server(binary: str | None) -> Server:
    exe = binary or str(find_codex())
    return Server(
        "codex",
        [exe, "exec-server", "--listen", "stdio"],
        [exe, "exec-server", "--listen", "ws://127.0.0.1:0"],
    )


def find_codex() -> Path:
    """The native Codex binary (not the node launcher, so its pid is the server's)."""
    sys.path.insert(0, str(REPO))
    from tests.codex.harness import install_codex

    launcher = install_codex()
    modules = launcher.parent.parent
    for native in sorted(modules.glob("@openai/codex-linux-*/vendor/*/bin/codex")):
        return native
    return launcher


def jupyter_argv(port: int, token: str) -> list[str]:
    """Jupyter Server with our extension: `api/exec/ws` is the endpoint."""
    return [
        sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
        "--ServerApp.jpserver_extensions={'jupyter_exec': True}",
        # The daemon (which serves the processes) stops with the server: nothing left.
        "--ExecExtensionApp.stop_processes_on_shutdown=True",
        "--ExecExtensionApp.agent_sandbox=none",  # as Codex's server without a `sandbox`
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    client: Client
    #: Its runtime directory (a Jupyter server's also holds its config).
    runtime: Path
    #: Every process whose CPU and memory count as the server's (procs.py).
    procs: ServerProcesses
    #: A Jupyter server is stopped by SIGTERM, the others by closing stdin.
    jupyter: bool = False

    async def stop(self) -> None:
        await self.client.aclose()
        if self.jupyter:
            self.proc.terminate()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 3)
        except TimeoutError:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)


def run_env(runtime: Path) -> tuple[dict[str, str], str]:
    """A server's environment: a private runtime directory and the run's tag (procs.py)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), TAG_VAR: tag}
    return env, tag


async def launch(server: Server, transport: str) -> Running:
    if transport == "jupyter" and server.name == "jupyter-exec":
        return await launch_jupyter()
    runtime = Path(tempfile.mkdtemp(prefix="bench-run-"))
    env, tag = run_env(runtime)
    stdio = transport == "stdio"
    proc = await asyncio.create_subprocess_exec(
        *(server.argv_stdio if stdio else server.argv_ws),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        limit=LINE_LIMIT,
        cwd=REPO,
        env=env,
    )
    try:
        client = StdioClient(proc) if stdio else await _ws_client(server, proc)
        client.start_reading()
        await asyncio.wait_for(client.handshake(), 30)
    except BaseException:
        await _kill(proc)
        shutil.rmtree(runtime, ignore_errors=True)
        raise
    return Running(proc, client, runtime, ServerProcesses(tag, proc.pid))


async def _ws_client(server: Server, proc: asyncio.subprocess.Process) -> Client:
    from websockets.asyncio.client import connect

    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    if not url.startswith("ws://"):
        raise RuntimeError(f"{server.name}: no URL on stdout (got {url!r})")
    ws = await connect(url, max_size=None, compression=None, open_timeout=30)
    return WsClient(ws)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """A server whose start failed: nothing the bench started is left running."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def launch_jupyter() -> Running:
    port, token = free_port(), secrets.token_hex(16)
    runtime = Path(tempfile.mkdtemp(prefix="bench-jupyter-"))
    env, tag = run_env(runtime)
    env["JUPYTER_CONFIG_DIR"] = str(runtime)
    settings = {"log_dir": str(runtime / "exec-logs")}  # the daemon's, the user's
    (runtime / "jupyter_exec_daemon.json").write_text(json.dumps(settings))
    proc = await asyncio.create_subprocess_exec(
        *jupyter_argv(port, token),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    procs = ServerProcesses(tag, proc.pid)
    try:
        client = await _jupyter_client(port, token)
        await settled(procs)
    except BaseException:
        await _kill(proc)  # stop_processes_on_shutdown: its daemon stops with it
        shutil.rmtree(runtime, ignore_errors=True)
        raise
    return Running(proc, client, runtime, procs, jupyter=True)


async def _jupyter_client(port: int, token: str) -> WsClient:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/api/exec/ws"
    headers = {"Authorization": f"token {token}"}
    for _ in range(300):
        try:
            ws = await connect(url, additional_headers=headers, max_size=None, compression=None)
            break
        except OSError:
            await asyncio.sleep(0.2)
    else:
        raise RuntimeError("jupyter server did not start")
    client = WsClient(ws)
    client.start_reading()
    await asyncio.wait_for(client.handshake(), 30)
    return client


async def settled(procs: ServerProcesses, quiet: float = 0.02, timeout: float = 20) -> None:
    """Wait until the server stops using CPU: Jupyter Server finishes starting in the
    background (jupyter-lsp scans entry points in a thread for seconds, holding the
    GIL), which would otherwise land in the first figures."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        _, used = await procs.cpu_during(asyncio.sleep(0.5))
        if used < quiet:
            return


# -- the workload -------------------------------------------------------------------

ENV_POLICY = {
    "inherit": "all",
    "ignoreDefaultExcludes": True,
    "exclude": [
        "CODEX_PERMISSION_PROFILE",
        "CODEX_VERSION",
        "CODEX_APPLY_PATCH_PRESERVE_LINE_ENDINGS",
        "CODEX_PLUGIN_METRICS_OUTPUT",
    ],
    "set": {},
    "includeOnly": [],
}


class Driver:
    """Process bookkeeping on one connection: per-process output and close futures."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cwd = REPO.as_uri()
        self._n = 0
        self.lost_echoes = 0
        self.closed: dict[str, asyncio.Future[None]] = {}
        self.on_output: dict[str, Callable[[dict[str, Any]], None]] = {}
        client.on_notify = self._notify

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        if method == "process/output":
            handler = self.on_output.get(params["processId"])
            if handler is not None:
                handler(params)
        elif method == "process/closed":
            fut = self.closed.get(params["processId"])
            if fut is not None and not fut.done():
                fut.set_result(None)

    def new_id(self) -> str:
        self._n += 1
        return f"bench-{os.getpid()}-{self._n}"

    async def start(self, argv: list[str], tty: bool = False, pid: str | None = None) -> str:
        pid = pid or self.new_id()
        self.closed[pid] = asyncio.get_running_loop().create_future()
        await self.client.call(
            "process/start",
            {
                "processId": pid,
                "argv": argv,
                "cwd": self.cwd,
                "envPolicy": ENV_POLICY,
                "env": {"TERM": "dumb"},
                "tty": tty,
                "pipeStdin": False,
                "arg0": None,
            },
        )
        return pid

    async def finish(self, pid: str, timeout: float = 30) -> None:
        """What Codex's client does after a command: terminate (also once it closed)."""
        await self.client.call("process/terminate", {"processId": pid})
        await asyncio.wait_for(self.closed[pid], timeout)
        self.closed.pop(pid, None)
        self.on_output.pop(pid, None)


async def measure_spawn(d: Driver, n: int) -> float:
    times = []
    for _ in range(n):
        pid = d.new_id()
        t0 = time.perf_counter()
        await d.start(["true"], pid=pid)
        await asyncio.wait_for(d.closed[pid], 30)
        times.append(time.perf_counter() - t0)
        await d.finish(pid)
    return statistics.median(times) * 1000


async def measure_throughput(
    d: Driver, total: int, procs: ServerProcesses
) -> tuple[float, int, float]:
    """(MB/s, bytes received, server CPU seconds per GB received)."""
    received = 0

    def count(params: dict[str, Any]) -> None:
        nonlocal received
        chunk = params["chunk"]
        received += len(chunk) * 3 // 4 - (2 if chunk.endswith("==") else chunk.endswith("="))

    async def flood() -> float:
        t0 = time.perf_counter()
        await d.start(["head", "-c", str(total), "/dev/zero"], pid=pid)
        await asyncio.wait_for(d.closed[pid], 600)
        return time.perf_counter() - t0

    pid = d.new_id()
    d.on_output[pid] = count
    elapsed, cpu = await procs.cpu_during(flood())
    await d.finish(pid)
    return received / 1e6 / elapsed, received, cpu / max(received, 1) * 1e9


async def measure_echo(d: Driver, n: int) -> float:
    loop = asyncio.get_running_loop()
    flooding = loop.create_future()

    def flood_seen(params: dict[str, Any]) -> None:
        if not flooding.done():
            flooding.set_result(None)

    flood = d.new_id()
    d.on_output[flood] = flood_seen
    await d.start(["cat", "/dev/zero"], pid=flood)
    await asyncio.wait_for(flooding, 30)

    waiting: dict[str, Any] = {}

    def echoed(params: dict[str, Any]) -> None:
        fut = waiting.get("fut")
        if (
            fut is not None
            and not fut.done()
            and waiting["byte"] in base64.b64decode(params["chunk"])
        ):
            fut.set_result(time.perf_counter())

    tty = d.new_id()
    d.on_output[tty] = echoed
    await d.start(["cat"], tty=True, pid=tty)
    await asyncio.sleep(0.05)
    times = []
    letters = b"abcdefghijklmnopqrstuvwxyz"
    for i in range(n):
        byte = letters[i % len(letters) : i % len(letters) + 1]
        fut = loop.create_future()
        waiting.update(fut=fut, byte=byte)
        t0 = time.perf_counter()
        await d.client.call(
            "process/write",
            {"processId": tty, "chunk": base64.b64encode(byte).decode(), "writeId": str(i + 1)},
        )
        try:
            times.append(await asyncio.wait_for(fut, ECHO_TIMEOUT) - t0)
        except TimeoutError:  # the echo's notification was dropped: count the timeout
            times.append(ECHO_TIMEOUT)
            d.lost_echoes += 1
        await asyncio.sleep(0.005)
    await d.finish(flood)
    await d.finish(tty)
    return statistics.median(times) * 1000


async def measure_rss(d: Driver, procs: ServerProcesses, children: int) -> float:
    """RSS the children add (the bare server differs most by its language runtime)."""
    await asyncio.sleep(0.5)
    before = procs.rss_mb()
    pids = [await d.start(["sleep", "600"]) for _ in range(children)]
    await asyncio.sleep(0.5)
    rss = procs.rss_mb() - before
    for pid in pids:
        await d.client.call("process/terminate", {"processId": pid})
    await asyncio.wait_for(asyncio.gather(*(d.closed[p] for p in pids)), 60)
    return rss


@dataclass
class Sizes:
    spawns: int = 200
    megabytes: int = 200
    echoes: int = 50
    children: int = 200


@dataclass
class RunResult:
    figures: dict[str, float] = field(default_factory=dict)
    received: int = 0
    lost_echoes: int = 0


async def one_run(server: Server, transport: str, sizes: Sizes, only: set[str]) -> RunResult:
    running = await launch(server, transport)
    d = Driver(running.client)
    result = RunResult()
    try:
        await measure_spawn(d, 3)  # warm-up (our first start also starts the guardian)
        if "rss" in only:
            result.figures["rss"] = await measure_rss(d, running.procs, sizes.children)
        if "spawn" in only:
            result.figures["spawn"] = await measure_spawn(d, sizes.spawns)
        if "echo" in only:
            result.figures["echo"] = await measure_echo(d, sizes.echoes)
            result.lost_echoes = d.lost_echoes
        result.received = sizes.megabytes * 1_000_000
        if "throughput" in only:
            mbs, result.received, cpu = await measure_throughput(
                d, sizes.megabytes * 1_000_000, running.procs
            )
            result.figures["throughput"] = mbs
            result.figures["cpu"] = cpu
            result.figures["delivered"] = result.received / (sizes.megabytes * 1e6) * 100
    finally:
        await running.stop()
    return result


# -- the table ------------------------------------------------------------------------

FIGURES = [
    # key, label, unit, higher is better
    ("spawn", "spawn -> closed, `true`", "ms", False),
    ("throughput", "output via notifications", "MB/s", True),
    ("cpu", "server CPU per GB delivered", "s", False),
    ("echo", "tty echo under flood", "ms", False),
    ("rss", "RSS added by {children} idle children", "MB", False),
    ("delivered", "bytes delivered as notifications", "%", True),
]
#: The peer each of our transports is compared with (the peer has no Jupyter face).
PEER_TRANSPORT = {"stdio": "stdio", "ws": "ws", "jupyter": "ws"}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(
    results: dict[tuple[str, str], list[RunResult]],
    servers: list[Server],
    transports: list[str],
    sizes: Sizes,
) -> str:
    ours, peer = servers[0].name, servers[1].name if len(servers) > 1 else None
    head = ["figure", "transport", ours]
    if peer:
        head += [peer, "ours vs peer"]
    rows = [head]
    for key, label, unit, higher in FIGURES:
        for transport in transports:
            med: dict[str, float | None] = {}
            for s in servers:
                runs = results.get(
                    (s.name, transport if s.name == ours else PEER_TRANSPORT[transport]), []
                )
                values = [r.figures[key] for r in runs if key in r.figures]
                med[s.name] = statistics.median(values) if values else None
            row = [f"{label.format(children=sizes.children)} ({unit})", transport, fmt(med[ours])]
            if peer:
                a, b = med[ours], med[peer]
                ratio = "-"
                if a and b:
                    r = a / b if higher else b / a
                    ratio = f"{r:.2f}x {'better' if r >= 1 else 'worse'}"
                row += [fmt(b), ratio]
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    sizes = Sizes()
    if args.quick:
        sizes = Sizes(spawns=20, megabytes=20, echoes=10, children=20)
    for name in ("spawns", "megabytes", "echoes", "children"):
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    only = set(args.only.split(",")) if args.only else {f[0] for f in FIGURES}
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    servers = [our_server(args.ours)]
    if args.peer == "codex":
        servers.append(codex_server(args.codex))
    transports = ["stdio", "ws", "jupyter"] if args.transport == "all" else [args.transport]
    results: dict[tuple[str, str], list[RunResult]] = {}
    short = {
        "spawn": "spawn ms", "throughput": "MB/s", "cpu": "CPU s/GB", "echo": "echo ms",
        "rss": "RSS MB", "delivered": "delivered %",
    }  # fmt: skip
    incomplete = 0
    for rnd in range(rounds):
        order = servers if rnd % 2 == 0 else list(reversed(servers))
        for transport in transports:
            for server in order:
                own = transport if server is servers[0] else PEER_TRANSPORT[transport]
                if server is not servers[0] and transport == "jupyter" and "ws" in transports:
                    continue  # the peer's ws runs serve both pairs
                run = await one_run(server, own, sizes, only)
                results.setdefault((server.name, own), []).append(run)
                shown = "  ".join(f"{short[k]} {fmt(v)}" for k, v in run.figures.items())
                lost = sizes.megabytes * 1_000_000 - run.received
                note = f"  (lost {lost} bytes)" if lost and "throughput" in only else ""
                incomplete += bool(note)
                if run.lost_echoes:
                    note += f"  ({run.lost_echoes} echoes lost)"
                print(
                    f"round {rnd + 1}/{rounds} {own:7} {server.name:12} {shown}{note}",
                    file=sys.stderr,
                    flush=True,
                )
    print(
        f"\nmedians of {rounds} round(s); spawn: median of {sizes.spawns} starts per run; "
        f"throughput: {sizes.megabytes} MB; echo: median of {sizes.echoes} echoes per run\n"
    )
    print(table(results, servers, transports, sizes), flush=True)
    if incomplete:
        print(f"\n{incomplete} run(s) delivered less than 100 % as notifications")
    return 1 if incomplete else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", choices=["codex", "none"], default="codex")
    p.add_argument("--transport", choices=["stdio", "ws", "jupyter", "all"], default="all")
    p.add_argument("--rounds", type=int)
    p.add_argument("--quick", action="store_true", help="small sizes, one round")
    p.add_argument("--spawns", type=int, help="starts per run for the spawn figure")
    p.add_argument("--megabytes", type=int, help="output size for the throughput figure")
    p.add_argument("--echoes", type=int, help="echoes per run for the echo figure")
    p.add_argument("--children", type=int, help="idle children for the RSS figure")
    p.add_argument("--ours", help="command that runs our CLI (default: .venv/bin/jupyter-exec)")
    p.add_argument("--only", help="comma-separated figures (spawn,throughput,echo,rss)")
    p.add_argument(
        "--codex",
        help="path of the codex binary (default: install the version the tests use, tests/codex/harness.py)",
    )
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
