"""bench/cli_startup.py runs and prints both medians and the ratio (no timing assertions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cli_startup.py"


def test_cli_startup_prints_the_ratio() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "2", "--importtime"],
        capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^ratio ps / bare: \d+\.\d\dx", done.stdout, re.M), done.stdout
    assert "jupyter_exec.frontends.cli" in done.stdout  # the import summary names our modules
