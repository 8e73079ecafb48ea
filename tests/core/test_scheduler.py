"""SPEC 11 restarts, queues and `after` (core/scheduler.py), as a client sees them on the wire."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

from tests.wire import RawPeer, connected, py


async def notes_until_closed(peer: RawPeer, process_id: str, timeout: float = 20) -> list[Any]:
    """Every notification about `process_id` (seen already or coming) up to its `closed`."""
    got = [m for m in peer.seen if m.get("params", {}).get("processId") == process_id]
    peer.seen = [m for m in peer.seen if m not in got]
    while not got or got[-1]["method"] != "process/closed":
        msg = await peer.recv(timeout)
        if msg.get("params", {}).get("processId") == process_id:
            got.append(msg)
        else:
            peer.seen.append(msg)
    return got


async def info(peer: RawPeer, process_id: str) -> dict[str, Any]:
    listed = (await peer.call("process/list", {}))["result"]["processes"]
    return next(p for p in listed if p["processId"] == process_id)


async def until_state(peer: RawPeer, process_id: str, state: str, timeout: float = 10) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await info(peer, process_id))["state"] != state:
        assert loop.time() < deadline, f"{process_id} is {found['state']}, not {state}"
        await asyncio.sleep(0.02)
    return found


def start(process_id: str, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"processId": process_id, "argv": argv, **extra}


# -- restarts -----------------------------------------------------------------------


async def test_on_failure_restarts_twice_then_exits_once_in_one_seq_stream(tmp_path):
    async with connected(tmp_path) as peer:
        policy = {"policy": "on-failure", "maxRestarts": 2, "delayMs": 20}
        script = "import os; os.write(1, b'run %d' % os.getpid()); raise SystemExit(3)"
        r = await peer.call("process/start", start("p", py(script), restart=policy))
        assert r["result"]["processId"] == "p"
        got = await notes_until_closed(peer, "p")
        methods = [m["method"] for m in got]
        assert methods == [
            "process/output", "process/restarted", "process/output", "process/restarted",
            "process/output", "process/exited", "process/closed",
        ]  # fmt: skip
        assert [m["params"]["seq"] for m in got] == list(range(1, 8))  # no gap, one stream
        pids = [int(base64.b64decode(m["params"]["chunk"]).split()[1]) for m in got[::2][:3]]
        restarted = [m["params"] for m in got if m["method"] == "process/restarted"]
        assert [(x["restarts"], x["exitCode"], x["signal"]) for x in restarted] == [
            (1, 3, None),
            (2, 3, None),
        ]
        assert [x["pid"] for x in restarted] == pids[1:] and len(set(pids)) == 3
        assert got[5]["params"]["exitCode"] == 3
        listed = await info(peer, "p")
        assert listed["restarts"] == 2 and listed["state"] == "closed"
        assert listed["restartPolicy"] == policy and listed["pid"] == pids[2]
        # A late subscriber is replayed the same stream, restarts included.
        late = RawPeer(peer.conn.service)
        await late.handshake()
        await late.call("process/subscribe", {"processId": "p", "afterSeq": 0})
        assert await notes_until_closed(late, "p") == got
        await late.close()
        read = (await peer.call("process/read", {"processId": "p"}))["result"]
        data = b"".join(base64.b64decode(c["chunk"]) for c in read["chunks"])
        assert data == b"".join(b"run %d" % pid for pid in pids)


async def test_on_failure_does_not_restart_a_success_and_never_policy_never_restarts(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/start", start("ok", ["true"], restart={"policy": "on-failure"}))
        await peer.call("process/start", start("no", ["false"], restart={"policy": "never"}))
        for pid, code in (("ok", 0), ("no", 1)):
            got = await notes_until_closed(peer, pid)
            assert [m["method"] for m in got] == ["process/exited", "process/closed"]
            assert got[0]["params"]["exitCode"] == code


async def test_always_then_terminate_stops_the_restarts(tmp_path):
    async with connected(tmp_path) as peer:
        policy = {"policy": "always", "delayMs": 10}
        await peer.call("process/start", start("a", ["sleep", "30"], restart=policy))
        await until_state(peer, "a", "running")
        r = await peer.call("process/terminate", {"processId": "a", "graceMs": 2000})
        assert r["result"] == {"running": True}
        got = await notes_until_closed(peer, "a")
        assert [m["method"] for m in got] == ["process/exited", "process/closed"]
        assert got[0]["params"]["signal"] == "SIGTERM"
        await asyncio.sleep(0.3)  # a restart would have come after 10 ms
        listed = await info(peer, "a")
        assert listed["restarts"] == 0 and listed["state"] == "closed"


async def test_terminate_or_kill_during_the_backoff_ends_it_with_the_last_exit(tmp_path):
    async with connected(tmp_path) as peer:
        policy = {"policy": "always", "delayMs": 60_000}
        for pid, how in (("t", "process/terminate"), ("k", "process/signal")):
            await peer.call("process/start", start(pid, ["sh", "-c", "exit 4"], restart=policy))
            waiting = await until_state(peer, pid, "restarting")
            assert waiting["exitCode"] == 4 and waiting["restartAt"] > waiting["exitedAt"]
            extra = {"signal": "kill"} if how == "process/signal" else {}
            r = await peer.call(how, {"processId": pid, **extra})
            assert r["result"] == ({"running": False} if how == "process/terminate" else {})
            got = await notes_until_closed(peer, pid, timeout=5)
            assert [m["method"] for m in got] == ["process/exited", "process/closed"]
            assert got[0]["params"]["exitCode"] == 4
            assert (await info(peer, pid))["restarts"] == 0


async def test_restart_delay_doubles(tmp_path):
    async with connected(tmp_path) as peer:
        policy = {"policy": "always", "maxRestarts": 3, "delayMs": 100}
        await peer.call("process/start", start("d", ["sh", "-c", "date +%s%N"], restart=policy))
        got = await notes_until_closed(peer, "d")
        runs = [int(base64.b64decode(m["params"]["chunk"])) / 1e9 for m in got[::2][:4]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
        assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and 5 > gaps[2] >= 0.4, gaps  # 100, 200, 400 ms


async def test_a_long_run_resets_the_delay(tmp_path, monkeypatch):
    from jupyter_exec.core import scheduler

    monkeypatch.setattr(scheduler, "RESET_AFTER_MS", 250)  # 60 s in earnest
    async with connected(tmp_path) as peer:
        policy = {"policy": "always", "maxRestarts": 3, "delayMs": 300}
        argv = ["sh", "-c", "date +%s%N; sleep 0.3"]
        await peer.call("process/start", start("long", argv, restart=policy))
        got = await notes_until_closed(peer, "long")
        runs = [int(base64.b64decode(m["params"]["chunk"])) / 1e9 for m in got[::2][:4]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
        # Each run lasted 0.3 s: the delay stays 300 ms (doubling would make 1.2 s last).
        assert all(0.6 <= gap < 1.1 for gap in gaps), gaps


async def test_each_run_has_its_own_timeout(tmp_path):
    async with connected(tmp_path) as peer:
        policy = {"policy": "on-failure", "maxRestarts": 1, "delayMs": 10}
        argv = ["sh", "-c", "echo run; exec sleep 30"]
        await peer.call("process/start", start("t", argv, restart=policy, timeoutMs=300))
        got = await notes_until_closed(peer, "t")
        assert [m["method"] for m in got] == [
            "process/output", "process/restarted", "process/output", "process/exited",
            "process/closed",
        ]  # fmt: skip
        assert got[1]["params"]["signal"] == "SIGTERM"
        assert got[3]["params"]["timedOut"] and got[3]["params"]["signal"] == "SIGTERM"


# -- queues ---------------------------------------------------------------------------


async def test_queue_parallel_one_runs_in_order_and_shows_the_waiting(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/list", {"watch": True})
        slow = py("import time; time.sleep(0.5)")
        for pid in ("A", "B", "C"):
            r = await peer.call(
                "process/start", start(pid, slow if pid == "A" else ["true"], queue="q")
            )
            assert "result" in r
        b = await info(peer, "B")
        assert b["state"] == "queued" and b["pid"] is None and b["queue"] == "q"
        queues = (await peer.call("queue/list"))["result"]
        assert queues == {"queues": [{"name": "q", "parallel": 1, "running": 1, "queued": 2}]}
        for pid in ("A", "B", "C"):
            await notes_until_closed(peer, pid)
        started = [
            (m["params"]["process"]["processId"], m["params"]["process"]["state"])
            for m in peer.seen
            if m["method"] == "process/started"
        ]
        # Each queued one is announced queued, then again when it starts, in order.
        assert started == [
            ("A", "running"), ("B", "queued"), ("C", "queued"), ("B", "running"), ("C", "running"),
        ]  # fmt: skip
        a, b = await info(peer, "A"), await info(peer, "B")
        assert b["startedAt"] >= a["exitedAt"]
        idle = (await peer.call("queue/list"))["result"]["queues"]
        assert idle == [{"name": "q", "parallel": 1, "running": 0, "queued": 0}]


async def test_queue_set_raises_the_limit_and_starts_the_waiting(tmp_path):
    async with connected(tmp_path) as peer:
        for pid in ("A", "B", "C"):
            await peer.call("process/start", start(pid, ["sleep", "30"], queue="gpu"))
        assert (await info(peer, "C"))["state"] == "queued"
        r = await peer.call("queue/set", {"name": "gpu", "parallel": 2})
        assert r["result"] == {"name": "gpu", "parallel": 2, "running": 2, "queued": 1}
        assert (await info(peer, "B"))["state"] == "running"
        assert (await info(peer, "C"))["state"] == "queued"
        # Terminating a queued process ends it never started; the others go on.
        assert (await peer.call("process/terminate", {"processId": "C"}))["result"] == {
            "running": False
        }
        got = await notes_until_closed(peer, "C")
        assert [m["method"] for m in got] == ["process/exited", "process/closed"]
        assert got[0]["params"]["exitCode"] is None
        c = await info(peer, "C")
        assert c["failure"] == "terminated before it started" and c["pid"] is None
        assert (await info(peer, "A"))["state"] == "running"


async def test_a_queued_start_is_not_refused_by_max_processes(tmp_path):
    async with connected(tmp_path, max_processes=1) as peer:
        await peer.call("process/start", start("A", ["sleep", "0.3"]))
        r = await peer.call("process/start", start("B", ["true"], queue="q"))
        assert "result" in r
        refused = await peer.call("process/start", start("C", ["true"]))
        assert refused["error"]["message"].startswith("too many processes")
        got = await notes_until_closed(peer, "B")
        assert got[-2]["params"]["exitCode"] == 0


# -- after ----------------------------------------------------------------------------


async def test_after_starts_once_its_dependency_succeeded(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/start", start("train", py("import time; time.sleep(0.4)")))
        await peer.call("process/start", start("eval", ["echo", "evaluated"], after=["train"]))
        waiting = await info(peer, "eval")
        assert waiting["state"] == "queued" and waiting["pid"] is None
        assert waiting["after"] == ["train"]
        got = await notes_until_closed(peer, "eval")
        assert base64.b64decode(got[0]["params"]["chunk"]) == b"evaluated\n"
        assert got[-2]["params"]["exitCode"] == 0
        train, done = await info(peer, "train"), await info(peer, "eval")
        assert done["startedAt"] >= train["exitedAt"]


async def test_after_a_failure_it_never_starts_and_says_which_dependency(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/start", start("ok", ["true"]))
        await peer.call("process/start", start("bad", py("import time; time.sleep(0.2); exit(3)")))
        marker = tmp_path / "ran"
        argv = ["touch", str(marker)]
        await peer.call("process/start", start("next", argv, after=["ok", "bad"]))
        got = await notes_until_closed(peer, "next")
        assert [m["method"] for m in got] == ["process/exited", "process/closed"]
        assert got[0]["params"]["exitCode"] is None
        failed = await info(peer, "next")
        assert failed["failure"] == "dependency bad failed: exit code 3"
        assert failed["pid"] is None and not marker.exists()
        # A dependency that already failed ends it too, as does a signal.
        await peer.call("process/start", start("later", argv, after=["bad"]))
        assert (await notes_until_closed(peer, "later"))[0]["params"]["exitCode"] is None
        await peer.call("process/start", start("killed", ["sleep", "30"]))
        await peer.call("process/start", start("then", argv, after=["killed"]))
        await peer.call("process/signal", {"processId": "killed", "signal": "kill"})
        await notes_until_closed(peer, "then")
        assert (await info(peer, "then"))["failure"] == (
            "dependency killed failed: killed by SIGKILL (exit code 137)"
        )
        assert not marker.exists()


async def test_waiting_processes_have_not_exited_for_readers_and_waiters(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/start", start("A", py("import time; time.sleep(0.3)")))
        await peer.call("process/start", start("B", ["echo", "b"], after=["A"]))
        read = (await peer.call("process/read", {"processId": "B"}))["result"]
        assert read["exited"] is False and read["closed"] is False
        write = {"processId": "B", "chunk": ""}
        assert (await peer.call("process/write", write))["result"] == {"status": "starting"}
        long_poll = await peer.call("process/read", {"processId": "B", "waitMs": 5000})
        assert base64.b64decode(long_poll["result"]["chunks"][0]["chunk"]) == b"b\n"
        waited = await peer.call("process/wait", {"processIds": ["B"], "timeoutMs": 5000})
        assert waited["result"]["processes"][0]["exitCode"] == 0


# -- bad input ---------------------------------------------------------------------------


async def test_bad_scheduling_input_is_refused_and_nothing_starts(tmp_path):
    async with connected(tmp_path) as peer:
        argv = py("import time; print('alive', flush=True); time.sleep(30)")
        await peer.call("process/start", start("keep", argv, queue="q"))
        bad = [
            ({"restart": {"policy": "sometimes"}}, "invalid restart.policy"),
            ({"restart": {"policy": "always", "delayMs": -1}}, "invalid restart.delayMs"),
            ({"restart": {"policy": "always", "maxRestarts": -1}}, "invalid restart.maxRestarts"),
            ({"restart": "always"}, "invalid restart"),
            ({"after": ["nobody"]}, "after names unknown process id 'nobody'"),
            ({"after": ["x"]}, "after names the process itself ('x')"),
            ({"after": "keep"}, "invalid after"),
            ({"queue": ""}, "invalid queue"),
        ]
        for extra, message in bad:
            r = await peer.call("process/start", start("x", ["true"], **extra))
            assert r["error"]["code"] == -32602, extra
            assert r["error"]["message"].startswith(message), r["error"]["message"]
        # A cycle would need `keep` started again after `x`: its id is in use.
        await peer.call("process/start", start("x", ["true"], after=["keep"]))
        again = await peer.call("process/start", start("keep", ["true"], after=["x"]))
        assert again["error"]["message"] == "process keep already exists"
        await peer.call("process/remove", {"processId": "x"})  # never started: ended
        for params in ({"name": "q", "parallel": 0}, {"name": "q"}, {"parallel": 2}):
            r = await peer.call("queue/set", params)
            assert r["error"]["code"] == -32602
        assert (await peer.call("queue/list", [1]))["error"]["code"] == -32602
        listed = (await peer.call("process/list", {}))["result"]["processes"]
        assert [p["processId"] for p in listed] == ["keep"] and listed[0]["state"] == "running"
        queues = (await peer.call("queue/list"))["result"]["queues"]
        assert queues == [{"name": "q", "parallel": 1, "running": 1, "queued": 0}]
        read = {"processId": "keep", "waitMs": 5000, "untilPattern": "alive\n"}
        assert (await peer.call("process/read", read))["result"]["matched"]


async def test_a_chain_ends_at_its_first_failure_and_a_vanished_program_never_starts(tmp_path):
    async with connected(tmp_path) as peer:
        await peer.call("process/start", start("A", py("import time; time.sleep(0.3); exit(3)")))
        await peer.call("process/start", start("B", ["true"], after=["A"]))
        await peer.call("process/start", start("C", ["true"], after=["B"]))
        await notes_until_closed(peer, "C")
        c = await info(peer, "C")
        assert c["failure"] == "dependency B failed: dependency A failed: exit code 3"
        # A program that is gone when its turn comes: it ends never started, saying why.
        script = tmp_path / "job.sh"
        script.write_text("#!/bin/sh\necho ran\n")
        script.chmod(0o755)
        await peer.call("process/start", start("slot", ["sleep", "0.3"], queue="one"))
        await peer.call("process/start", start("gone", [str(script)], queue="one"))
        script.unlink()
        got = await notes_until_closed(peer, "gone")
        assert [m["method"] for m in got] == ["process/exited", "process/closed"]
        gone = await info(peer, "gone")
        assert gone["exitCode"] is None and gone["failure"].startswith("cannot start")
        assert (await info(peer, "slot"))["exitCode"] == 0
