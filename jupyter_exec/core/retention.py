"""One budget for the output all processes retain together: memory, and logs on disk.

Memory (`retained_bytes_total`): a running process keeps its recent chunks
in memory (within its own `retained_bytes_per_process`), for the readers that
follow it live; a finished one keeps none that its log holds, its readers read
them back from the log (output.py), so a thousand finished processes cost no
more than their bookkeeping. Each retained process counts `PROCESS_COST` for
that (measured: bench/retention.py), so the budget bounds what the daemon holds
for all of them. Past the budget the running processes that hold the most let
go of their oldest chunks, again only those their log holds: nothing becomes
unreadable. Only as a last resort do finished processes lose chunks no log
holds (one stopped by its cap or a full disk, or no log at all), and
`firstSeq` says so.

Disk (`logs_max_use`, `logs_keep_free`, as journald's SystemMaxUse= and
SystemKeepFree=: bytes, or a percentage of the filesystem the logs are on):
the logs of all processes together stay within `logs_max_use` and leave
`logs_keep_free` of their filesystem free. Checked (one statvfs) every
`1/32` of the budget the logs grow; past it, whole logs of finished
processes go first, those finished longest ago first, then the oldest part of the
largest running ones (output.py `cut_head`: the rest stays where it is, the
head becomes a hole). The newest part of a running process's log always
stays; `firstSeq` says exactly what went.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

__all__ = [
    "CHECK_SHARE",
    "PROCESS_COST",
    "UNLIMITED",
    "OutputStore",
    "Retention",
    "punch_hole",
    "size_setting",
    "water_level",
]


#: What a retained process costs the daemon besides its output (its records,
#: events, descriptors and log index), charged against the memory budget. Measured
#: with bench/retention.py: about 10 KiB of RSS per finished process.
PROCESS_COST = 12 << 10
#: The disk budget is checked each time the logs grew by this share of it ...
CHECK_SHARE = 32
#: ... but at least this often and at most this seldom.
MIN_STEP, MAX_STEP = 64 << 10, 16 << 20
UNLIMITED = 1 << 62
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


class OutputStore(Protocol):
    """What the budgets ask of a store (core/output.py's)."""

    @property
    def memory_bytes(self) -> int: ...
    @property
    def log_bytes(self) -> int: ...
    @property
    def log_dir(self) -> Path | None: ...
    def release_memory(self, keep: int, lossy: bool = False) -> None: ...
    def cut_head(self, keep: int) -> None: ...
    def drop_log(self) -> None: ...
    def stop_log(self, why: str) -> None: ...


def size_setting(value: int | str, whole: int) -> int:
    """A journald-style size: bytes, or "N%" of `whole` (a filesystem's size)."""
    if isinstance(value, int):
        return value
    found = _PERCENT.match(value.strip())
    if found is None or float(found[1]) > 100:
        raise ValueError(f"{value!r} is neither a number of bytes nor a percentage")
    return int(whole * float(found[1]) / 100)


class Retention:
    """The budgets of one registry's stores; synchronous, on its event loop.

    Stores report every change of what they hold (`memory`, `logged`); the
    budget tells them what to let go (`OutputStore.release_memory`,
    `drop_log`, `cut_head`), and they report that too.
    """

    def __init__(
        self,
        memory_bytes: int | None = None,
        logs_max_use: int | str | None = None,
        logs_keep_free: int | str = 0,
    ) -> None:
        """None: no budget (a store on its own, or a registry built without one)."""
        self.memory_limit = UNLIMITED if memory_bytes is None else memory_bytes
        self.memory_used = 0
        self.logs_max_use = UNLIMITED if logs_max_use is None else logs_max_use
        self.logs_keep_free = logs_keep_free
        self._disk = logs_max_use is not None or logs_keep_free != 0
        self.log_bytes = 0
        self._unchecked = 0
        self._step = MIN_STEP
        self._stores: set[OutputStore] = set()
        self._running: dict[OutputStore, None] = {}
        #: Finished stores that still hold something, those finished longest ago first:
        #: a log, or chunks no log holds.
        self._finished_logs: OrderedDict[OutputStore, None] = OrderedDict()
        self._finished_unlogged: OrderedDict[OutputStore, None] = OrderedDict()
        self._punch: dict[Path, bool] = {}

    # -- stores come and go ----------------------------------------------------------

    def add(self, store: OutputStore) -> None:
        """A store of a running process (a finished one says `finish` next)."""
        self._stores.add(store)
        self._running[store] = None
        self.memory(PROCESS_COST + store.memory_bytes)
        self.logged(store, store.log_bytes)

    def finish(self, store: OutputStore) -> None:
        """Its process closed: its log serves its readers, and goes first for room."""
        if store in self._running:
            del self._running[store]
            store.release_memory(0)
            if store.memory_bytes:
                self._finished_unlogged[store] = None
            if store.log_bytes:
                self._finished_logs[store] = None

    def forget(self, store: OutputStore) -> None:
        """The store is closed: nothing of it counts any more."""
        if store not in self._stores:
            return
        self._stores.discard(store)
        self._running.pop(store, None)
        self._unqueue(store)
        self.memory_used -= PROCESS_COST + store.memory_bytes
        self.log_bytes -= store.log_bytes

    def _unqueue(self, store: OutputStore) -> None:
        self._finished_logs.pop(store, None)
        self._finished_unlogged.pop(store, None)

    # -- memory ----------------------------------------------------------------------

    def memory(self, delta: int) -> None:
        """A store's retained chunks grew or shrank by `delta` bytes (its hot path)."""
        self.memory_used += delta
        if delta > 0 and self.memory_used > self.memory_limit:
            self._shrink_memory()

    def _shrink_memory(self) -> None:
        """Down to 7/8 of the budget (not back at every chunk)."""
        target = self.memory_limit - self.memory_limit // 8
        if self.memory_used > target:
            running = [s for s in self._running if s.memory_bytes]
            level = water_level([s.memory_bytes for s in running], self.memory_used - target)
            for store in running:
                store.release_memory(level)
        while self.memory_used > target and self._finished_unlogged:
            store = next(iter(self._finished_unlogged))  # the oldest chunks of all go
            store.release_memory(store.memory_bytes - (self.memory_used - target), lossy=True)
            if not store.memory_bytes:
                del self._finished_unlogged[store]

    # -- disk ------------------------------------------------------------------------

    def logged(self, store: OutputStore, delta: int) -> None:
        """A store's log grew or shrank by `delta` bytes (its hot path)."""
        self.log_bytes += delta
        if delta > 0 and self._disk:
            self._unchecked += delta
            if self._unchecked >= self._step:
                self._check(store)

    def log_limit(self, where: Path) -> int:
        """What the logs may take now: `logs_max_use`, and less if the filesystem
        has less than `logs_keep_free` free (then as much less as it lacks)."""
        st = os.statvfs(where)
        size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        max_use = size_setting(self.logs_max_use, size)
        keep_free = size_setting(self.logs_keep_free, size)
        return max(0, min(max_use, self.log_bytes + free - keep_free))

    def _check(self, store: OutputStore) -> None:
        self._unchecked = 0
        where = store.log_dir
        if where is None:
            return
        try:
            limit = self.log_limit(where)
        except OSError:  # the directory is gone (shutting down): nothing to keep
            return
        self._step = min(MAX_STEP, max(MIN_STEP, limit // CHECK_SHARE))
        if self.log_bytes > limit - self._step:  # before the next check comes
            self._vacuum(max(0, limit - 2 * self._step), where)

    def _vacuum(self, target: int, where: Path) -> None:
        while self.log_bytes > target and self._finished_logs:
            store = self._finished_logs.popitem(last=False)[0]
            store.drop_log()
            self._unqueue(store)  # its memory went with it
        if self.log_bytes <= target:
            return
        running = [s for s in self._running if s.log_bytes]
        if not self.can_punch(where):  # they can only stop growing
            for store in running:
                store.stop_log("reached the logs' disk budget")
            return
        level = water_level([s.log_bytes for s in running], self.log_bytes - target)
        for store in running:
            store.cut_head(level)

    def can_punch(self, where: Path) -> bool:
        """Whether this filesystem makes holes (most do: ext4, xfs, btrfs, tmpfs). The
        probe is a sparse file, so a full disk answers too; only "not supported" counts."""
        known = self._punch.get(where)
        if known is None:
            probe = where / ".punch-probe"
            try:
                fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    os.ftruncate(fd, 8192)
                    punch_hole(fd, 0, 4096)
                finally:
                    os.close(fd)
                    probe.unlink(missing_ok=True)
            except OSError as exc:
                if exc.errno == errno.EOPNOTSUPP:
                    self._punch[where] = False
                return exc.errno != errno.EOPNOTSUPP  # else: try, and ask again next time
            known = self._punch[where] = True
        return known


def water_level(sizes: list[int], excess: int) -> int:
    """The highest level L such that cutting every size down to L frees `excess`."""
    ordered = sorted(sizes, reverse=True)
    freed = 0
    for count, size in enumerate(ordered, 1):
        lower = ordered[count] if count < len(ordered) else 0
        step = count * (size - lower)
        if freed + step >= excess:
            return size - -(-(excess - freed) // count)
        freed += step
    return 0


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2
_libc: ctypes.CDLL | None = None


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Give the blocks of `length` bytes at `offset` back to the filesystem; they read
    as zeros, the file keeps its size (fallocate(2) FALLOC_FL_PUNCH_HOLE)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
