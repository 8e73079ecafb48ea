"""What watching processes costs the server (SPEC 11 `ports` and `usage`, core/usage.py).

One server run per peer, each on a fresh server (bench/run.py's `launch`, the
same raw client and the same way of counting a server's processes and CPU,
procs.py):

- CPU: the server's own CPU (user + system, every process of it) over
  ``--seconds`` (default 30) while it keeps ``--idle`` (200) ``sleep``
  children and ``--busy`` (20) busy loops (``nice 19``, so they leave the
  cores to the server), after a settling pause, as % of one core. Ours samples
  every tree about once a second; Codex's server samples nothing, so its
  figure is the floor of a server that only holds the children;
- RSS: the VmRSS the server added with those children, per child, in KB.

Usage: ``.venv/bin/python bench/usage.py [--peer codex|none] [--transport
ws|jupyter] [--seconds S] [--idle N] [--busy N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

from procs import ServerProcesses
from run import Driver, Running, Server, codex_server, launch, our_server

#: After the children started: let the server's own start-up work settle first.
SETTLE_SECONDS = 5.0
BUSY = [sys.executable, "-c", "while True: pass"]


@dataclass
class Figures:
    cpu_percent: float
    rss_kb_per_child: float


def cpu_seconds(procs: ServerProcesses) -> float:
    return sum(procs.cpu().values())


async def measure(server: Server, transport: str, args: argparse.Namespace) -> Figures:
    running: Running = await launch(server, transport)
    try:
        d = Driver(running.client)
        # One process first: what a server loads at its first start is not per child.
        await d.finish(await d.start(["true"]))
        await asyncio.sleep(0.5)
        rss_before = running.procs.rss_mb()
        ids = [await d.start(["sleep", "3600"]) for _ in range(args.idle)]
        ids += [await d.start(["nice", "-n", "19", *BUSY]) for _ in range(args.busy)]
        await asyncio.sleep(args.settle)
        rss = running.procs.rss_mb() - rss_before
        cpu0, t0 = cpu_seconds(running.procs), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu = (cpu_seconds(running.procs) - cpu0) / (time.monotonic() - t0) * 100
        for pid in ids:
            await d.client.call("process/terminate", {"processId": pid, "graceMs": 0})
        await asyncio.wait_for(asyncio.gather(*(d.closed[p] for p in ids)), 120)
        return Figures(cpu, rss * 1024 / max(1, len(ids)))
    finally:
        await running.stop()


async def main_async(args: argparse.Namespace) -> int:
    servers = [(our_server(), args.transport)]
    if args.peer == "codex":
        servers.append((codex_server(args.codex), "ws"))
    print(
        f"{args.idle} idle + {args.busy} busy children, server CPU over {args.seconds:.0f} s\n",
        flush=True,
    )
    print(f"{'server':24} {'CPU % of a core':>16} {'RSS KB per child':>17}")
    for server, transport in servers:
        f = await measure(server, transport, args)
        name = f"{server.name} ({transport})"
        print(f"{name:24} {f.cpu_percent:16.2f} {f.rss_kb_per_child:17.0f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", choices=["codex", "none"], default="codex")
    p.add_argument("--transport", choices=["ws", "jupyter"], default="ws")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--busy", type=int, default=20)
    p.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="pause before measuring")
    p.add_argument("--codex", help="path of the codex binary (default: the tests' version)")
    return asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
