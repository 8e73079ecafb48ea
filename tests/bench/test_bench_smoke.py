"""bench/run.py still runs and prints its table (no timing assertions: targets live in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


# Inside Jupyter the figures count the exec daemon too (it does the work; the server relays).
@pytest.mark.parametrize("transport", ["stdio", "jupyter"])
def test_bench_quick_prints_the_table(transport: str) -> None:
    argv = [sys.executable, str(RUN), "--quick", "--peer", "none", "--transport", transport]
    argv += ["--spawns", "5", "--megabytes", "2", "--echoes", "3", "--children", "5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("| figure") and "jupyter-exec" in line for line in lines), (
        done.stdout
    )
    labels = ("spawn -> closed", "output via notifications", "CPU per GB", "tty echo", "RSS added")
    for label in labels:
        row = next(line for line in lines if label in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == transport and float(cells[2]) >= 0, row
    delivered = next(line for line in lines if "delivered as notifications" in line)
    assert "| 100 " in delivered, delivered  # SPEC 5: every byte as a notification
    assert "bytes)" not in done.stderr, done.stderr
