"""daemon/persist.py: a registry's records on disk, read back by its successor.

Two registries in one event loop stand for a daemon and the next one: the
first starts processes with a `Persister` listening, the second recovers
what the first left in the same state and logs directories. The daemon-level
paths (a killed daemon, the holder, an upgrade) are in test_daemon.py,
test_holder.py and test_wheel_upgrade.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.client import ExecClient
from jupyter_exec.client.embedded import connect_service
from jupyter_exec.core.proctree import identify
from jupyter_exec.daemon.persist import FLUSH_SECONDS, LOST_FAILURE, Persister
from jupyter_exec.rpc.dispatch import ExecService
from tests.wire import embedded, make_service, pid_alive, py


@contextlib.asynccontextmanager
async def successor(tmp_path: Path) -> AsyncIterator[tuple[ExecService, ExecClient, int]]:
    """The next daemon's registry over `tmp_path`'s state: it and how many it recovered."""
    service = make_service(tmp_path, durable_logs=True)
    persister = Persister(service.registry, tmp_path / "procs")
    count = persister.recover(tmp_path / "logs", set())
    client = await connect_service(service)
    try:
        yield service, client, count
    finally:
        await client.close()
        persister.close()
        await service.aclose()


async def run_and_record(tmp_path: Path, starts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run each start to its end under a first registry, which leaves its state and
    logs in `tmp_path / "next"` (a copy: its own go with it); its records, by id."""
    async with embedded(tmp_path, durable_logs=True) as (service, client):
        persister = Persister(service.registry, tmp_path / "procs")
        for pid, params in starts.items():
            await client.start(pid, **params)
        for pid in starts:
            await client.wait(pid, 30)
        await asyncio.sleep(FLUSH_SECONDS * 4)  # each `closed` came, after its `exited`
        persister.close()  # what is pending is on disk
        for part in ("procs", "logs"):
            shutil.copytree(tmp_path / part, tmp_path / "next" / part)
    records = {}
    for path in (tmp_path / "next" / "procs").glob("*.json"):
        data = json.loads(path.read_text())
        records[data["processId"]] = data
    return records


async def test_a_finished_process_comes_back_closed_with_its_exit_output_and_seqs(
    tmp_path: Path,
) -> None:
    starts: dict[str, dict[str, Any]] = {
        "out": {"argv": py("print('line one'); print('line two'); raise SystemExit(3)")},
        "slow": {"argv": py("import time; time.sleep(30)"), "timeout_ms": 300, "label": "sleepy"},
    }
    records = await run_and_record(tmp_path, starts)
    tmp_path = tmp_path / "next"
    assert records["out"]["exit"]["exitCode"] == 3 and records["out"]["version"] == 2
    assert records["slow"]["exit"]["timedOut"] and records["slow"]["timeoutMs"] == 300
    async with successor(tmp_path) as (_, client, count):
        assert count == 2
        listed = {i.process_id: i for i in await client.list()}
        out, slow = listed["out"], listed["slow"]
        assert (out.state, out.exit_code, out.next_seq) == (
            "closed",
            3,
            4,
        )  # one chunk (a pipe: one write), exited, closed
        assert (slow.state, slow.timed_out, slow.timeout_ms, slow.label) == (
            "closed", True, 300, "sleepy",
        )  # fmt: skip
        read = await client.read("out")
        assert read.data.replace(b"\r", b"") == b"line one\nline two\n"
        assert read.chunks[0].seq == 1 and read.next_seq == out.next_seq - 2
        events = [e async for e in client.events("out")]  # a follower ends
        assert [type(e).__name__ for e in events][-2:] == ["ExitedEvent", "ClosedEvent"]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


def as_0_3_0(record: dict[str, Any]) -> dict[str, Any]:
    """The record as 0.3.0's `Persister.track` wrote it: these keys only, the log's name."""
    keys = (
        "processId", "argv", "cwd", "tty", "pipeStdin", "pid", "pidStartTime", "label",
        "lifetime", "startedAt", "sandbox", "origin",
    )  # fmt: skip
    old = {key: record[key] for key in keys}
    old["log"] = Path(record["log"]).name
    end = record["exit"]
    if end is not None:
        old["exit"] = {key: end[key] for key in ("exitCode", "signal", "exitedAt", "timedOut")}
        old["exit"]["limitExceeded"] = end["limitExceeded"]
    return old


async def test_records_0_3_0_wrote_are_read_finished_or_lost(tmp_path: Path) -> None:
    """An upgrade loses no process: 0.3.0's records (no version) list as before."""
    records = await run_and_record(tmp_path, {"old": {"argv": py("print('from 0.3.0')")}})
    tmp_path = tmp_path / "next"
    path = next((tmp_path / "procs").glob("*.json"))
    path.write_text(json.dumps(as_0_3_0(records["old"])))
    # A process 0.3.0 recorded as running, that nothing kept (the holder died too):
    # it is listed lost, and killed if it is still that very process.
    sleeper = await asyncio.create_subprocess_exec(*py("import time; time.sleep(60)"))
    try:
        ref = identify(sleeper.pid)
        assert ref is not None
        lost = {
            **as_0_3_0(records["old"]),
            "processId": "running",
            "pid": sleeper.pid,
            "pidStartTime": ref.start,
            "log": "feed.log",
        }
        del lost["exit"]
        (tmp_path / "procs" / "feed.json").write_text(json.dumps(lost))
        (tmp_path / "logs" / "feed.log").write_bytes(b"")
        async with successor(tmp_path) as (_, client, count):
            assert count == 2
            listed = {i.process_id: i for i in await client.list()}
            assert (listed["old"].state, listed["old"].exit_code) == ("closed", 0)
            assert (await client.read("old")).data.replace(b"\r", b"") == b"from 0.3.0\n"
            assert (listed["running"].state, listed["running"].failure) == ("lost", LOST_FAILURE)
            assert await asyncio.wait_for(sleeper.wait(), 10) == -9
    finally:
        if sleeper.returncode is None:
            sleeper.kill()
            await sleeper.wait()
    assert not pid_alive(sleeper.pid)


async def test_an_unreadable_record_is_removed_and_harms_no_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run_and_record(tmp_path, {"good": {"argv": py("print('kept')")}})
    tmp_path = tmp_path / "next"
    procs, logs = tmp_path / "procs", tmp_path / "logs"
    bad = {
        "garbage": "{not json",
        "nolog": json.dumps({"processId": "x", "argv": [], "version": 2}),
        "badlife": json.dumps({"processId": "y", "argv": [], "cwd": "/", "tty": False,
                               "lifetime": "forever", "startedAt": 1, "log": "y.log"}),
    }  # fmt: skip
    for name, text in bad.items():
        (procs / f"{name}.json").write_text(text)
    (logs / "orphan.log").write_bytes(b"nobody lists this")
    with caplog.at_level(logging.WARNING, "jupyter_exec.daemon.persist"):
        async with successor(tmp_path) as (_, client, count):
            assert count == 1
            assert [i.process_id for i in await client.list()] == ["good"]
            assert (await client.read("good")).data.replace(b"\r", b"") == b"kept\n"
    assert sum("unreadable process record" in r.message for r in caplog.records) == 3
    assert not any((procs / f"{name}.json").exists() for name in bad)
    assert not (logs / "orphan.log").exists()


async def test_a_removed_process_takes_its_record_with_it(tmp_path: Path) -> None:
    await run_and_record(tmp_path, {"gone": {"argv": py("pass")}})
    tmp_path = tmp_path / "next"
    async with successor(tmp_path) as (service, _, count):
        assert count == 1
        assert any((tmp_path / "procs").glob("*.json"))
        await service.registry.remove("gone")
    assert not any((tmp_path / "procs").glob("*.json"))  # its persister wrote what was pending
