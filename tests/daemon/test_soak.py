"""bench/soak.py, short: SIGKILLs of the daemon and the server lose no process and no byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_soak_loses_nothing() -> None:
    argv = [sys.executable, str(SOAK), "--processes", "12", "--clients", "4", "--kills", "3"]
    argv += ["--scheduled", "9"]  # SPEC 11: restarting, queued, after another
    done = subprocess.run(argv, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "soak: ok"
    assert any("3 daemon SIGKILLs, 3 server SIGKILLs" in line for line in lines), done.stdout
    assert any("9 scheduled processes" in line for line in lines), done.stdout
