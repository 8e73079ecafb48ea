"""What retained output costs the exec daemon: memory for finished processes, disk for logs.

    python bench/retention.py [--memory 250,500,1000,2000] [--disk-seconds 12] [--budget MiB]

Memory: processes that each print `--output` bytes (200 KB) and exit, started
32 at a time; the daemon's RSS once 250, 500, 1000 and 2000 of them have
finished, with the default budget (`retained_bytes_total`, 64 MiB) and with
the budget off (as before it existed: up to 1 MiB per process). Disk: three
`yes` for `--disk-seconds`, the log directory's size each second, with no log
budget (as before) and with `logs_max_use` of `--log-budget` MiB.

Each run has its own daemon on a temporary runtime dir, stopped at the end
(`daemon/shutdown`: its processes and logs go with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_exec.client import ExecClient
from jupyter_exec.client.unix_transport import connect_daemon, daemon_front
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import ensure_daemon

MiB = 1 << 20
#: Off: larger than anything a run retains.
UNLIMITED = 1 << 50


class Daemon:
    """An exec daemon of its own runtime dir, with the given daemon settings."""

    def __init__(self, **settings: object) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="jx-retention-"))
        config = self.tmp / "config"
        config.mkdir()
        (config / "jupyter_exec_daemon.json").write_text(json.dumps(settings))
        self.runtime = self.tmp / "runtime"
        self._env = os.environ.get("JUPYTER_CONFIG_DIR")
        os.environ["JUPYTER_CONFIG_DIR"] = str(config)  # the daemon inherits it

    async def __aenter__(self) -> Daemon:
        ensure_daemon(self.runtime)
        record = json.loads(paths.record_path(self.runtime).read_text())
        self.pid = int(record["pid"])
        self.client = await connect_daemon(
            paths.socket_path(self.runtime), front=daemon_front("bench/retention.py")
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.request("daemon/shutdown", {})
        await self.client.close()
        if self._env is None:
            os.environ.pop("JUPYTER_CONFIG_DIR", None)
        else:
            os.environ["JUPYTER_CONFIG_DIR"] = self._env

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def logs_bytes(self) -> int:
        """What the logs take on disk (allocated blocks: a punched hole counts for nothing)."""
        return sum(
            p.stat().st_blocks * 512
            for p in paths.state_dir(self.runtime).parent.rglob("*.log")
            if p.parent.name.endswith("-logs")
        )


async def finish(client: ExecClient, ids: list[str], output: int, parallel: int) -> None:
    """Start each of `ids` printing `output` bytes, `parallel` at a time; return once all closed."""
    gate = asyncio.Semaphore(parallel)

    async def one(process_id: str) -> None:
        async with gate:
            await client.start(process_id, ["head", "-c", str(output), "/dev/zero"])
            await client.wait(process_id)

    await asyncio.gather(*(one(i) for i in ids))
    while any(p.state != "closed" for p in await client.list()):  # noqa: ASYNC110 (polled)
        await asyncio.sleep(0.05)


async def memory_run(marks: list[int], output: int, budget: int) -> dict[str, Any]:
    settings: dict[str, object] = {"exited_retention_seconds": 3600}
    settings["retained_bytes_total"] = budget
    async with Daemon(**settings) as d:
        await asyncio.sleep(0.5)
        row: dict[str, Any] = {"baseline": d.rss_mib()}
        done = 0
        for mark in marks:
            await finish(d.client, [f"p{i}" for i in range(done, mark)], output, 32)
            done = mark
            await asyncio.sleep(0.2)
            row[str(mark)] = d.rss_mib()
        # Nothing became unreadable: every process's nextSeq and byte total are whole.
        infos = await d.client.list()
        assert all(p.output_bytes == output and p.first_seq == 1 for p in infos), "output lost"
        sample = await d.client.read(infos[0].process_id, 0, max_bytes=1 << 30)
        assert sum(len(c.data) for c in sample.chunks) == output
        return row


async def disk_run(seconds: float, budget_mib: int | None) -> list[int]:
    settings: dict[str, object] = {}
    if budget_mib is not None:
        settings["logs_max_use"] = budget_mib * MiB
    async with Daemon(**settings) as d:
        for i in range(3):
            await d.client.start(f"yes{i}", ["yes"])
        sizes = []
        for _ in range(int(seconds)):
            await asyncio.sleep(1)
            sizes.append(d.logs_bytes())
        for i in range(3):
            await d.client.terminate(f"yes{i}", 0)
        return sizes


async def main_async(args: argparse.Namespace) -> None:
    marks = [int(m) for m in args.memory.split(",")] if args.memory else []
    if marks:
        rows = {}
        for name, budget in (("budget off (before)", UNLIMITED), ("budget", args.budget * MiB)):
            if name == "budget off (before)" and args.skip_off:
                continue
            rows[name] = await memory_run(marks, args.output, budget)
        print(f"\nDaemon RSS (MiB) with N finished processes of {args.output} bytes each:")
        print(f"| {'':22} | baseline | " + " | ".join(f"{m:>6}" for m in marks) + " |")
        print(f"|{'-' * 24}|----------|" + "|".join("-" * 8 for _ in marks) + "|")
        for name, row in rows.items():
            label = f"{name} ({args.budget} MiB)" if name == "budget" else name
            cells = " | ".join(f"{row[str(m)]:6.0f}" for m in marks)
            print(f"| {label:22} | {row['baseline']:8.0f} | {cells} |")
    if args.disk_seconds:
        print(f"\nLogs on disk (MB) of three `yes`, each second of {args.disk_seconds:.0f}:")
        for name, budget in (("no budget (before)", UNLIMITED >> 20), ("budget", args.log_budget)):
            t0 = time.monotonic()
            sizes = await disk_run(args.disk_seconds, budget)
            label = f"{name} ({args.log_budget} MiB)" if name == "budget" else name
            print(f"{label:24} " + " ".join(f"{s / 1e6:6.0f}" for s in sizes), end="")
            print(f"   (max {max(sizes) / 1e6:.0f} MB, {time.monotonic() - t0:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--memory", default="250,500,1000,2000", help="finished counts ('' skips)")
    p.add_argument("--output", type=int, default=200_000, help="bytes each process prints")
    p.add_argument("--budget", type=int, default=64, help="retained_bytes_total in MiB")
    p.add_argument("--skip-off", action="store_true", help="only the run with the budget")
    p.add_argument("--disk-seconds", type=float, default=12, help="0 skips the disk run")
    p.add_argument("--log-budget", type=int, default=200, help="logs_max_use in MiB")
    args = p.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
