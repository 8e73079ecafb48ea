"""`--restart`, `--max-restarts`, `--restart-delay`, `--queue`, `--after` as SPEC 11 params:
what `jupyter exec run` and `%exec` send, and the sentence each bad line gets."""

from __future__ import annotations

import re

import pytest

from jupyter_exec.frontends.cli import build_parser
from jupyter_exec.frontends.schedule_options import check_queue_name, schedule_params


def test_nothing_given_sends_nothing() -> None:
    """A start without these options stays a plain Codex-shaped `process/start`."""
    assert schedule_params(None, None, None, None, None) == {}
    assert schedule_params(None, None, None, None, []) == {}


def test_each_option_becomes_its_param() -> None:
    assert schedule_params("on-failure", 2, 50, "gpu", ["a", "b", "a"]) == {
        "restart": {"policy": "on-failure", "maxRestarts": 2, "delayMs": 50},
        "queue": "gpu",
        "after": ["a", "b"],  # each once, in the order given
    }
    # Defaults are the server's (SPEC 11: 10 restarts, 1000 ms): not sent when not given.
    assert schedule_params("always", None, None, None, None) == {"restart": {"policy": "always"}}
    assert schedule_params("never", 0, 0, None, None)["restart"] == {
        "policy": "never", "maxRestarts": 0, "delayMs": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sometimes", None, None, None, None), "unknown restart policy 'sometimes'; use one of"),
        (("", None, None, None, None), "unknown restart policy ''"),
        ((None, 3, None, None, None), "--max-restarts needs --restart on-failure or"),
        ((None, None, 100, None, None), "--restart-delay needs --restart"),
        (("always", -1, None, None, None), "--max-restarts -1 must be 0 to 1000000"),
        (("always", None, -5, None, None), "--restart-delay -5 must be 0 to 60000 milliseconds"),
        (("always", None, 60_001, None, None), "--restart-delay 60001 must be 0 to 60000"),
        ((None, None, None, "", None), "a queue name must not be empty"),
        ((None, None, None, "  ", None), "a queue name must not be empty"),
        ((None, None, None, "q" * 129, None), "longer than 128 characters"),
        ((None, None, None, None, ["a", ""]), "--after needs a process id"),
    ],
)
def test_bad_options_say_which_and_why(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        schedule_params(*args)  # type: ignore[arg-type]


def test_check_queue_name_passes_a_good_one() -> None:
    assert check_queue_name("gpu-0") == "gpu-0"
    assert check_queue_name("q" * 128) == "q" * 128


def test_the_run_and_queue_command_lines() -> None:
    parser = build_parser()
    run = parser.parse_args(
        ["run", "--restart", "on-failure", "--max-restarts", "3", "--restart-delay", "200",
         "--queue", "gpu", "--after", "a", "--after", "b", "--", "python", "train.py"]
    )  # fmt: skip
    assert (run.restart, run.max_restarts, run.restart_delay) == ("on-failure", 3, 200)
    assert (run.queue, run.after, run.argv) == ("gpu", ["a", "b"], ["--", "python", "train.py"])
    # `--after` after the command belongs to the command.
    assert parser.parse_args(["run", "--", "tool", "--after", "x"]).after is None
    listing = parser.parse_args(["queue"])
    assert (listing.command, listing.name, listing.parallel) == ("queue", None, None)
    setting = parser.parse_args(["queue", "gpu", "--parallel", "2", "--json"])
    assert (setting.name, setting.parallel, setting.json) == ("gpu", 2, True)
