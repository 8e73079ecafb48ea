"""What reaching a sandboxed server costs: its host port (core/sandbox_net.py) against none.

    python bench/sandbox_ports.py [--connections 300] [--megabytes 256] [--rounds 3]

A server that echoes one byte per connection, then sends `--megabytes` to a
connection that asks for them, runs unsandboxed and in a sandbox with the
network on (its own network namespace: reached through the host port the
daemon forwards, each connection spliced to a socket the sandbox's outer
supervisor made). Per round: the median of connect + one-byte echo over
`--connections` sequential connections, and the throughput of one bulk
transfer. The table shows the median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.service import embedded, py

SERVER = """
import socket, threading
def serve(c):
    with c:
        if c.recv(1) == b"x":
            c.sendall(b"x")
        else:
            block = bytes(1 << 20)
            for _ in range(int.from_bytes(c.recv(4), "big")):
                c.sendall(block)
s = socket.create_server(("127.0.0.1", 0))
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
KINDS: dict[str, Any] = {"none": None, "workspace-write": {"mode": "workspace-write"}}


def echo_us(port: int, count: int) -> float:
    """Median microseconds of connect + a one-byte round trip."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"x")
            conn.recv(1)
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times)


def bulk_mb_s(port: int, megabytes: int) -> float:
    """Megabytes per second of one transfer from the server."""
    started = time.perf_counter()
    got = 0
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"b" + megabytes.to_bytes(4, "big"))
        while chunk := conn.recv(1 << 20):
            got += len(chunk)
    assert got == megabytes << 20, got
    return megabytes / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    async with embedded(Path(tempfile.mkdtemp(prefix="bench-ports-"))) as (_, client):
        for kind, sandbox in KINDS.items():
            await client.start(kind, py(SERVER), sandbox=sandbox)
            port = (await client.wait_for_port(kind, 15)).ports[0]["port"]
            for _ in range(args.rounds):
                echo = await asyncio.to_thread(echo_us, port, args.connections)
                bulk = await asyncio.to_thread(bulk_mb_s, port, args.megabytes)
                results[kind].append((echo, bulk))
            await client.terminate(kind)
    print("| sandbox | connect + echo (median us) | bulk (MB/s) |")
    print("|---|---|---|")
    for kind, rows in results.items():
        echo = statistics.median(r[0] for r in rows)
        bulk = statistics.median(r[1] for r in rows)
        print(f"| {kind} | {echo:.0f} | {bulk:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
