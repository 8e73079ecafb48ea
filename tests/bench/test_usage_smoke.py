"""bench/usage.py still runs and prints its figures (no targets here: they live in bench/)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

USAGE = Path(__file__).resolve().parents[2] / "bench" / "usage.py"


def test_usage_bench_prints_cpu_and_rss_per_child() -> None:
    argv = [sys.executable, str(USAGE), "--peer", "none", "--seconds", "1", "--settle", "0.5"]
    done = subprocess.run(
        [*argv, "--idle", "3", "--busy", "1"], capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("jupyter-exec"))
    found = re.fullmatch(r"jupyter-exec \(ws\)\s+([\d.]+)\s+(-?\d+)", row)
    assert found is not None and float(found[1]) >= 0, row
