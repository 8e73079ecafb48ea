"""bench/credential_proxy.py still runs and prints its figures (they live in docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "credential_proxy.py"


def test_prints_tunnelled_brokered_and_the_ratio(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--requests", "20", "--megabytes", "2", "--rounds", "1"]
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path)}  # its CA bundle goes there
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines()[1:])
    number = r"\s*[\d.]+ ms\s+[\d.]+ ms\s+\d+"
    assert re.fullmatch(number, rows["tunnelled"]) and re.fullmatch(number, rows["brokered"])
    assert re.fullmatch(r"\s*[\d.]+x\s+[\d.]+x\s+[\d.]+x", rows["ratio"]), done.stdout
    assert done.stderr == "", done.stderr[-3000:]
