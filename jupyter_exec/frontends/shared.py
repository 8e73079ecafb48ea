"""What the two user-facing fronts share: the CLI (``jupyter exec``) and the magics.

Both accept the same signal names and ``KEY=VALUE`` variables, give a process
the same environment, pick a free process id the same way when none is given,
and escalate Ctrl-C the same way while following a process. Kept here once so
that the two cannot drift apart. No IPython, no server code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..wire.errors import InvalidRequestError, ProcessExistsError
from ..wire.models import SIGNALS

if TYPE_CHECKING:
    from ..client.exec_client import ExecClient

__all__ = [
    "Escalation",
    "child_environment",
    "parse_env",
    "signal_name",
    "start_process",
]

#: Variables that describe a Jupyter kernel, not the program being started.
KERNEL_ONLY_ENV = (
    "JPY_PARENT_PID",
    "JPY_SESSION_NAME",
    "JPY_INTERRUPT_EVENT",
    "PYDEVD_USE_FRAME_EVAL",
    "PYDEVD_IPYTHON_COMPATIBLE_DEBUGGING",
)
#: How many ids to try when other clients keep taking the one just picked.
ID_ATTEMPTS = 5

_SIGNAL_ALIASES = {
    "int": "interrupt", "term": "terminate", "hup": "hangup", "usr1": "user1",
    "usr2": "user2", "cont": "continue",
}  # fmt: skip


def signal_name(name: str) -> str:
    """``SIGINT``, ``int``, ``2``, ``interrupt`` -> the wire name ``interrupt`` (SPEC 4).

    Raises ``ValueError`` naming the accepted names.
    """
    key = name.strip().lower()
    if key.isdigit():
        for wire, sig in SIGNALS.items():
            if int(sig) == int(key):
                return wire
    key = key.removeprefix("sig")
    key = _SIGNAL_ALIASES.get(key, key)
    if key in SIGNALS:
        return key
    raise ValueError(f"unknown signal {name!r}; use one of {', '.join(SIGNALS)}")


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` options as a dict; ``ValueError`` for a pair without ``=``."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment, as a shell child would see it, plus ``overrides``.

    A kernel's own variables are left out (they describe the kernel, and the
    inline matplotlib backend exists only inside one); ``PYTHONUNBUFFERED=1``
    is added unless set, so Python programs show output live, not in 8 KiB blocks.
    """
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_ONLY_ENV}
    if env.get("MPLBACKEND", "").startswith("module://matplotlib_inline"):
        del env["MPLBACKEND"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(overrides)
    return env


async def start_process(
    client: ExecClient,
    argv: list[str],
    *,
    name: str | None,
    pick_id: Callable[[set[str]], str],
    **options: Any,
) -> str:
    """`process/start` under ``name``, or under ``pick_id(ids taken now)``; the id used.

    Another client may take a picked id between the list and the start: the
    server then answers :class:`ProcessExistsError` and another id is picked.
    A ``name`` given by the user is never replaced (the error propagates).
    """
    if name is not None:
        await client.start(name, argv, **options)
        return name
    for _attempt in range(ID_ATTEMPTS):
        process_id = pick_id({info.process_id for info in await client.list()})
        try:
            await client.start(process_id, argv, **options)
        except ProcessExistsError:
            continue
        return process_id
    raise InvalidRequestError("could not pick a free process id; give one with --name")


Step = Literal["interrupt", "terminate", "leave"]


class Escalation:
    """Ctrl-C while a front follows a process: the 1st interrupts the process, the
    2nd terminates it, the 3rd leaves (the process keeps whatever state it has).

    The front performs the step (sync or async, as it can) and shows ``notice``.
    """

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        self.count = 0

    def press(self) -> Step:
        self.count += 1
        if self.count == 1:
            return "interrupt"
        return "terminate" if self.count == 2 else "leave"

    def notice(self, step: Step) -> str:
        """What the front says once it has performed ``interrupt`` or ``terminate``."""
        if step == "interrupt":
            return f"[sent SIGINT to {self.process_id}; interrupt again to terminate it]"
        return f"[terminating {self.process_id}; interrupt again to stop waiting]"
