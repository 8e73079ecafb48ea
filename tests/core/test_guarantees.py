"""The guarantees the reference server does not give (issue: core): ordering, no loss,
termination of the whole tree, resume, slow clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from typing import Any

from jupyter_exec.client import ExecClient, ExitedEvent, OutputEvent
from tests.service import RawPeer, embedded, pid_alive, py, unb64

FLOOD = "import sys\nwhile True:\n    sys.stdout.write('x' * 4000 + '\\n'); sys.stdout.flush()"


async def test_flood_then_terminate_keeps_output_before_exited(tmp_path):
    async with embedded(tmp_path) as (service, _):
        for round_ in range(5):
            for tty in (False, True):
                peer = RawPeer(service)
                await peer.handshake()
                pid = f"flood-{round_}-{tty}"
                await peer.call("process/start", {"processId": pid, "argv": py(FLOOD), "tty": tty})
                while not any(m.get("method") == "process/output" for m in peer.seen):
                    peer.seen.append(await peer.recv())
                await peer.call("process/terminate", {"processId": pid, "graceMs": 2000})
                await service.registry.get(pid).closed.wait()
                await asyncio.sleep(0.05)
                notes = list(peer.seen)
                while not peer.inbox.empty():
                    notes.append(peer.inbox.get_nowait())
                seqs = [
                    m["params"]["seq"] for m in notes if m.get("method", "").startswith("process/")
                ]
                assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
                exited = next(m for m in notes if m.get("method") == "process/exited")["params"]
                outputs = [m["params"]["seq"] for m in notes if m.get("method") == "process/output"]
                assert outputs and max(outputs) < exited["seq"]
                assert exited["signal"] == "SIGTERM" and exited["exitCode"] == 143
                assert notes[-1]["method"] == "process/closed"
                await peer.close()


async def test_every_client_sees_strictly_increasing_seqs(tmp_path):
    async with embedded(tmp_path) as (service, c):
        peers = [RawPeer(service) for _ in range(3)]
        for p in peers:
            await p.handshake()
        await c.start("p", py("import sys\nfor i in range(2000): print(i)\n"))
        for p in peers:
            await p.call("process/subscribe", {"processId": "p", "afterSeq": 0})
        await c.wait("p", 20)
        await asyncio.sleep(0.1)
        for p in peers:
            msgs = list(p.seen)
            while not p.inbox.empty():
                msgs.append(p.inbox.get_nowait())
            seqs = [m["params"]["seq"] for m in msgs if m.get("method", "").startswith("process/")]
            assert seqs == sorted(set(seqs)) and seqs[-1] == (await c.read("p", 10**6)).next_seq - 1
            await p.close()


async def test_4mib_read_back_whole_from_log_beyond_memory(tmp_path):
    async with embedded(tmp_path, retained_bytes_per_process=64 * 1024) as (_, c):
        code = "import os,sys\nblock = os.urandom(1 << 20)\nfor i in range(4): sys.stdout.buffer.write(block)\nsys.stdout.flush()\nsys.stderr.write(__import__('hashlib').sha256(block*4).hexdigest())"
        await c.start("big", py(code))
        await c.wait("big", 30)
        cursor, out, err = 0, bytearray(), bytearray()
        while True:
            r = await c.read("big", cursor, max_bytes=300_000)
            if not r.chunks:
                break
            for ch in r.chunks:
                (out if ch.stream == "stdout" else err).extend(ch.data)
            cursor = r.next_seq - 1
        assert len(out) == 4 << 20
        assert hashlib.sha256(out).hexdigest() == err.decode()
        assert r.first_seq == 1  # nothing was dropped


async def test_memory_only_retention_reports_first_seq(tmp_path):
    async with embedded(tmp_path, retained_bytes_per_process=1000, log_bytes_per_process=0) as (
        _,
        c,
    ):
        await c.start(
            "p",
            py(
                "import sys,time\nfor i in range(50):\n    sys.stdout.write('%03d' % i + '.'*96); sys.stdout.flush(); time.sleep(0.002)"
            ),
        )
        await c.wait("p", 10)
        r = await c.read("p", 0)
        assert r.first_seq > 1 and r.chunks[0].seq >= r.first_seq
        assert sum(len(ch.data) for ch in r.chunks) <= 1000
        assert r.data.endswith(b"049" + b"." * 96)


async def test_log_cap_keeps_the_newest_output(tmp_path):
    """Past `log_bytes_per_process` the log's head is cut: the newest 50 KB stay, and
    `firstSeq` is the first chunk a read from 0 returns (nothing below it comes)."""
    async with embedded(
        tmp_path, retained_bytes_per_process=10_000, log_bytes_per_process=50_000
    ) as (_, c):
        await c.start(
            "p",
            py(
                "import sys\nimport time\nfor i in range(100): sys.stdout.write(str(i).zfill(999) + '\\n'); sys.stdout.flush(); time.sleep(0.002)"
            ),
        )
        await c.wait("p", 10)
        r = await c.read("p", 0, max_bytes=10**9)
        info = (await c.list())[0]
        assert info.failure is None and r.first_seq == info.first_seq > 1
        assert r.chunks[0].seq == r.first_seq
        expected = b"".join(str(i).zfill(999).encode() + b"\n" for i in range(100))
        assert 40_000 <= len(r.data) <= 50_000 and expected.endswith(r.data)


async def test_terminate_kills_setsid_escapees_that_ignore_sigterm(tmp_path):
    escapee = (
        "import os, signal, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        os.closerange(0, 3)\n"
        "        open('escapee.pid', 'w').write(str(os.getpid()))\n"
        "        time.sleep(300)\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while not os.path.exists('escapee.pid') or not open('escapee.pid').read():\n"
        "    time.sleep(0.01)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    async with embedded(tmp_path) as (service, c):
        await c.start("tree", py(escapee))
        assert (await c.read("tree", 0, wait_ms=5000, until_pattern="ready")).matched
        proc = service.registry.get("tree")
        from jupyter_exec.core.proctree import marked_processes

        escapee_pid = int((tmp_path / "escapee.pid").read_text())
        tree = marked_processes(proc.setup.marker)
        assert {proc.child.pid, escapee_pid} <= {
            p.pid for p in tree
        }  # the child and its setsid grandchild
        t0 = time.monotonic()
        assert await c.terminate("tree", 300) is True
        final = await c.wait("tree", 10)
        assert final.signal == "SIGKILL" and final.exit_code == 137  # ignored SIGTERM
        for _ in range(100):
            if not any(pid_alive(p) for p in tree):
                break
            await asyncio.sleep(0.05)
        assert not any(pid_alive(p) for p in tree)
        assert time.monotonic() - t0 < 5
        assert await c.terminate("tree") is False  # exited: nothing to stop


async def test_terminate_of_a_cooperative_process_is_prompt(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("s", ["sleep", "100"])
        t0 = time.monotonic()
        assert await c.terminate("s") is True
        r = await c.wait("s", 10)
        assert r.signal == "SIGTERM" and time.monotonic() - t0 < 1.5


async def test_resume_session_loses_no_byte(tmp_path):
    from tests.service import standalone

    with standalone("--lifetime", "detached", cwd=tmp_path) as server:
        c1 = await ExecClient.connect(server.bare_url, server.token)
        code = "import sys,time\nfor i in range(300):\n    print('line', i, flush=True); time.sleep(0.003)"
        await c1.start("p", py(code))
        first = await c1.read("p", 0, wait_ms=5000)
        cursor = first.chunks[-1].seq
        received = bytearray(first.data)
        session = c1.session_id
        await c1.close()
        await asyncio.sleep(0.3)  # output continues while nobody is connected
        c2 = await ExecClient.connect(server.bare_url, server.token, resume_session_id=session)
        assert c2.session_id == session
        async for ev in c2.events("p", cursor):
            if isinstance(ev, OutputEvent):
                received.extend(ev.data)
        expected = "".join(f"line {i}\n" for i in range(300)).encode()
        assert bytes(received) == expected
        await c2.close()


async def test_connection_lifetime_processes_end_after_resume_window(tmp_path):
    async with embedded(tmp_path, session_resume_seconds=0.3) as (service, c):
        owner = RawPeer(service)
        await owner.handshake()
        await owner.call(
            "process/start",
            {"processId": "conn", "argv": ["sleep", "100"], "lifetime": "connection"},
        )
        await owner.call(
            "process/start", {"processId": "det", "argv": ["sleep", "100"], "lifetime": "detached"}
        )
        await owner.close()
        await asyncio.sleep(0.1)
        states = {p.process_id: p.state for p in await c.list()}
        assert states == {"conn": "running", "det": "running"}  # within the window
        final = await c.wait("conn", 10)
        assert final.signal == "SIGTERM"
        assert service.registry.get("det").state == "running"
        await c.terminate("det", 100)


async def test_resume_within_window_keeps_connection_process(tmp_path):
    async with embedded(tmp_path, session_resume_seconds=0.5) as (service, _):
        owner = RawPeer(service)
        init = await owner.handshake()
        await owner.call("process/start", {"processId": "conn", "argv": ["cat"], "pipeStdin": True})
        await owner.close()
        back = RawPeer(service)
        back.seen = []
        res = await back.call(
            "initialize", {"clientName": "t", "resumeSessionId": init["result"]["sessionId"]}
        )
        assert res["result"]["sessionId"] == init["result"]["sessionId"]
        back.send("initialized", notify=True)
        await asyncio.sleep(0.8)
        assert service.registry.get("conn").state == "running"
        await back.call("process/write", {"processId": "conn", "chunk": "aGkK"})
        note = await back.recv()  # the subscription came back with the session
        assert note["method"] == "process/output" and note["params"]["processId"] == "conn"
        bogus = RawPeer(service)
        bogus.seen = []
        err = await bogus.call("initialize", {"clientName": "t", "resumeSessionId": "nope"})
        assert err["error"]["code"] == -32600 and "nope" in err["error"]["message"]
        await back.call("process/terminate", {"processId": "conn", "graceMs": 100})
        await back.close()
        await bogus.close()


async def test_slow_client_lags_loses_nothing_and_does_not_block_others(tmp_path):
    """SPEC 5: a client whose writes are stuck gets every notification later, in order."""
    async with embedded(tmp_path, retained_bytes_per_process=64 * 1024) as (service, fast):
        gate = asyncio.Event()
        slow_frames: list[dict[str, Any]] = []

        async def stuck_write(message: bytes) -> None:
            await gate.wait()  # a client that does not read its socket for a while
            slow_frames.append(json.loads(message))

        slow = service.connect(stuck_write)
        slow.receive(
            json.dumps({"id": 1, "method": "initialize", "params": {"clientName": "slow"}})
        )
        slow.receive(json.dumps({"method": "initialized"}))
        code = "import sys\nfor i in range(20000): print('%06d' % i + '-' * 50)"
        await fast.start("flood", py(code))
        slow.receive(
            json.dumps({"id": 2, "method": "process/subscribe", "params": {"processId": "flood"}})
        )
        got = bytearray()
        async for ev in fast.events("flood"):  # the fast client is not held back
            if isinstance(ev, OutputEvent):
                got.extend(ev.data)
        assert got.count(b"\n") == 20000
        assert len(slow_frames) == 0
        gate.set()  # far behind: most of it is read back from the log now
        for _ in range(400):
            if any(f.get("method") == "process/closed" for f in slow_frames):
                break
            await asyncio.sleep(0.05)
        notes = [f for f in slow_frames if f.get("method", "").startswith("process/")]
        assert [n["params"]["seq"] for n in notes] == list(range(1, len(notes) + 1))
        assert [n["method"] for n in notes[-2:]] == ["process/exited", "process/closed"]
        data = b"".join(unb64(n["params"]["chunk"]) for n in notes[:-2])
        assert data == bytes(got)
        await slow.aclose()


async def test_events_iterator_gets_everything_from_a_late_start(tmp_path):
    async with embedded(tmp_path, retained_bytes_per_process=16 * 1024) as (_, c):
        code = "import sys\nfor i in range(5000): print('%05d' % i + '=' * 100)"
        await c.start("p", py(code))
        await asyncio.sleep(0.5)  # most of the output is only in the log by now
        data = bytearray()
        seqs = []
        async for ev in c.subscribe("p"):  # the same iterator as events()
            seqs.append(ev.seq)
            if isinstance(ev, OutputEvent):
                data.extend(ev.data)
        assert seqs == list(range(1, len(seqs) + 1))
        assert data == "".join(f"{i:05d}" + "=" * 100 + "\n" for i in range(5000)).encode()


async def test_signal_process_group_reaches_children(tmp_path):
    async with embedded(tmp_path) as (_, c):
        code = "import subprocess,sys; p = subprocess.Popen(['sleep','100']); print(p.pid, flush=True); p.wait(); print('child', p.returncode, flush=True)"
        await c.start("g", py(code))
        r = await c.read("g", 0, wait_ms=5000)
        child = int(r.data.split()[0])
        await c.signal("g", "kill")
        await c.wait("g", 10)
        for _ in range(50):
            if not pid_alive(child):
                break
            await asyncio.sleep(0.05)
        assert not pid_alive(child)
        os.kill(os.getpid(), 0)  # the server itself is fine
        _ = signal, ExitedEvent
