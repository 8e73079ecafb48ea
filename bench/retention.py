"""What retained output costs the exec daemon: memory for finished processes, disk for logs.

    python bench/retention.py [--before CHECKOUT] [--memory 250,500,1000,2000]
                              [--disk-seconds 12] [--log-budget MiB]

Memory: processes that each print `--output` bytes (200 KB) and exit, started
32 at a time; the daemon's RSS once 250, 500, 1000 and 2000 of them have
finished, with the default budget (`retained_bytes_total`, 64 MiB). Every
process's byte count and `firstSeq` are checked after, and one is read whole.
Disk: three `yes` for `--disk-seconds`, what their logs take on disk each
second, with `logs_max_use` of `--log-budget` MiB.

`--before` runs both again with the daemon of another checkout (one without
the budgets: its code is put first on the daemon's PYTHONPATH and given no
budget setting), for the "before" rows. Each run has its own daemon on a
temporary runtime dir, stopped at the end (`daemon/shutdown`: its processes
and logs go with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_exec.client import ExecClient
from jupyter_exec.client.unix_transport import connect_daemon, daemon_front
from jupyter_exec.daemon import paths
from jupyter_exec.daemon.start import ensure_daemon

MiB = 1 << 20


class Daemon:
    """An exec daemon of its own runtime dir, with the given daemon settings."""

    def __init__(self, code: str | None, **settings: object) -> None:
        """`code`: a checkout whose daemon runs instead of ours (then without `settings`)."""
        self.tmp = Path(tempfile.mkdtemp(prefix="jx-retention-"))
        config = self.tmp / "config"
        config.mkdir()
        (config / "jupyter_exec_daemon.json").write_text(json.dumps({} if code else settings))
        self.runtime = self.tmp / "runtime"
        self._env = {k: os.environ.get(k) for k in ("JUPYTER_CONFIG_DIR", "PYTHONPATH")}
        os.environ["JUPYTER_CONFIG_DIR"] = str(config)  # the daemon inherits them
        if code is not None:
            os.environ["PYTHONPATH"] = code
        os.chdir(self.tmp)  # `python -m` puts the cwd first: not a checkout's

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
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

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
            await client.request("process/unsubscribe", {"processId": process_id})
            await client.wait(process_id)

    await asyncio.gather(*(one(i) for i in ids))
    while any(p.state != "closed" for p in await client.list()):  # noqa: ASYNC110 (polled)
        await asyncio.sleep(0.05)


async def memory_run(code: str | None, marks: list[int], output: int) -> dict[str, Any]:
    async with Daemon(code) as d:
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


async def disk_run(code: str | None, seconds: float, budget_mib: int) -> list[int]:
    async with Daemon(code, logs_max_use=budget_mib * MiB) as d:
        for i in range(3):
            await d.client.start(f"yes{i}", ["yes"])
            await d.client.request("process/unsubscribe", {"processId": f"yes{i}"})
        sizes = []
        for _ in range(int(seconds)):
            await asyncio.sleep(1)
            sizes.append(d.logs_bytes())
        for i in range(3):
            await d.client.terminate(f"yes{i}", 0)
        return sizes


async def main_async(args: argparse.Namespace) -> None:
    marks = [int(m) for m in args.memory.split(",")] if args.memory else []
    runs = [("before", args.before)] if args.before else []
    runs.append(("budgets", None))
    if marks:
        rows = {name: await memory_run(code, marks, args.output) for name, code in runs}
        print(f"\nDaemon RSS (MiB) with N finished processes of {args.output} bytes each:")
        print("|         | baseline | " + " | ".join(f"{m:>5}" for m in marks) + " |")
        print("|---------|----------|" + "|".join("-" * 7 for _ in marks) + "|")
        for name, row in rows.items():
            cells = " | ".join(f"{row[str(m)]:5.0f}" for m in marks)
            print(f"| {name:7} | {row['baseline']:8.0f} | {cells} |")
    if args.disk_seconds:
        print(f"\nLogs on disk (MB) of three `yes`, each second of {args.disk_seconds:.0f}:")
        for name, code in runs:
            sizes = await disk_run(code, args.disk_seconds, args.log_budget)
            label = f"budget {args.log_budget} MiB" if code is None else name
            print(f"{label:15} " + " ".join(f"{s / 1e6:5.0f}" for s in sizes), end="")
            print(f"   (max {max(sizes) / 1e6:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--memory", default="250,500,1000,2000", help="finished counts ('' skips)")
    p.add_argument("--output", type=int, default=200_000, help="bytes each process prints")
    p.add_argument("--before", metavar="CHECKOUT", help="also run the daemon of this checkout")
    p.add_argument("--disk-seconds", type=float, default=12, help="0 skips the disk run")
    p.add_argument("--log-budget", type=int, default=200, help="logs_max_use in MiB")
    args = p.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
