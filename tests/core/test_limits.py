"""SPEC 4 `timeoutMs`, `limits` and `untilIdleMs`: real children, real rlimits."""

from __future__ import annotations

import asyncio
import base64

from tests.service import RawPeer, embedded, make_service, py


async def start(peer: RawPeer, process_id: str, argv: list[str], **extra: object) -> None:
    reply = await peer.call("process/start", {"processId": process_id, "argv": argv, **extra})
    assert "result" in reply, reply


async def final(peer: RawPeer, process_id: str) -> dict[str, object]:
    params = {"processId": process_id, "afterSeq": 2**53, "waitMs": 30_000}
    return (await peer.response(peer.send("process/read", params), timeout=40))["result"]


def text(result: dict[str, object]) -> str:
    chunks = result["chunks"]
    assert isinstance(chunks, list)
    return b"".join(base64.b64decode(c["chunk"]) for c in chunks).decode()


async def test_timeout_terminates_and_the_exit_says_so(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    try:
        caps = (await peer.handshake())["result"]["capabilities"]
        assert caps["timeout"] and caps["untilIdle"] and caps["limits"]["cpuSeconds"] == ["rlimit"]
        await peer.call("process/list", {"watch": True})
        await start(peer, "slow", ["sleep", "30"], timeoutMs=300)
        await start(peer, "quick", ["true"], timeoutMs=60_000)
        slow = await final(peer, "slow")
        assert slow["exitCode"] == 143 and slow["signal"] == "SIGTERM" and slow["timedOut"] is True
        quick = await final(peer, "quick")
        assert quick["exitCode"] == 0 and quick["timedOut"] is False
        seen = [m for m in peer.seen if m.get("method") == "process/exited"]
        by_id = {m["params"]["processId"]: m["params"] for m in seen}
        assert by_id["slow"]["timedOut"] is True and by_id["quick"]["timedOut"] is False
        listed = {
            p["processId"]: p for p in (await peer.call("process/list"))["result"]["processes"]
        }
        assert listed["slow"]["timedOut"] and listed["slow"]["timeoutMs"] == 300
        assert not listed["quick"]["timedOut"] and listed["quick"]["limits"] is None
    finally:
        await peer.close()
        await service.aclose()


async def test_bad_timeout_and_limits_are_invalid_params(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    try:
        await peer.handshake()
        for extra, field in [
            ({"timeoutMs": 0}, "timeoutMs"),
            ({"timeoutMs": "5"}, "timeoutMs"),
            ({"limits": {"memoryBytes": 10}}, "limits.memoryBytes"),
            ({"limits": {"cpuSeconds": 1.5}}, "limits.cpuSeconds"),
        ]:
            reply = await peer.call("process/start", {"processId": "x", "argv": ["true"], **extra})
            assert reply["error"]["code"] == -32602 and field in reply["error"]["message"]
        reply = await peer.call("process/read", {"processId": "x", "untilIdleMs": -1})
        assert reply["error"]["code"] in (-32602, -32600)
        assert (await peer.call("process/list"))["result"]["processes"] == []
    finally:
        await peer.close()
        await service.aclose()


async def test_cpu_limit_kills_a_busy_loop_and_is_reported(tmp_path):
    service = make_service(tmp_path)
    peer = RawPeer(service)
    try:
        await peer.handshake()
        await start(peer, "busy", py("while True: pass"), limits={"cpuSeconds": 1})
        result = await final(peer, "busy")
        assert result["exited"] and result["limitExceeded"] == "cpu"
        assert result["signal"] in ("SIGXCPU", "SIGKILL")
        info = (await peer.call("process/list"))["result"]["processes"][0]
        assert info["limits"] == {"cpuSeconds": 1} and info["limitExceeded"] == "cpu"
    finally:
        await peer.close()
        await service.aclose()


async def test_memory_limit_makes_allocation_fail_in_the_child(tmp_path):
    """RLIMIT_AS: the child cannot allocate past it; the exit is its own (MemoryError)."""
    service = make_service(tmp_path)
    peer = RawPeer(service)
    try:
        await peer.handshake()
        grab = "b = bytearray(256 << 20); print('allocated')"
        limits = {"memoryBytes": 128 << 20}
        await start(peer, "big", py(grab), limits=limits)
        await start(peer, "free", py(grab))
        big = await final(peer, "big")
        assert big["exitCode"] == 1 and big["limitExceeded"] is None
        out = text((await peer.call("process/read", {"processId": "big"}))["result"])
        # Python 3.13 quotes the failing source line, print('allocated') included.
        assert "MemoryError" in out and "allocated" not in out.splitlines()
        free = await final(peer, "free")
        assert free["exitCode"] == 0
        assert "allocated" in text(
            (await peer.call("process/read", {"processId": "free"}))["result"]
        )
    finally:
        await peer.close()
        await service.aclose()


async def test_limits_apply_to_tty_children_too(tmp_path):
    async with embedded(tmp_path) as (_, c):
        params = {
            "processId": "t",
            "argv": py("import resource; print(resource.getrlimit(resource.RLIMIT_CPU))"),
            "tty": True,
            "limits": {"cpuSeconds": 7},
        }
        await c.request("process/start", params)
        r = await c.read("t", 0, wait_ms=10_000, until_pattern=r"\(7, 8\)")
        assert r.matched


async def test_until_idle_returns_after_a_burst_not_at_the_first_chunk(tmp_path):
    async with embedded(tmp_path) as (_, c):
        script = (
            "import sys, time\n"
            "time.sleep(0.3)\n"
            "for i in range(5):\n"
            "    print(i, flush=True); time.sleep(0.05)\n"
            "time.sleep(30)\n"
        )
        await c.start("burst", py(script))
        params = {"processId": "burst", "afterSeq": 0, "waitMs": 20_000, "untilIdleMs": 1000}
        r = await c.request("process/read", params)
        out = b"".join(base64.b64decode(ch["chunk"]) for ch in r["chunks"])
        assert out == b"0\n1\n2\n3\n4\n" and not r["exited"]
        # Nothing more comes: it waits for a first chunk, and waitMs caps that.
        params.update(afterSeq=r["nextSeq"] - 1, waitMs=300)
        r = await c.request("process/read", params)
        assert r["chunks"] == [] and not r["exited"]
        await c.terminate("burst")


async def test_until_idle_with_wait_zero_returns_at_once(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("s", ["sleep", "30"])
        read = c.request("process/read", {"processId": "s", "untilIdleMs": 5000})
        r = await asyncio.wait_for(read, 5)
        assert r["chunks"] == []
        await c.terminate("s")
