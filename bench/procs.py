"""Which processes are a server's, and what they cost (CPU, RSS), read from /proc.

A server is every process of its own program that carries its run's tag:
the bench starts each server with `TAG_VAR` set to a fresh value, every
process it starts inherits it (the Jupyter server, the exec daemon it starts
detached, the daemon's guardian, a holder, Codex's helpers), and the
workload's children (`head`, `cat`, `sleep`) are other programs. So work that
moves into a helper process still counts, wherever that process was
re-parented; only the children that run the workload do not (their CPU is not
the server's, for either server). Children of ours also carry jupyter-exec's
marker variable and are left out by it too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

TAG_VAR = "JUPYTER_EXEC_BENCH_RUN"
MARKER_VAR = b"JUPYTER_EXEC_MARKER="
#: How often a measurement looks for processes that started or ended meanwhile.
SAMPLE_SECONDS = 0.25
T = TypeVar("T")
#: (pid, start time in clock ticks): a pid alone may name a later process.
Key = tuple[int, int]


class ServerProcesses:
    """The processes of one server run: its program, carrying its tag."""

    def __init__(self, tag: str, leader: int) -> None:
        self.needle = f"{TAG_VAR}={tag}".encode()
        self.leader = leader
        self.exe = os.path.realpath(f"/proc/{leader}/exe")
        self._verdicts: dict[Key, bool] = {}

    def find(self) -> dict[Key, list[str]]:
        """The server's processes now: key -> the fields of /proc/PID/stat after comm."""
        found: dict[Key, list[str]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _stat(entry.name)
            if fields is None:
                continue
            key = (int(entry.name), int(fields[19]))
            ours = self._verdicts.get(key)
            if ours is None:
                ours = self._verdicts[key] = self._is_ours(entry.name)
            if ours:
                found[key] = fields
        return found

    def _is_ours(self, pid: str) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            exe = os.path.realpath(f"/proc/{pid}/exe")
        except OSError:
            return False
        if self.needle not in environ or any(v.startswith(MARKER_VAR) for v in environ):
            return False
        return exe == self.exe

    def pids(self) -> list[int]:
        return sorted(pid for pid, _ in self.find())

    def cpu(self) -> dict[Key, float]:
        """User + system CPU seconds of each process (all its threads, not its children)."""
        tick = os.sysconf("SC_CLK_TCK")
        return {k: (int(f[11]) + int(f[12])) / tick for k, f in self.find().items()}

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += next((int(x.split()[1]) for x in lines if x.startswith("VmRSS:")), 0) / 1024
        return total

    async def cpu_during(self, work: Awaitable[T]) -> tuple[T, float]:
        """`work`'s result and the CPU seconds the server spent meanwhile, counting
        processes that started (from zero) or ended (up to their last sample) during it."""
        first = self.cpu()
        last = dict(first)

        async def sample() -> None:
            while True:
                await asyncio.sleep(SAMPLE_SECONDS)
                last.update(self.cpu())

        sampler = asyncio.create_task(sample())
        try:
            result = await work
        finally:
            sampler.cancel()
        last.update(self.cpu())
        return result, sum(cpu - first.get(key, 0.0) for key, cpu in last.items())


def _stat(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None
