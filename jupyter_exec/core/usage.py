"""What each process tree serves and costs: SPEC 11 `ports` and `usage`.

One `Sampler` task per registry looks at every running process tree about
once a second and keeps, per process, a `TreeUsage`: the tree's members (the
root, its descendants, and descendants seen before that left the tree, e.g.
by a double fork), their summed CPU time and RSS, the peak RSS, the CPU
percentage over the last interval, and the TCP ports the members listen on.
`ManagedProcess.info()` reads the figures; nothing is sampled on a request.

Cost (bench/usage.py, docs/benchmarks.md). Per tick the sampler does:
- one pass over ``/proc/*/stat`` (`proctree.scan`), which gives every
  process's parent, CPU times and RSS at once. psutil reads the same files
  but costs about three times as much per process (an object per pid, a
  second file for the RSS), and its parent map is private; descendants, CPU
  and RSS of a whole tree need nothing else;
- one netlink ``sock_diag`` dump of the TCP sockets in LISTEN state (about
  40 us, where reading ``/proc/net/tcp`` costs milliseconds and psutil's
  ``net_connections`` reads every process's descriptors besides). Only when a
  listening socket appears that no tree owns yet are descriptors read, and
  then only of members that ran since they were last read;
- a sandbox with its own network namespace (core/sandbox_net.py) gets one
  more dump, on a ``sock_diag`` socket made in that namespace; its listeners
  are shown as the host ports that forward to them (`Namespace.expose`);
- the pass runs in a worker thread, and the interval stretches from 1 s to
  2 s to keep the passes near `CPU_SHARE` of a core, and beyond 2 s (up to
  `MAX_TICK_SECONDS`) only where a pass would take more than `CPU_CEILING`
  (a machine with thousands of processes).

CPU seconds of a tree: the own and waited-for-children times of its live
members, plus the last figures of members that vanished without a member to
reap them; never decreasing. At the exit the root's rusage (which counts every
descendant it waited for) is taken if larger, and `cpuSeconds` and
`peakRssBytes` keep their final values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from .proctree import ProcessRef, ProcStat, scan

log = logging.getLogger(__name__)

__all__ = ["NETLINK_SOCK_DIAG", "Namespace", "Sampler", "TreeUsage", "listening_sockets"]

#: Shortest and longest interval between two samples; SPEC 11 wants figures current
#: within `FRESH_SECONDS`, which holds unless a pass would cost more than `CPU_CEILING`.
TICK_SECONDS = 1.0
FRESH_SECONDS = 2.0
MAX_TICK_SECONDS = 10.0
#: The share of one core the sampling passes aim at, and the most they may take.
CPU_SHARE = 0.004
CPU_CEILING = 0.01
#: How often descriptors of every member are read again while a listening socket
#: stays unexplained (one that appeared while its owner looked idle).
RESCAN_SECONDS = 10.0


class Namespace(Protocol):
    """A tree's own network namespace (core/sandbox_net.py `Bridge`)."""

    def listening(self) -> dict[int, tuple[str, int]]:
        """Its listening sockets, as `listening_sockets` (called in the worker thread)."""

    def expose(self, ports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The `ports` entries of its listeners as the host reaches them (on the loop)."""


@dataclass
class _Member:
    ref: ProcessRef
    ppid: int
    #: Own CPU seconds and those of its reaped children; RSS in bytes.
    cpu: float
    waited: float
    rss: int
    #: Socket inodes among its descriptors at the last read, and its CPU then.
    sockets: frozenset[int] | None = None
    scanned_cpu: float = -1.0


@dataclass
class _Figures:
    """One sample of a tree, computed in the worker and applied on the loop."""

    cpu_seconds: float
    rss: int
    processes: int
    ports: list[dict[str, Any]]
    at: float


@dataclass(eq=False)  # one per process, hashed by identity
class TreeUsage:
    """The figures of one process tree (module docstring). Read on the event loop."""

    root: ProcessRef
    cpu_seconds: float = 0.0
    cpu_percent: float = 0.0
    rss: int = 0
    peak_rss: int = 0
    processes: int = 0
    ports: list[dict[str, Any]] = field(default_factory=list)
    running: bool = True
    #: Whether a sample or the exit gave figures yet (before: `usage()` is None).
    sampled: bool = False
    #: Its own network namespace, if any: its listeners are found and reached there.
    netns: Namespace | None = None
    #: `ports` as found, before `Namespace.expose` (a failed pass keeps them).
    _found: list[dict[str, Any]] = field(default_factory=list)
    _members: dict[int, _Member] = field(default_factory=dict)
    _gone_cpu: float = 0.0
    _last: tuple[float, float] | None = None

    def usage(self) -> dict[str, Any] | None:
        """SPEC 11 `usage`; None until the first sample."""
        if not self.sampled:
            return None
        return {
            "cpuPercent": round(self.cpu_percent, 1),
            "cpuSeconds": round(self.cpu_seconds, 2),
            "rssBytes": self.rss,
            "peakRssBytes": self.peak_rss,
            "processes": self.processes,
        }

    def apply(self, figures: _Figures) -> None:
        if not self.running:
            return  # the exit came while the sample was taken: the final figures stand
        cpu = max(self.cpu_seconds, figures.cpu_seconds)
        if self._last is not None and figures.at > self._last[0]:
            self.cpu_percent = max(0.0, (cpu - self._last[1]) / (figures.at - self._last[0]) * 100)
        self._last = (figures.at, cpu)
        self.sampled = True
        self.cpu_seconds = cpu
        self.rss = figures.rss
        self.peak_rss = max(self.peak_rss, figures.rss)
        self.processes = figures.processes
        self._found = figures.ports
        self.ports = figures.ports if self.netns is None else self.netns.expose(figures.ports)

    def finish(self, cpu_seconds: float) -> None:
        """The root exited: keep the final CPU seconds (its rusage if larger) and peak."""
        self.running = False
        self.sampled = True
        self.cpu_seconds = max(self.cpu_seconds, cpu_seconds)
        self.cpu_percent = 0.0
        self.rss = 0
        self.processes = 0
        self.ports = []


class _Sockets:
    """Which listening sockets belong to which tree, reading descriptors only when needed."""

    def __init__(self) -> None:
        self.foreign: set[int] = set()
        self.rescan_at = 0.0

    def attribute(
        self, trees: list[TreeUsage], now: float
    ) -> dict[TreeUsage, list[dict[str, Any]]]:
        try:
            listen = listening_sockets()
        except OSError:  # no sock_diag here (some sandboxes): psutil, at a higher cost
            return _attribute_by_pid(trees)
        for tree in trees:  # socket inodes are unique across namespaces
            if tree.netns is not None:
                with contextlib.suppress(OSError):  # it just ended
                    listen.update(tree.netns.listening())
        owned = {i for t in trees for m in t._members.values() for i in m.sockets or ()}
        self.foreign &= set(listen)
        unknown = set(listen) - owned - self.foreign
        full = bool(unknown or self.foreign) and now >= self.rescan_at
        if unknown or full:
            for tree in trees:
                for member in tree._members.values():
                    if full or member.sockets is None or member.cpu != member.scanned_cpu:
                        member.sockets = socket_inodes(member.ref.pid)
                        member.scanned_cpu = member.cpu
            if full:
                self.rescan_at = now + RESCAN_SECONDS
            owned = {i for t in trees for m in t._members.values() for i in m.sockets or ()}
            self.foreign |= set(listen) - owned
        return {
            tree: sorted(
                (
                    {"port": listen[i][1], "address": listen[i][0], "pid": m.ref.pid}
                    for m in tree._members.values()
                    for i in m.sockets or ()
                    if i in listen
                ),
                key=lambda p: (p["port"], p["address"]),
            )
            for tree in trees
        }


def _attribute_by_pid(trees: list[TreeUsage]) -> dict[TreeUsage, list[dict[str, Any]]]:
    """Listening sockets as psutil finds them (it reads every process's descriptors)."""
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid is not None and conn.laddr:
            address, port = conn.laddr[0], conn.laddr[1]
            by_pid.setdefault(conn.pid, []).append(
                {"port": port, "address": address, "pid": conn.pid}
            )
    return {
        tree: sorted(
            (p for pid in tree._members for p in by_pid.get(pid, ())),
            key=lambda p: (p["port"], p["address"]),
        )
        for tree in trees
    }


def sample(trees: list[TreeUsage], sockets: _Sockets) -> dict[TreeUsage, _Figures]:
    """One pass over every running tree (in a worker thread; the module docstring)."""
    stats = scan()
    now = time.monotonic()
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    for tree in trees:
        _update_members(tree, stats, children)
    try:
        ports = sockets.attribute(trees, now)
    except (OSError, psutil.Error):  # out of descriptors: the ports of the last time
        ports = {tree: tree._found for tree in trees}
    return {
        tree: _Figures(
            cpu_seconds=tree._gone_cpu + sum(m.cpu + m.waited for m in tree._members.values()),
            rss=sum(m.rss for m in tree._members.values()),
            processes=len(tree._members),
            ports=ports[tree],
            at=now,
        )
        for tree in trees
    }


def _update_members(
    tree: TreeUsage, stats: dict[int, ProcStat], children: dict[int, list[int]]
) -> None:
    before = tree._members
    alive: dict[int, _Member] = {}
    root = stats.get(tree.root.pid)
    if root is not None and root.start == tree.root.start:
        alive[tree.root.pid] = before.get(tree.root.pid) or _Member(tree.root, 0, 0, 0, 0)
    for pid, member in before.items():
        st = stats.get(pid)
        if st is not None and st.start == member.ref.start:
            alive[pid] = member
    stack = list(alive)
    while stack:
        for pid in children.get(stack.pop(), ()):
            if pid not in alive:
                st = stats[pid]
                alive[pid] = before.get(pid) or _Member(ProcessRef(pid, st.start), 0, 0, 0, 0)
                stack.append(pid)
    for pid, member in before.items():
        if pid not in alive and member.ppid not in alive:
            tree._gone_cpu += member.cpu + member.waited  # nobody left to reap it
    for pid, member in alive.items():
        st = stats[pid]
        member.ppid, member.cpu, member.waited, member.rss = st.ppid, st.cpu, st.waited, st.rss
    tree._members = alive


def next_interval(spent: float) -> float:
    """The pause after a pass that took `spent` CPU seconds: a second while passes are
    cheap, up to 2 s to stay near `CPU_SHARE`, longer only past `CPU_CEILING`."""
    interval = max(TICK_SECONDS, min(FRESH_SECONDS, spent / CPU_SHARE))
    return min(MAX_TICK_SECONDS, max(interval, spent / CPU_CEILING))


class Sampler:
    """The one sampling task of a registry: runs while any process runs (module docstring).

    `running()` returns the trees to sample now (the registry's running
    processes); `wake()` starts the task when a process starts; `aclose()`
    cancels and awaits it.
    """

    def __init__(self, running: Callable[[], Iterable[TreeUsage]]) -> None:
        self._running = running
        self._task: asyncio.Task[None] | None = None
        self._sockets = _Sockets()
        self.interval = TICK_SECONDS
        #: CPU seconds the sampling passes took (bench/usage.py reads it).
        self.cpu_seconds = 0.0
        self.passes = 0

    def wake(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            trees = [t for t in self._running() if t.running]
            if not trees:
                return
            try:
                figures, spent = await asyncio.to_thread(self._timed_pass, trees)
            except Exception:  # figures are a courtesy: never let them end the sampling
                log.warning("sampling process usage failed; trying again", exc_info=True)
                figures, spent = {}, 0.0
                self.interval = MAX_TICK_SECONDS
            else:
                self.interval = next_interval(spent)
            for tree, figure in figures.items():
                tree.apply(figure)
            self.cpu_seconds += spent
            self.passes += 1
            await asyncio.sleep(self.interval)

    def _timed_pass(self, trees: list[TreeUsage]) -> tuple[dict[TreeUsage, _Figures], float]:
        started = time.thread_time()
        figures = sample(trees, self._sockets)
        return figures, time.thread_time() - started

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- sockets -------------------------------------------------------------------------

_SOCK_DIAG_BY_FAMILY = 20
NETLINK_SOCK_DIAG = 4
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_TCP_LISTEN = 10


def listening_sockets(nl: socket.socket | None = None) -> dict[int, tuple[str, int]]:
    """Every TCP socket in LISTEN state on this host's network namespace (or on that of
    the ``sock_diag`` socket `nl`): inode -> (address, port), from one netlink dump (the
    kernel walks only its listening table)."""
    if nl is None:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        with socket.socket(socket.AF_NETLINK, kind, NETLINK_SOCK_DIAG) as own:
            return listening_sockets(own)
    found: dict[int, tuple[str, int]] = {}
    for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
        request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
        request += bytes(48)  # struct inet_diag_sockid: any
        header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY,
                             _NLM_F_REQUEST_DUMP, seq, 0)  # fmt: skip
        nl.sendall(header + request)
        _read_dump(nl, family, found)
    return found


def _read_dump(nl: socket.socket, family: int, found: dict[int, tuple[str, int]]) -> None:
    size = 4 if family == socket.AF_INET else 16
    while True:
        data = nl.recv(1 << 16)
        if not data:
            return
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == _NLMSG_DONE:
                return
            if kind == _NLMSG_ERROR or length < 16:
                raise OSError("sock_diag refused the dump")
            body = offset + 16  # struct inet_diag_msg
            port = struct.unpack_from(">H", data, body + 4)[0]
            address = socket.inet_ntop(family, data[body + 8 : body + 8 + size])
            inode = struct.unpack_from("=I", data, body + 68)[0]
            found[inode] = (address, port)
            offset += (length + 3) & ~3


def socket_inodes(pid: int) -> frozenset[int]:
    """The inodes of the sockets among a process's descriptors (empty if it is gone)."""
    inodes = set()
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return frozenset()
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return frozenset(inodes)
