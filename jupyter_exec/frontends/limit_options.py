"""The limit options of ``jupyter exec run`` and ``%exec``: their text as ``process/start`` params.

``--time-limit SECONDS`` becomes ``timeoutMs`` (terminated as by ``process/terminate``
when it passes), ``--memory-limit SIZE`` (``512M``, ``2G``; bytes without a unit)
``limits.memoryBytes`` and ``--cpu-limit SECONDS`` ``limits.cpuSeconds``
(docs/protocol.md, ``process/start``). ``--sandbox MODE[:network-off]``
becomes ``sandbox`` (docs/sandbox.md). Plain standard library, so the CLI
stays quick to start.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..wire.sandbox import shorthand

__all__ = ["add_limit_options", "parse_size", "start_limits"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``512M`` -> 536870912, ``2g`` -> 2147483648, ``1048576`` -> 1048576."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"memory limit {text!r} is not a size like 512M or 2G")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 1 << 20:
        raise ValueError(f"memory limit {text!r} is below the minimum of 1M")
    return size


def start_limits(
    time_limit: float | None,
    memory_limit: str | None,
    cpu_limit: int | None,
    sandbox: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``ExecClient.start``: ``timeout_ms``, ``limits``, ``sandbox``."""
    options: dict[str, Any] = {}
    if sandbox is not None:
        options["sandbox"] = shorthand(sandbox)
    if time_limit is not None:
        if not time_limit > 0:
            raise ValueError(f"time limit {time_limit} must be more than 0 seconds")
        options["timeout_ms"] = max(1, round(time_limit * 1000))
    limits: dict[str, int] = {}
    if memory_limit is not None:
        limits["memoryBytes"] = parse_size(memory_limit)
    if cpu_limit is not None:
        if cpu_limit < 1:
            raise ValueError(f"CPU limit {cpu_limit} must be at least 1 second")
        limits["cpuSeconds"] = cpu_limit
    if limits:
        options["limits"] = limits
    return options


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """``--time-limit``, ``--memory-limit``, ``--cpu-limit``, ``--sandbox`` on a CLI command."""
    parser.add_argument("--time-limit", type=float, metavar="S", help="terminate after S seconds")
    parser.add_argument("--memory-limit", metavar="SIZE", help="address space, e.g. 512M, 2G")
    parser.add_argument("--cpu-limit", type=int, metavar="S", help="CPU seconds, then SIGXCPU")
    parser.add_argument("--sandbox", metavar="MODE", help="read-only|workspace-write[:network-off]")
