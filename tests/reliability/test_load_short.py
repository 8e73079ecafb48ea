"""The load harness (bench/load.py) in a short form: 200 processes, 50 clients.

Every byte of every process's output must be readable afterwards (checked
against each child's own SHA-256), no request may fail, and memory and
descriptors stay within generous bounds. Speed (request rate, latency, child
write stalls) is not asserted here, as CI machines are shared: `bench/load.py`
prints it against its targets (figures from a quiet machine: docs/reliability.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def _load_module():
    spec = importlib.util.spec_from_file_location("exec_bench_load", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)
async def test_200_processes_50_clients_nothing_lost(tmp_path):
    load = _load_module()
    r = await load.run_load(processes=200, clients=50, seconds=6, rate=100, workdir=tmp_path)
    print("\n" + load.render(r))
    assert r["verified"] == 200 and not r["mismatches"]
    assert r["notClosed"] == 0
    assert r["errorCount"] == 0, r["errors"]
    assert {"process/read", "process/write"} <= set(r["byMethod"])  # the clients really ran
    assert r["peakRssMiB"] < 400
    # ~5 per process (stdout, stderr, stdin, pidfd, log) plus sockets; no leak.
    assert r["peakFds"] < 200 * 6 + 200
