"""Lossless delivery over real sockets and pipes (SPEC 5): a client that stops
reading gets every byte later, in seq order, as notifications; one that never
reads costs the server bounded memory; a lagging client's quiet process is not
held up behind a flood; only what retention dropped is skipped, and the seq
jump says so."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_exec.client import ExecClient
from tests.reliability.rawws import RawWebSocket, rss_kib
from tests.reliability.test_slow_clients import until_listed
from tests.service import PY, embedded, py, standalone, stop_process

MIB = 1 << 20
STALL_SECONDS = 3.0
#: Generous: the server holds at most its read-ahead per connection (outbox.py),
#: plus its transport's write buffer; measured here: +3 MiB for 1 GB unread.
RSS_GROWTH_LIMIT_KIB = 64 << 10


class Notes:
    """What a notification-only client saw: per process, seqs, methods and bytes."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str, int]] = []  # (processId, method, seq)
        self.data: dict[str, int] = {}

    def add(self, msg: dict[str, Any]) -> None:
        method = msg.get("method", "")
        if not method.startswith("process/") or "seq" not in msg.get("params", {}):
            return
        p = msg["params"]
        self.order.append((p["processId"], method, p["seq"]))
        if method == "process/output":
            self.data[p["processId"]] = self.data.get(p["processId"], 0) + len(
                base64.b64decode(p["chunk"])
            )

    def closed(self, pid: str) -> bool:
        return (pid, "process/closed") in {(p, m) for p, m, _ in self.order[-4:]}

    def seqs(self, pid: str) -> list[int]:
        return [s for p, _, s in self.order if p == pid]

    def assert_complete(self, pid: str, nbytes: int) -> None:
        seqs = self.seqs(pid)
        assert seqs == list(range(1, len(seqs) + 1)), "a gap or a reordering"
        methods = [m for p, m, _ in self.order if p == pid]
        assert methods[-2:] == ["process/exited", "process/closed"]
        assert self.data[pid] == nbytes


def read_until_closed(recv: Callable[[], bytes], notes: Notes, pid: str) -> None:
    while not notes.closed(pid):
        notes.add(json.loads(recv()))


def start_request(pid: str, argv: list[str], rid: int) -> dict[str, Any]:
    return {"id": rid, "method": "process/start", "params": {"processId": pid, "argv": argv}}


async def test_stalled_websocket_client_gets_every_byte(tmp_path):
    with standalone("--log-dir", str(tmp_path / "logs"), cwd=tmp_path) as s:
        raw = RawWebSocket(s.bare_url, s.token, rcvbuf=4096)
        raw.handshake()
        raw.send("process/start", {"processId": "z", "argv": ["head", "-c", "48M", "/dev/zero"]})
        await asyncio.sleep(STALL_SECONDS)  # not reading: the server must not drop
        notes = Notes()
        await asyncio.to_thread(read_until_closed, raw.recv_frame, notes, "z")
        notes.assert_complete("z", 48 * MIB)
        raw.abort()


def stdio_server(tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            PY,
            "-m",
            "jupyter_exec.transports.serve",
            "--listen",
            "stdio",
            "--log-dir",
            str(tmp_path / "l"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )


def start_flood(server: subprocess.Popen[bytes]) -> None:
    """Handshake, then start `z`: 48 MiB of output, faster than anyone reads."""
    assert server.stdin is not None
    for msg in (
        {"id": 1, "method": "initialize", "params": {"clientName": "stdio"}},
        {"method": "initialized"},
        start_request("z", ["head", "-c", "48M", "/dev/zero"], 2),
    ):
        server.stdin.write(json.dumps(msg).encode() + b"\n")
    server.stdin.flush()


def test_stalled_stdio_client_gets_every_byte(tmp_path):
    server = stdio_server(tmp_path)
    assert server.stdin is not None and server.stdout is not None
    try:
        start_flood(server)
        time.sleep(STALL_SECONDS)  # the pipe fills up; nothing may be dropped
        notes = Notes()
        read_until_closed(server.stdout.readline, notes, "z")
        notes.assert_complete("z", 48 * MIB)
    finally:
        server.stdin.close()
        stop_process(server)


async def test_client_that_never_reads_costs_bounded_memory(tmp_path):
    """1 GB produced while a subscribed client reads nothing: the server's RSS
    stays bounded (what the client has not taken is in the log, not queued)."""
    logs = tmp_path / "logs"
    with standalone("--log-dir", str(logs), "--lifetime", "detached", cwd=tmp_path) as s:
        server = s.proc.pid
        good = await ExecClient.connect(s.bare_url, s.token)
        await good.request("process/list", {})
        base = rss_kib(server)
        stuck = RawWebSocket(s.bare_url, s.token, rcvbuf=4096)
        stuck.handshake()
        stuck.send("process/start", {"processId": "g", "argv": ["head", "-c", "1G", "/dev/zero"]})
        await until_listed(good, "g")
        peak = base
        for _ in range(6000):
            peak = max(peak, rss_kib(server))
            if (await good.read("g", 2**53)).closed:
                break
            await asyncio.sleep(0.05)
        info = next(p for p in await good.list() if p.process_id == "g")
        assert info.state == "closed" and info.output_bytes == 1 << 30
        peak = max(peak, rss_kib(server))
        assert peak - base < RSS_GROWTH_LIMIT_KIB, (base, peak)
        stuck.abort()
        await good.close()


async def test_lagging_client_gets_a_quiet_process_before_the_flood_is_caught_up(tmp_path):
    with standalone("--log-dir", str(tmp_path / "logs"), cwd=tmp_path) as s:
        raw = RawWebSocket(s.bare_url, s.token, rcvbuf=4096)
        raw.handshake()
        raw.send(
            "process/start", {"processId": "flood", "argv": ["head", "-c", "24M", "/dev/zero"]}
        )
        good = await ExecClient.connect(s.bare_url, s.token)
        await good.wait("flood", 60)  # all of it produced; the raw client took almost none
        raw.send("process/start", {"processId": "quiet", "argv": ["echo", "hello"]})
        await good.wait("quiet", 60)
        notes = Notes()
        await asyncio.to_thread(read_until_closed, raw.recv_frame, notes, "flood")
        notes.assert_complete("flood", 24 * MIB)
        notes.assert_complete("quiet", len(b"hello\n"))
        flood_outputs = [i for i, (p, m, _) in enumerate(notes.order) if p == "flood"]
        quiet_output = notes.order.index(("quiet", "process/output", 1))
        behind = sum(1 for i in flood_outputs if i > quiet_output)
        assert behind > len(flood_outputs) // 2, "the quiet process waited for the flood"
        raw.abort()
        await good.close()


async def test_retention_drop_is_a_seq_jump_explained_by_first_seq(tmp_path):
    """Log capped at 256 KiB, 64 KiB in memory: a client stuck while 4 MiB is
    produced jumps from its cursor to `firstSeq` (the log keeps the newest 256 KiB),
    then gets the rest, each chunk once."""
    limits = {"log_bytes_per_process": 256 << 10, "retained_bytes_per_process": 64 << 10}
    async with embedded(tmp_path, **limits) as (service, fast):
        gate = asyncio.Event()
        notes = Notes()

        async def stuck_write(message: bytes) -> None:
            await gate.wait()
            notes.add(json.loads(message))

        slow = service.connect(stuck_write)
        for msg in (
            {"id": 1, "method": "initialize", "params": {"clientName": "slow"}},
            {"method": "initialized"},
        ):
            slow.receive(json.dumps(msg))
        await fast.start("d", py("import sys; sys.stdout.buffer.write(b'x' * (4 << 20))"))
        slow.receive(
            json.dumps({"id": 2, "method": "process/subscribe", "params": {"processId": "d"}})
        )
        await fast.wait("d", 60)
        read = await fast.read("d", 0, max_bytes=1)
        first_seq = read.first_seq
        assert first_seq > 2 and read.chunks[0].seq == first_seq  # the log holds the newest
        gate.set()
        for _ in range(400):
            if notes.closed("d"):
                break
            await asyncio.sleep(0.05)
        seqs = notes.seqs("d")
        # Its cursor was at 0 (stuck on the subscribe's answer): it jumps to `firstSeq`.
        assert seqs == list(range(first_seq, first_seq + len(seqs))), (first_seq, seqs[:3])
        assert notes.closed("d")
        await slow.aclose()


def test_stdio_server_ends_at_eof_even_if_its_client_never_reads(tmp_path):
    """The writer is stuck on a full pipe; stdin's EOF still ends the session and the server."""
    server = stdio_server(tmp_path)
    assert server.stdin is not None
    try:
        start_flood(server)
        time.sleep(STALL_SECONDS)  # stdout is full by now; nobody reads it
        server.stdin.close()
        assert server.wait(60) == 0
    finally:
        stop_process(server)
