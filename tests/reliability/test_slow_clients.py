"""Slow and dead clients over real sockets (SPEC 5): a client that never reads its
socket, one that resets mid-stream, one killed with SIGKILL. The server's memory
stays bounded, the child is never blocked on a full pipe, other clients' latency
holds, and every byte stays readable."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time

from jupyter_exec.client import ExecClient
from tests.reliability.rawws import RawWebSocket, open_fds, popen, rss_kib
from tests.service import PY, py, standalone

#: Writes argv[1] MiB of a known pattern as fast as it can, then its own run time.
FLOOD = (
    "import sys, time\n"
    "t = time.monotonic()\n"
    "block = bytes(range(256)) * 256\n"
    "for _ in range(int(sys.argv[1]) * 16):\n"
    "    sys.stdout.buffer.write(block)\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write(f'{time.monotonic() - t:.3f}')\n"
)


def flood_argv(mib: int) -> list[str]:
    return [*py(FLOOD), str(mib)]


def flood_sha(mib: int) -> str:
    return hashlib.sha256(bytes(range(256)) * 256 * 16 * mib).hexdigest()


async def read_everything(client: ExecClient, pid: str) -> dict[str, bytes]:
    out: dict[str, list[bytes]] = {}
    cursor = 0
    while True:
        r = await client.read(pid, cursor)
        assert r.first_seq == 1, "output was dropped"
        if not r.chunks:
            return {k: b"".join(v) for k, v in out.items()}
        for c in r.chunks:
            out.setdefault(c.stream, []).append(c.data)
        cursor = r.chunks[-1].seq


async def until_listed(client: ExecClient, pid: str) -> None:
    for _ in range(500):
        if any(p.process_id == pid for p in await client.list()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pid} never started")


async def probe_latency(client: ExecClient, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await client.request("process/list", {})
        samples.append(time.perf_counter() - t)
        await asyncio.sleep(0.02)


async def watch_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib(pid))
        await asyncio.sleep(0.05)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: Generous bounds: CI machines are shared. Measured here: +23 MiB, p99 13 ms.
RSS_GROWTH_LIMIT_KIB = 128 << 10
P99_LIMIT_SECONDS = 1.0


async def test_client_that_never_reads(tmp_path):
    """It starts a 48 MiB flood (auto-subscribed), then pipelines 60 reads of 4 MiB
    and never reads a byte: the child still runs at full speed, the server's memory
    stays bounded (backpressure: the client is no longer read), another client's
    latency holds, and the whole output is readable."""
    mib = 48
    with standalone(
        "--lifetime", "detached", "--log-dir", str(tmp_path / "logs"), cwd=tmp_path
    ) as s:
        server = s.proc.pid
        good = await ExecClient.connect(s.bare_url, s.token)
        await good.request("process/list", {})
        base = rss_kib(server)
        stuck = RawWebSocket(s.bare_url, s.token, rcvbuf=4096)
        assert stuck.status == 101
        stuck.handshake()
        stuck.send("process/start", {"processId": "flood", "argv": flood_argv(mib)})
        await until_listed(good, "flood")
        stop, peak, samples = asyncio.Event(), [base], []
        tasks = [
            asyncio.create_task(probe_latency(good, samples, stop)),
            asyncio.create_task(watch_rss(server, peak, stop)),
        ]
        try:
            result = await good.wait("flood", 120)
            for _ in range(60):  # responses it will never take
                stuck.send("process/read", {"processId": "flood", "maxBytes": 4 << 20})
            await asyncio.sleep(2)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        assert result.exit_code == 0
        streams = await read_everything(good, "flood")
        assert hashlib.sha256(streams["stdout"]).hexdigest() == flood_sha(mib)
        assert float(streams["stderr"]) < 30, "the child was held up by the stuck client"
        assert peak[0] - base < RSS_GROWTH_LIMIT_KIB, (base, peak[0])
        assert quantile(samples, 0.99) < P99_LIMIT_SECONDS, sorted(samples)[-5:]
        stuck.abort()
        await good.close()


async def _paced_flood(client: ExecClient) -> None:
    """~12 MiB over ~2 s, so a client can leave in the middle of it."""
    await client.start("paced", [*py(PACED), "192"], lifetime="detached")


#: argv[1] blocks of 64 KiB, one every 10 ms.
PACED = (
    "import sys, time\n"
    "block = bytes(range(256)) * 256\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    sys.stdout.buffer.write(block); sys.stdout.flush(); time.sleep(0.01)\n"
)
PACED_SHA = hashlib.sha256(bytes(range(256)) * 256 * 192).hexdigest()


async def _assert_paced_complete(client: ExecClient, server: int, fds_before: int) -> None:
    result = await client.wait("paced", 60)
    assert result.exit_code == 0
    streams = await read_everything(client, "paced")
    assert hashlib.sha256(streams["stdout"]).hexdigest() == PACED_SHA
    # The dead client's socket was released (and nothing else leaked).
    for _ in range(100):
        if open_fds(server) <= fds_before + 6:  # + the paced child's log, pipes and pidfd
            break
        await asyncio.sleep(0.05)
    assert open_fds(server) <= fds_before + 6


async def test_client_that_resets_mid_stream(tmp_path):
    with standalone("--log-dir", str(tmp_path / "logs"), cwd=tmp_path) as s:
        server = s.proc.pid
        good = await ExecClient.connect(s.bare_url, s.token)
        fds_before = open_fds(server)
        await _paced_flood(good)
        raw = RawWebSocket(s.bare_url, s.token)
        raw.handshake()
        raw.send("process/subscribe", {"processId": "paced"})
        frames = [raw.recv_frame() for _ in range(5)]
        assert any(b"process/output" in f for f in frames)
        raw.abort()  # TCP reset in the middle of the stream
        t = time.perf_counter()
        await good.request("process/list", {})
        assert time.perf_counter() - t < P99_LIMIT_SECONDS
        await _assert_paced_complete(good, server, fds_before)
        await good.close()


KILLED_CLIENT = """
import asyncio, sys
from jupyter_exec.client import ExecClient

async def main():
    c = await ExecClient.connect(sys.argv[1], sys.argv[2])
    async for event in c.events("paced"):
        print("reading", flush=True)
        await asyncio.sleep(0.05)

asyncio.run(main())
"""


async def test_client_killed_with_sigkill_mid_stream(tmp_path):
    with standalone("--log-dir", str(tmp_path / "logs"), cwd=tmp_path) as s:
        server = s.proc.pid
        good = await ExecClient.connect(s.bare_url, s.token)
        fds_before = open_fds(server)
        await _paced_flood(good)
        victim = popen([PY, "-c", KILLED_CLIENT, s.bare_url, s.token])
        try:
            assert victim.stdout is not None
            line = await asyncio.to_thread(victim.stdout.readline)
            assert line.strip() == "reading"
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        t = time.perf_counter()
        await good.request("process/list", {})
        assert time.perf_counter() - t < P99_LIMIT_SECONDS
        await _assert_paced_complete(good, server, fds_before)
        assert s.proc.poll() is None
        await good.close()
