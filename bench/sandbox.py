"""What a sandbox costs a spawn: spawn -> closed of `true` with each sandbox, against none.

    python bench/sandbox.py [--spawns 100] [--rounds 3]

Part 1 goes through `jupyter-exec serve --listen stdio` (the server's own
policies off, so each request's `sandbox` is the only one): each round runs
every sandbox in turn, so machine noise hits them alike; the table shows the
median of the rounds' medians, and the cost over `none`.

Part 2 is the mechanism alone, in this process: fork + exec of `/bin/true`
plainly, with our sandbox applied before exec (user, mount, PID and network
namespaces, the PID namespace's init and a /proc of its own, mounts,
Landlock: core/sandbox.py, core/pidns.py), and, when `bwrap` is
installed, wrapped by bubblewrap with the same namespaces and a read-only
root (docs/sandbox.md says why we chose the first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import OURS_BIN, REPO, Driver, Server, launch

SANDBOXES: dict[str, Any] = {
    "none": None,
    "workspace-write": "workspace-write",
    "workspace-write, network off": {"mode": "workspace-write", "network": False},
    "read-only, network off": {"mode": "read-only", "network": False},
}


async def spawn_closed(d: Driver, sandbox: Any, n: int) -> float:
    times = []
    for _ in range(n):
        pid = d.new_id()
        d.closed[pid] = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        params = {"processId": pid, "argv": ["true"], "cwd": d.cwd, "sandbox": sandbox}
        await d.client.call("process/start", params)
        await asyncio.wait_for(d.closed[pid], 30)
        times.append(time.perf_counter() - t0)
        await d.finish(pid)
    return statistics.median(times) * 1000


async def through_server(n: int, rounds: int) -> dict[str, float]:
    base = [str(OURS_BIN), "serve", "--root", str(REPO)]
    base += ["--default-sandbox", "none", "--agent-sandbox", "none"]
    server = Server("jupyter-exec", [*base, "--listen", "stdio"], [])
    running = await launch(server, "stdio")
    try:
        d = Driver(running.client)
        await spawn_closed(d, None, 5)  # warm up
        found: dict[str, list[float]] = {name: [] for name in SANDBOXES}
        for _ in range(rounds):
            for name, sandbox in SANDBOXES.items():
                found[name].append(await spawn_closed(d, sandbox, n))
        return {name: statistics.median(values) for name, values in found.items()}
    finally:
        await running.stop()


def mechanism_alone(n: int) -> dict[str, float]:
    from jupyter_exec.core.sandbox import Confinement, Sandbox, hidden_dirs

    work = tempfile.mkdtemp(prefix="bench-sandbox-")
    conf = Confinement("workspace-write", False, (work,), hidden=tuple(hidden_dirs([])))

    def ours() -> None:
        box = Sandbox(conf, work)
        try:
            subprocess.run(["/bin/true"], cwd=work, preexec_fn=box.preexec, check=True)
        finally:
            box.close()

    ways = {
        "plain fork + exec": lambda: subprocess.run(["/bin/true"], cwd=work, check=True),
        "ours (namespaces + Landlock)": ours,
    }
    bwrap = shutil.which("bwrap")
    if bwrap:
        argv = [bwrap, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/",
                "--bind", work, work, "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
                "--tmpfs", str(hidden_dirs([])[0]), "--die-with-parent", "/bin/true"]  # fmt: skip
        ways["bubblewrap 0.8 wrapper"] = lambda: subprocess.run(argv, cwd=work, check=True)
    result = {}
    for name, way in ways.items():
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            way()
            times.append(time.perf_counter() - t0)
        result[name] = statistics.median(times) * 1000
    os.rmdir(work)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spawns", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    served = asyncio.run(through_server(args.spawns, args.rounds))
    print("| spawn -> closed of `true` (median ms) | ms | over none |")
    print("|---|---|---|")
    for name, ms in served.items():
        print(f"| {name} | {ms:.2f} | {ms - served['none']:+.2f} |")
    alone = mechanism_alone(args.spawns)
    print()
    print("| fork + exec of /bin/true, in-process (median ms) | ms | over plain |")
    print("|---|---|---|")
    for name, ms in alone.items():
        print(f"| {name} | {ms:.2f} | {ms - alone['plain fork + exec']:+.2f} |")


if __name__ == "__main__":
    main()
