"""bench/log_write.py still runs every way of writing the log (figures live in docs/benchmarks.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "log_write.py"


def test_log_write_prints_a_figure_per_way(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--dir", str(tmp_path), "--megabytes", "4"]
    done = subprocess.run([*argv, "--rounds", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = re.findall(r"(spliced, a record per chunk|spliced, a record per run|read \+ pwritev) "
                         r"(\d+\.\d+) s/GB", done.stdout)  # fmt: skip
    assert [way for way, _ in figures] == [
        "spliced, a record per chunk",
        "spliced, a record per run",
        "read + pwritev",
    ], done.stdout
    assert all(float(value) > 0 for _, value in figures)
    assert list(tmp_path.iterdir()) == []  # its log is gone
