"""What writing output to the log costs, per GB, by the ways the daemon could write it.

The exec daemon splices a read of the child's pipe (up to 128 KiB) into its
log as one record (a 13-byte header `pwrite`, then one `splice`), then reads
it back chunk by chunk for delivery (core/output.py `splice_run`); before
2026-12-07 it wrote a record (a header and a splice) per 32 KiB chunk. The
standalone server reads the pipe and writes a run's records with one
`pwritev`. This measures the three in this process's CPU time
(`thread_time`, so a busy machine moves the figures less than wall time
would).

Usage: ``.venv/bin/python bench/log_write.py [--dir DIR] [--megabytes N] [--rounds N]``
(DIR: where the log goes, default the system's temp dir; use the filesystem
the logs live on).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import struct
import tempfile
import time

HEADER = struct.Struct("<QBI")
CHUNK, RUN = 32 << 10, 128 << 10
F_SETPIPE_SZ = 1031


def spliced(pipe: int, fd: int, offset: int, records: int) -> int:
    """`records` records per run spliced pipe -> log, then the run read back."""
    size, start = RUN // records, offset
    for _ in range(records):
        os.pwrite(fd, HEADER.pack(1, 0, size), offset)
        offset += HEADER.size + os.splice(pipe, fd, size, offset_dst=offset + HEADER.size)
    for at in range(start, offset, HEADER.size + size):  # one read per record (output.py)
        os.pread(fd, size, at + HEADER.size)
    return offset


def written(pipe: int, fd: int, offset: int) -> int:
    """The run read from the pipe, split into chunks, logged with one `pwritev`."""
    data = os.read(pipe, RUN)
    parts: list[bytes] = []
    for i in range(0, len(data), CHUNK):
        parts += (HEADER.pack(1, 0, CHUNK), data[i : i + CHUNK])
    return offset + os.pwritev(fd, parts, offset)


def seconds_per_gb(directory: str, way: str, total: int) -> float:
    path = os.path.join(directory, f"log-write-{os.getpid()}.log")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)
    run = bytes(RUN)
    offset, cpu = 0, 0.0
    try:
        while offset < total:
            os.write(w, run)  # the child's part: not counted
            t0 = time.thread_time()
            if way == "spliced, a record per chunk":
                offset = spliced(r, fd, offset, RUN // CHUNK)
            elif way == "spliced, a record per run":
                offset = spliced(r, fd, offset, 1)
            else:
                offset = written(r, fd, offset)
            cpu += time.thread_time() - t0
    finally:
        os.close(fd)
        os.unlink(path)
        os.close(r)
        os.close(w)
    return cpu / offset * 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--megabytes", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    ways = ["spliced, a record per chunk", "spliced, a record per run", "read + pwritev"]
    for round_ in range(args.rounds):
        figures = [
            f"{w} {seconds_per_gb(args.dir, w, args.megabytes << 20):.3f} s/GB" for w in ways
        ]
        print(f"round {round_ + 1}: " + ", ".join(figures))


if __name__ == "__main__":
    main()
