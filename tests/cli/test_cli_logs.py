"""`jupyter exec logs` (cli_logs.py) through subprocesses against a real standalone
server: what it says where a retention limit dropped output. test_cli.py runs `logs`,
`-f` and `--tail` on output that is all there, and through a kill of the server
(tests/daemon/test_cli_daemon.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .test_cli import CLI, PY, serving, wait_running_state

pytestmark = pytest.mark.slow


def test_logs_says_on_stderr_where_a_retention_limit_dropped_output(tmp_path: Path) -> None:
    """SPEC 6: past `log_bytes_per_process` the oldest output goes. `logs` (and `-f`,
    `--tail` past it) write the process's bytes to stdout exactly, and where output is
    missing a line of their own on stderr, as the REST download says it in its body."""
    lines = 100_000  # about 590 KB of output, nine times the cap
    with serving(tmp_path, "--log-bytes", str(64 << 10)) as server:
        script = f"for i in range({lines}): print(i)"
        assert server.run("run", "-d", "--name", "long", "--", PY, "-c", script).returncode == 0
        assert server.run("run", "-d", "--name", "short", "--", "seq", "3").returncode == 0
        wait_running_state(server, "long", "closed", timeout=60)
        wait_running_state(server, "short", "closed")
        infos = json.loads(server.run("ps", "--json").stdout)
        first_seq = next(i for i in infos if i["processId"] == "long")["firstSeq"]
        assert first_seq > 1, infos
        gap = f"[jupyter-exec: output seqs 1-{first_seq - 1} dropped by a retention limit]\n"

        logs = server.run("logs", "long")
        assert (logs.returncode, logs.stderr) == (0, gap)
        kept = logs.stdout  # the bytes kept, nothing added
        assert 0 < len(kept) <= 64 << 10
        # Whole chunks were dropped, not whole lines: the first line kept may be a line's end.
        after_cut = kept.split("\n", 1)[1]
        first_line = int(after_cut.split("\n", 1)[0])
        assert after_cut == "".join(f"{i}\n" for i in range(first_line, lines))
        for also in (["-f"], ["--tail", str(lines)], ["-f", "--tail", str(lines)]):
            again = server.run("logs", *also, "long")
            assert (again.returncode, again.stdout, again.stderr) == (0, kept, gap), also
        # One file for both (a terminal, `2>&1`): the line stands where the output is missing.
        merged = subprocess.run(
            [CLI, "--url", server.url, "logs", "long"], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=server.env, timeout=60,
        )  # fmt: skip
        assert (merged.returncode, merged.stdout) == (0, gap + kept)
        # A cursor past the gap, or a tail within what is kept: nothing was skipped.
        past = server.run("logs", "--after", str(first_seq - 1), "long")
        assert (past.stdout, past.stderr) == (kept, "")
        assert server.run("logs", "--tail", "2", "long").stderr == ""
        # Nothing dropped: nothing added.
        for also in ([], ["-f"]):
            short = server.run("logs", *also, "short")
            assert (short.returncode, short.stdout, short.stderr) == (0, "1\n2\n3\n", ""), also
