"""frontends/shared.py: what the CLI and the magics share, against a real embedded registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_exec.frontends.shared import (
    Escalation,
    child_environment,
    parse_env,
    signal_name,
    start_process,
)
from jupyter_exec.wire.errors import InvalidRequestError, ProcessExistsError

from ..service import embedded


@pytest.mark.parametrize(
    ("given", "wire"),
    [("SIGINT", "interrupt"), ("int", "interrupt"), ("2", "interrupt"), ("interrupt", "interrupt"),
     ("TERM", "terminate"), (" sigusr1 ", "user1"), ("cont", "continue"), ("9", "kill"),
     ("HUP", "hangup")],
)  # fmt: skip
def test_signal_names(given: str, wire: str) -> None:
    assert signal_name(given) == wire


@pytest.mark.parametrize("bad", ["BOGUS", "", "99", "sig"])
def test_unknown_signal_names_list_the_accepted_ones(bad: str) -> None:
    with pytest.raises(ValueError, match=r"unknown signal .*; use one of interrupt, terminate"):
        signal_name(bad)


def test_env_pairs() -> None:
    assert parse_env(None) == {}
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("nope", "=1"):
        with pytest.raises(ValueError, match="--env expects KEY=VALUE"):
            parse_env([bad])


def test_child_environment_drops_kernel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    env = child_environment({"X": "1"})
    assert "JPY_PARENT_PID" not in env and "MPLBACKEND" not in env
    assert env["PYTHONUNBUFFERED"] == "1" and env["X"] == "1"
    assert env["PATH"] == os.environ["PATH"]
    assert child_environment({"PYTHONUNBUFFERED": "0"})["PYTHONUNBUFFERED"] == "0"


def test_escalation_interrupts_then_terminates_then_leaves() -> None:
    escalation = Escalation("train")
    steps = [escalation.press() for _ in range(4)]
    assert steps == ["interrupt", "terminate", "leave", "leave"]
    assert "SIGINT to train" in escalation.notice("interrupt")
    assert "terminating train" in escalation.notice("terminate")


async def test_start_process_picks_another_id_when_one_is_taken_meanwhile(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as (_service, client):
        await client.start("job-1", ["sleep", "30"])
        offered: list[set[str]] = []

        def stale_pick(taken: set[str]) -> str:
            offered.append(taken)
            return "job-1" if len(offered) == 1 else "job-2"  # as if another client won

        got = await start_process(client, ["true"], name=None, pick_id=stale_pick)
        assert got == "job-2" and len(offered) == 2
        states = {i.process_id: i.state for i in await client.list()}
        assert states["job-1"] == "running"  # the other client's process is untouched
        with pytest.raises(ProcessExistsError):  # a name the user gave is never replaced
            await start_process(client, ["true"], name="job-1", pick_id=stale_pick)
        with pytest.raises(InvalidRequestError, match="could not pick a free process id"):
            await start_process(client, ["true"], name=None, pick_id=lambda taken: "job-1")
        assert {i.process_id for i in await client.list()} == {"job-1", "job-2"}
        await client.terminate("job-1", 500)
