"""SPEC 4 method semantics, through the Python client on an in-process connection."""

from __future__ import annotations

import asyncio
import os
import stat

from jupyter_exec.client import ClosedEvent, ExitedEvent, OutputEvent
from tests.wire import PY, RawPeer, embedded, py


async def collect(client, pid):
    return [e async for e in client.events(pid)]


async def test_pipe_streams_are_named_and_exit_code_reported(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start(
            "p",
            py(
                "import sys; print('out'); sys.stdout.flush(); print('err', file=sys.stderr); sys.exit(3)"
            ),
        )
        events = await collect(c, "p")
        out: dict[str, bytes] = {}
        for e in events:
            if isinstance(e, OutputEvent):
                out[e.stream] = out.get(e.stream, b"") + e.data
        assert out == {"stdout": b"out\n", "stderr": b"err\n"}
        exited = [e for e in events if isinstance(e, ExitedEvent)]
        assert exited[0].exit_code == 3 and exited[0].signal is None
        assert isinstance(events[-1], ClosedEvent)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_tty_echo_stream_name_and_eof(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("t", ["cat"], tty=True)
        assert await c.write("t", b"hello\n") == "accepted"
        r = await c.read("t", 0, wait_ms=5000, until_pattern=r"hello\r\n.*hello")
        assert r.matched and {ch.stream for ch in r.chunks} == {"pty"}
        assert await c.write("t", b"", eof=True) == "accepted"
        final = await c.wait("t", timeout=10)
        assert final.exit_code == 0 and final.signal is None


async def test_tty_gets_term_and_size_and_resize(tmp_path):
    async with embedded(tmp_path) as (_, c):
        script = "import os,sys,time; print(os.environ['TERM'], os.get_terminal_size()); sys.stdout.flush(); input(); print(os.get_terminal_size())"
        await c.start("t", py(script), tty=True, rows=30, cols=100)
        r = await c.read("t", 0, wait_ms=5000, until_pattern=r"columns=100, lines=30")
        assert r.matched and b"xterm-256color" in r.data
        await c.resize("t", 40, 120)
        await c.write("t", b"\n")
        r = await c.read("t", r.next_seq - 1, wait_ms=5000, until_pattern=r"columns=120, lines=40")
        assert r.matched


async def test_pipe_stdin_and_write_statuses(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("cat", ["cat"], pipe_stdin=True)
        await c.start("nostdin", py("import sys; print(repr(sys.stdin.read()))"))
        assert await c.write("cat", b"abc") == "accepted"
        assert await c.write("cat", b"def\n", eof=True) == "accepted"
        assert await c.write("cat", b"late") == "stdinClosed"
        done = await c.wait("cat", 10)
        assert done.exit_code == 0
        r = await c.read("cat")
        assert r.data == b"abcdef\n"
        assert await c.write("cat", b"x") == "stdinClosed"  # exited
        assert await c.write("nostdin", b"x") == "stdinClosed"  # no pipeStdin: stdin is /dev/null
        await c.wait("nostdin", 10)
        assert (await c.read("nostdin")).data == b"''\n"
        assert await c.write("ghost", b"x") == "unknownProcess"


async def test_write_id_is_idempotent(tmp_path):
    async with embedded(tmp_path) as (service, _):
        peer = RawPeer(service)
        await peer.handshake()
        await peer.call("process/start", {"processId": "c", "argv": ["cat"], "pipeStdin": True})
        for _ in range(3):
            msg = await peer.call(
                "process/write", {"processId": "c", "chunk": "YQ==", "writeId": "1"}
            )
            assert msg["result"] == {"status": "accepted"}
        await peer.call(
            "process/write", {"processId": "c", "chunk": "Yg==", "writeId": "2", "eof": True}
        )
        await service.registry.get("c").closed.wait()
        r = await peer.call("process/read", {"processId": "c"})
        assert "".join(ch["chunk"] for ch in r["result"]["chunks"]) in ("YWI=", "YQ==Yg==")
        await peer.close()


async def test_read_cursor_maxbytes_and_nextseq(tmp_path):
    async with embedded(tmp_path) as (_, c):
        code = "import sys,time\nfor i in range(5):\n    sys.stdout.write(str(i)*10); sys.stdout.flush(); time.sleep(0.05)"
        await c.start("p", py(code))
        await c.wait("p", 10)
        full = await c.read("p")
        assert full.data == b"".join(str(i).encode() * 10 for i in range(5))
        assert len(full.chunks) == 5 and full.next_seq == full.chunks[-1].seq + 1
        one = await c.read("p", 0, max_bytes=1)
        assert len(one.chunks) == 1 and one.next_seq == one.chunks[0].seq + 1  # at least one chunk
        two = await c.read("p", 0, max_bytes=20)
        assert len(two.chunks) == 2
        rest = await c.read("p", two.next_seq - 1)
        assert [ch.seq for ch in rest.chunks] == [3, 4, 5]
        after_all = await c.read("p", 5)
        assert after_all.chunks == [] and after_all.next_seq == 8  # 6 exited, 7 closed
        assert after_all.exited and after_all.closed and after_all.first_seq == 1


async def test_wait_ms_returns_at_first_output_or_times_out(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start(
            "p", py("import sys,time; time.sleep(0.3); print('late', flush=True); time.sleep(30)")
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        empty = await c.read("p", 0, wait_ms=100)
        assert empty.chunks == [] and not empty.exited and loop.time() - t0 >= 0.09
        t0 = loop.time()
        got = await c.read("p", 0, wait_ms=10_000)
        assert got.data.startswith(b"late") and loop.time() - t0 < 5
        await c.terminate("p", 100)


async def test_wait_ms_returns_at_exit(tmp_path):
    async with embedded(tmp_path) as (_, c):
        await c.start("p", py("import time; time.sleep(0.2)"))
        r = await c.read("p", 0, wait_ms=20_000)
        assert r.exited and r.exit_code == 0 and r.chunks == []


async def test_until_pattern_joins_chunks_and_reports_exit_without_match(tmp_path):
    async with embedded(tmp_path) as (_, c):
        code = "import sys,time\nfor part in ['Liste', 'ning on ', 'port 8', '080\\n', 'more\\n']:\n    sys.stdout.write(part); sys.stdout.flush(); time.sleep(0.05)\ntime.sleep(30)"
        await c.start("srv", py(code))
        r = await c.read("srv", 0, wait_ms=10_000, until_pattern=r"Listening on port (\d+)\n")
        assert r.matched and r.data == b"Listening on port 8080\n"  # ends with the completing chunk
        await c.terminate("srv", 100)
        await c.start("quits", py("print('nothing here')"))
        r = await c.read("quits", 0, wait_ms=10_000, until_pattern="never")
        assert r.matched is False and r.exited


async def test_signal_names_go_to_the_group_and_exit_codes_agree_for_tty_and_pipe(tmp_path):
    async with embedded(tmp_path) as (_, c):
        for tty in (False, True):
            pid = f"sig-{tty}"
            await c.start(
                pid, py("import time,sys; print('ready', flush=True); time.sleep(30)"), tty=tty
            )
            assert (await c.read(pid, 0, wait_ms=5000, until_pattern="ready")).matched
            await c.signal(pid, "user1")
            r = await c.wait(pid, 10)
            assert (r.exit_code, r.signal) == (128 + 10, "SIGUSR1"), tty
        await c.start("t2", py("import sys; sys.exit(7)"), tty=True)
        assert (await c.wait("t2", 10)).exit_code == 7


async def test_subscribe_replays_then_follows_and_unsubscribe_stops(tmp_path):
    async with embedded(tmp_path) as (service, c):
        await c.start("p", ["cat"], pipe_stdin=True)
        peer = RawPeer(service)
        await peer.handshake()
        await c.write("p", b"one\n")
        await c.read("p", 0, wait_ms=5000)
        sub = await peer.call("process/subscribe", {"processId": "p", "afterSeq": 0})
        assert sub["result"]["nextSeq"] == 2
        replay = await peer.recv()
        assert replay["method"] == "process/output" and replay["params"]["seq"] == 1
        await c.write("p", b"two\n")
        live = await peer.recv()
        assert live["params"]["seq"] == 2
        assert (await peer.call("process/unsubscribe", {"processId": "p"}))["result"] == {}
        await c.write("p", b"three\n", eof=True)
        await c.wait("p", 10)
        assert peer.inbox.empty()
        await peer.close()


async def test_list_watch_sends_lifecycle_notifications(tmp_path):
    async with embedded(tmp_path, exited_retention_seconds=0.2) as (service, c):
        peer = RawPeer(service)
        await peer.handshake()
        await peer.call("process/list", {"watch": True})
        await c.start("w", py("print('x')"), label="my label")
        methods = []
        while "process/removed" not in methods:
            msg = await peer.recv()
            methods.append(msg["method"])
            if msg["method"] == "process/started":
                info = msg["params"]["process"]
                assert info["processId"] == "w" and info["label"] == "my label"
                assert info["state"] == "running" and info["pid"] > 0
        assert methods == ["process/started", "process/exited", "process/closed", "process/removed"]
        unknown = await peer.call("process/read", {"processId": "w"})
        assert unknown["error"]["message"] == "unknown process id w"  # removed after retention
        await peer.close()


async def test_start_response_precedes_first_notification(tmp_path):
    async with embedded(tmp_path) as (service, _):
        for i in range(20):
            peer = RawPeer(service)
            await peer.handshake()
            rid = peer.send("process/start", {"processId": f"fast{i}", "argv": ["echo", "hi"]})
            first = await peer.recv()
            assert first.get("id") == rid and "result" in first, first
            await peer.close()


async def test_long_poll_does_not_delay_other_requests(tmp_path):
    async with embedded(tmp_path) as (service, _):
        peer = RawPeer(service)
        await peer.handshake()
        await peer.call(
            "process/start", {"processId": "quiet", "argv": py("import time; time.sleep(60)")}
        )
        peer.send("process/read", {"processId": "quiet", "waitMs": 30_000})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        listed = await peer.call("process/list", {})
        term = await peer.call("process/terminate", {"processId": "quiet", "graceMs": 100})
        assert listed["result"]["processes"] and term["result"] == {"running": True}
        assert loop.time() - t0 < 2
        pending_read = [m for m in peer.seen if m.get("id") == 2]
        assert not pending_read  # the long-poll had not answered yet when terminate did
        await peer.close()


async def test_cwd_forms_and_env_rules(tmp_path):
    sub = tmp_path / "sub dir"
    sub.mkdir()
    async with embedded(tmp_path) as (_, c):
        cases = {"rel": "sub dir", "abs": str(sub), "uri": sub.as_uri(), "default": None}
        for name, cwd in cases.items():
            await c.start(name, py("import os; print(os.getcwd())"), cwd=cwd)
            await c.wait(name, 10)
            expected = tmp_path if cwd is None else sub
            assert (await c.read(name)).data.decode().strip() == str(expected), name
        await c.start("whole", ["/usr/bin/env"], env={"ONLY": "1"})
        await c.wait("whole", 10)
        lines = (await c.read("whole")).data.decode().split()
        assert "ONLY=1" in lines and not any(x.startswith("PATH=") for x in lines)
        os.environ["JE_TEST_INHERITED"] = "yes"
        try:
            await c.start("over", ["/usr/bin/env"], env={"ONLY": "2"}, inherit_env=True)
            await c.wait("over", 10)
            lines = (await c.read("over")).data.decode().split()
            assert "ONLY=2" in lines and "JE_TEST_INHERITED=yes" in lines
        finally:
            del os.environ["JE_TEST_INHERITED"]


async def test_arg0_override_and_program_errors(tmp_path):
    script = tmp_path / "noexec.sh"
    script.write_text("echo hi\n")
    async with embedded(tmp_path) as (service, c):
        peer = RawPeer(service)
        await peer.handshake()
        msg = await peer.call(
            "process/start",
            {
                "processId": "a0",
                "argv": [
                    PY,
                    "-c",
                    "print(open('/proc/self/cmdline','rb').read().split(bytes(1))[0].decode())",
                ],
                "arg0": "renamed",
            },
        )
        assert "result" in msg
        await c.wait("a0", 10)
        assert (await c.read("a0")).data == b"renamed\n"
        bad = await peer.call("process/start", {"processId": "ne", "argv": [str(script)]})
        assert bad["error"]["code"] == -32602 and "not executable" in bad["error"]["message"]
        await peer.close()


async def test_logs_are_owner_only(tmp_path):
    async with embedded(tmp_path) as (service, c):
        await c.start("p", ["echo", "x"])
        await c.wait("p", 10)
        log_dir = service.registry._log_dir
        assert log_dir is not None
        assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
        logs = list(log_dir.iterdir())
        assert logs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in logs)
    assert not log_dir.exists()  # removed at shutdown


async def test_start_response_precedes_started_for_a_watching_connection(tmp_path):
    async with embedded(tmp_path) as (service, _):
        peer = RawPeer(service)
        await peer.handshake()
        await peer.call("process/list", {"watch": True})
        for i in range(10):
            rid = peer.send("process/start", {"processId": f"w{i}", "argv": ["echo", "hi"]})
            first = await peer.recv()
            assert first.get("id") == rid and "result" in first, first
            methods = []
            while "process/closed" not in methods:
                methods.append((await peer.recv())["method"])
            assert methods[0] == "process/started"  # then output, exited, closed
        await peer.close()


async def test_a_slow_events_consumer_loses_nothing_and_bounds_the_clients_memory(tmp_path):
    """The server never drops (SPEC 5); the client keeps at most INBOX_BYTES waiting
    for a slow consumer and reads the rest back from the log, so nothing is lost."""
    from jupyter_exec.client import exec_client as client_module

    size = 48 << 20
    async with embedded(tmp_path) as (_, c):
        await c.start("flood", ["head", "-c", str(size), "/dev/zero"])
        stream = c.events("flood")
        first = await anext(stream)
        await asyncio.sleep(1.5)  # the consumer stalls while the flood is delivered
        (inbox,) = c._queues["flood"]
        # Full (the flood outran the consumer), yet bounded.
        assert client_module.INBOX_BYTES - (64 << 10) <= inbox._bytes <= client_module.INBOX_BYTES
        events = [first] + [e async for e in stream]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert sum(len(e.data) for e in events if isinstance(e, OutputEvent)) == size
        assert isinstance(events[-2], ExitedEvent) and events[-2].exit_code == 0


# -- a finished process from its record (ManagedProcess.finished, core/record.py) -----


def _record_with_log(tmp_path, end):
    """A record whose log holds two chunks (as a previous daemon left them)."""
    from jupyter_exec.core.output import OutputStore
    from jupyter_exec.core.record import ProcessRecord, ProcessSetup
    from jupyter_exec.core.sandbox import Confinement

    log = tmp_path / "abc.log"
    writer = OutputStore(log, 1 << 20, 1 << 20)
    writer.append_run(1, "stdout", [b"hello ", b"world\n"])
    writer.close(remove=False)
    setup = ProcessSetup(
        "done", ["make"], str(tmp_path), False, True, "build", "detached", None, "",
        sandbox=Confinement("read-only", False, ()),
    )  # fmt: skip
    return ProcessRecord(setup, log, 1765000000000, 4242, 99, end), OutputStore.recover(
        log, 1 << 20
    )


async def test_a_finished_process_is_closed_with_its_recorded_exit_and_replays_it(tmp_path):
    from jupyter_exec.core.process import ManagedProcess
    from jupyter_exec.core.record import ExitRecord

    end = ExitRecord(137, "SIGKILL", 1765000001000, True, "memory", True)
    record, store = _record_with_log(tmp_path, end)
    proc = ManagedProcess.finished(record, store)
    info = proc.info()
    assert (info.state, info.pid, info.exit_code, info.signal, info.exited_at) == (
        "closed", 4242, 137, "SIGKILL", 1765000001000,
    )  # fmt: skip
    assert (info.timed_out, info.limit_exceeded, info.label, info.started_at) == (
        True, "memory", "build", 1765000000000,
    )  # fmt: skip
    assert info.sandbox is not None and info.usage is None and info.ports == []
    assert proc.exited.is_set() and proc.closed.is_set() and proc.tree is None
    events = proc.replay(0)
    assert [e.seq for e in events] == [1, 2, 3, 4]  # its output, then exited and closed
    assert b"".join(e.data for e in events[:2]) == b"hello world\n"
    assert events[2] == ExitedEvent("done", 3, 137, "SIGKILL", True, "memory", True)
    assert events[3] == ClosedEvent("done", 4)
    # Nothing reaches a child that is gone (its pid may be another process's by now).
    assert proc.write(b"x", False, None) == "stdinClosed"
    proc.send_signal(9)
    assert proc.record() == record  # written back, it reads the same
    proc.discard()


async def test_a_finished_process_without_an_exit_is_lost_and_its_followers_end(tmp_path):
    from jupyter_exec.core.process import ManagedProcess

    record, store = _record_with_log(tmp_path, None)
    proc = ManagedProcess.finished(record, store)
    assert (proc.state, proc.exit_code, proc.exited_at, proc.next_seq) == ("lost", None, None, 4)
    assert [type(e).__name__ for e in proc.replay(2)] == ["ClosedEvent"]
    assert proc.record() == record
    proc.discard()
