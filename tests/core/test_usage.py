"""SPEC 11 `ports`, `usage`, `origin` and `process/wait`, with real processes."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

import pytest

from jupyter_exec.core.usage import listening_sockets, socket_inodes
from jupyter_exec.wire.errors import InvalidParamsError, InvalidRequestError
from tests.service import RawPeer, embedded, py

#: Serves its directory on a free port of 127.0.0.1, from a grandchild (bash -> python).
SERVER = ["bash", "-c", "python3 -m http.server 0 --bind 127.0.0.1 >/dev/null 2>&1 & wait"]
#: Touches 200 MB, says so, holds it for a while.
MEMORY = py(
    "import sys, time\n"
    "b = bytearray(200 << 20)\n"
    "b[::4096] = b'x' * (len(b) // 4096)\n"
    "print('touched', flush=True); time.sleep(4)\n"
)
#: Spins for 4 s, then says which share of a core it got.
BUSY = py(
    "import time\nt = time.time()\nwhile time.time() - t < 4: pass\n"
    "print(f'share={time.process_time() / (time.time() - t):.3f}')\n"
)


async def info_of(client, process_id):
    return next(i for i in await client.list() if i.process_id == process_id)


async def test_a_grandchilds_port_shows_within_2s_and_goes_with_it(tmp_path):
    (tmp_path / "hello.txt").write_text("hi")
    async with embedded(tmp_path) as (_, c):
        await c.start("srv", SERVER)
        started = time.monotonic()
        info = await c.wait_for_port("srv", 10)
        assert time.monotonic() - started < 2.5  # the first sample after the listen
        [port] = info.ports
        assert port["address"] == "127.0.0.1" and port["pid"] != info.pid  # the grandchild
        assert "url" not in port  # no Jupyter front, no proxy URL
        url = f"http://127.0.0.1:{port['port']}/"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read())
        assert b"hello.txt" in body
        assert info.usage is not None and info.usage["processes"] == 2
        await c.terminate("srv")
        await c.wait("srv", 10)
        assert (await info_of(c, "srv")).ports == []


async def test_ports_of_other_processes_are_not_claimed(tmp_path):
    """A socket listening outside every tree is nobody's; ours still show."""
    with socket.socket() as outsider:
        outsider.bind(("127.0.0.1", 0))
        outsider.listen()
        assert outsider.getsockname()[1] in {p for _, p in listening_sockets().values()}
        async with embedded(tmp_path) as (_, c):
            await c.start("idle", ["sleep", "30"])
            await c.start("srv", SERVER)
            await c.wait_for_port("srv", 10)
            assert (await info_of(c, "idle")).ports == []
            listed = {p["port"] for i in await c.list() for p in i.ports}
            assert outsider.getsockname()[1] not in listed


async def test_memory_and_cpu_show_and_stay_after_the_exit(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("mem", MEMORY)
        await c.start("busy", BUSY)
        await c.read("mem", 0, wait_ms=10_000, until_pattern="touched")
        rss, busiest = 0, 0.0
        while (await info_of(c, "busy")).state == "running":
            mem, busy = await info_of(c, "mem"), await info_of(c, "busy")
            rss = max(rss, mem.usage["rssBytes"] if mem.usage else 0)
            busiest = max(busiest, busy.usage["cpuPercent"] if busy.usage else 0)
            await asyncio.sleep(0.2)
        assert rss >= 150 << 20
        # Over 30 % of a core, unless this machine gave it less (then most of that).
        share = float((await c.read("busy", 0)).data.decode().split("share=")[1])
        assert busiest > min(30.0, 60 * share), (busiest, share)
        await c.wait_all(["mem", "busy"], 20)
        mem_after, busy_after = await info_of(c, "mem"), await info_of(c, "busy")
        assert mem_after.usage["peakRssBytes"] >= rss
        assert mem_after.usage["rssBytes"] == 0 and mem_after.usage["processes"] == 0
        assert busy_after.usage["cpuSeconds"] >= 4 * share * 0.9
        assert busy_after.usage["cpuPercent"] == 0


async def test_wait_answers_when_all_have_exited_or_at_the_timeout(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("quick", py("import sys; sys.exit(3)"))
        await c.start("slow", py("import time; time.sleep(1.5)"))
        await c.start("forever", ["sleep", "60"])
        started = time.monotonic()
        both = await c.wait_all(["quick", "slow"], 20)
        assert 1.0 < time.monotonic() - started < 10
        assert both == [
            {"processId": "quick", "exited": True, "exitCode": 3, "signal": None},
            {"processId": "slow", "exited": True, "exitCode": 0, "signal": None},
        ]
        started = time.monotonic()
        timed_out = await c.wait_all(["quick", "forever"], 0.3)
        assert 0.25 < time.monotonic() - started < 5
        assert timed_out[1] == {
            "processId": "forever", "exited": False, "exitCode": None, "signal": None
        }  # fmt: skip
        await c.terminate("forever", 0)
        [killed] = await c.wait_all(["forever"], 20)
        assert killed["exited"] and killed["signal"] == "SIGTERM" and killed["exitCode"] == 143


async def test_wait_refuses_bad_input_and_harms_nothing(tmp_path):
    async with embedded(tmp_path) as (service, c):
        await c.start("live", ["sleep", "30"])
        with pytest.raises(InvalidRequestError, match="unknown process id ghost"):
            await c.wait_all(["live", "ghost"], 1)
        peer = RawPeer(service)
        await peer.handshake()
        for params, needle in (
            ({"processIds": ["live"], "timeoutMs": -1}, "timeoutMs"),
            ({"processIds": [], "timeoutMs": 10}, "processIds"),
            ({"processIds": "live"}, "processIds"),
            ({"processIds": [""]}, "processIds"),
            ({"timeoutMs": 10}, "processIds"),
            ({"processIds": ["live"], "timeoutMs": 1.5}, "timeoutMs"),
        ):
            error = (await peer.call("process/wait", params))["error"]
            assert error["code"] == InvalidParamsError.code and needle in error["message"], params
        await peer.close()
        assert (await info_of(c, "live")).state == "running"


async def test_origin_is_sent_or_taken_from_the_client_name(tmp_path):
    async with embedded(tmp_path) as (service, c):
        await c.start("mine", ["true"], origin={"kind": "notebook", "name": "work/a.ipynb"})
        await c.start("plain", ["true"])
        assert (await info_of(c, "mine")).origin == {"kind": "notebook", "name": "work/a.ipynb"}
        assert (await info_of(c, "plain")).origin == {"kind": "client", "name": "jupyter-exec"}
        peer = RawPeer(service)
        peer.seen = []
        await peer.call("initialize", {"clientName": "codex-environment"})
        peer.send("initialized", notify=True)
        await peer.call("process/start", {"processId": "agent", "argv": ["true"]})
        bad = await peer.call(
            "process/start", {"processId": "x", "argv": ["true"], "origin": {"kind": "robot"}}
        )
        assert (
            bad["error"]["code"] == InvalidParamsError.code and "origin" in bad["error"]["message"]
        )
        await peer.close()
        assert (await info_of(c, "agent")).origin == {"kind": "agent", "name": "codex-environment"}
        assert "x" not in {i.process_id for i in await c.list()}


def test_socket_inodes_of_a_gone_process_are_none():
    assert socket_inodes(2**22 + 1) == frozenset()  # above any pid_max


def test_front_rules_carry_the_proxy_base_url_both_ways():
    from jupyter_exec.wire.rules import FrontRules

    rules = FrontRules.here("a front", proxy_base_url="/base/proxy/")
    assert FrontRules.from_wire(rules.to_wire()).proxy_base_url == "/base/proxy/"
    assert "proxyBaseUrl" not in FrontRules.here("another").to_wire()


async def test_without_sock_diag_psutil_finds_the_ports(tmp_path, monkeypatch):
    """Where netlink's sock_diag is refused (some sandboxes), ports still show."""
    from jupyter_exec.core import usage

    def refused() -> dict[int, tuple[str, int]]:
        raise PermissionError("sock_diag refused")

    monkeypatch.setattr(usage, "listening_sockets", refused)
    async with embedded(tmp_path) as (_, c):
        await c.start("srv", SERVER)
        [port] = (await c.wait_for_port("srv", 10)).ports
        assert port["address"] == "127.0.0.1" and port["port"] > 0


def test_the_interval_stays_within_2s_unless_a_pass_costs_over_1_percent():
    from jupyter_exec.core.usage import next_interval

    assert next_interval(0.001) == 1.0
    assert next_interval(0.006) == 1.5
    assert next_interval(0.015) == 2.0
    assert next_interval(0.05) == 5.0
    assert next_interval(1.0) == 10.0


def test_usage_is_null_until_a_sample_or_the_exit_gives_figures():
    from jupyter_exec.core.proctree import ProcessRef
    from jupyter_exec.core.usage import TreeUsage

    tree = TreeUsage(ProcessRef(1, 0))
    assert tree.usage() is None
    tree.finish(1.234)
    assert tree.usage() == {
        "cpuPercent": 0.0, "cpuSeconds": 1.23, "rssBytes": 0, "peakRssBytes": 0, "processes": 0
    }  # fmt: skip
