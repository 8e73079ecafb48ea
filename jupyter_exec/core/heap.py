"""glibc's heap settings for the processes that serve output (the daemon, `serve`).

Under a flood, every 128 KiB read, 43 KB message and 1 MiB read-back from a
log is allocated and freed in turn. With glibc's defaults the top of the heap
is handed back to the kernel (`brk`) as soon as it is 128 KiB free, and the
next allocations fault fresh, zeroed pages in again: measured with bench/run.py
(`perf stat`), 28,000-66,000 page faults for 200 MB delivered, 10-25 % of the
server's CPU. Keeping up to `TRIM_BYTES` of free heap, and allocating below
`MMAP_BYTES` from the heap instead of `mmap`, took that to under 1,000.

Process-wide, so only the servers' own `main` calls it (not the embedded
registry inside a kernel); a C library without `mallopt` keeps its defaults.
"""

from __future__ import annotations

import ctypes

__all__ = ["MMAP_BYTES", "TRIM_BYTES", "keep_freed_heap"]


#: Free memory at the top of the heap kept instead of returned (M_TRIM_THRESHOLD).
TRIM_BYTES = 16 << 20
#: Allocations from this size on get their own mapping (M_MMAP_THRESHOLD); fixing
#: it also stops glibc from moving both thresholds by itself.
MMAP_BYTES = 4 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_heap() -> bool:
    """Apply the settings above; False where the C library has no `mallopt`."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: its C library
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES) and mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES))
