"""CLI start-up: `jupyter-exec ps` against a running server, against a bare interpreter.

    python bench/cli_startup.py --runs 21 [--importtime]

Starts `jupyter-exec serve` (loopback, a temporary runtime directory, so
discovery finds it as a user's shell would) and times, alternately, N runs of

- bare: ``python -c "import asyncio, json"`` (what any asyncio CLI pays), and
- ps: the installed ``jupyter-exec ps`` (console script, discovery, websocket
  handshake, ``initialize``, ``process/list``, the table),

then prints both medians and their ratio (target: ps at most about 2x bare).
``--importtime`` adds the largest cumulative imports of one ``ps`` run
(``python -X importtime``). Wall-clock figures for this machine only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def import_summary(env: dict[str, str], top: int) -> str:
    """The ``top`` largest cumulative imports of one ``ps`` run, in ms."""
    code = "import sys; from jupyter_exec.frontends.cli import main; sys.exit(main(['ps']))"
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=env, capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return "\n".join(f"  {us / 1000:7.1f} ms  {name}" for us, name in rows[:top])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each (default 21)")
    parser.add_argument("--importtime", action="store_true", help="show the largest imports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runtime:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": runtime}
        env.pop("JUPYTER_EXEC_URL", None)
        # An installed package has its bytecode compiled; let the warm-up run write it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        server = subprocess.Popen(
            [str(BIN / "jupyter-exec"), "serve", "--listen", "ws://127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            server.stdout.readline()  # its URL: it is listening and its record is written
            bare_argv = [sys.executable, "-c", "import asyncio, json"]
            ps_argv = [str(BIN / "jupyter-exec"), "ps"]
            timed(ps_argv, env)  # warm the file cache once
            bare, ps = [], []
            for _ in range(args.runs):
                bare.append(timed(bare_argv, env))
                ps.append(timed(ps_argv, env))
            summary = import_summary(env, 15) if args.importtime else ""
        finally:
            server.terminate()
            server.wait(15)
    b, p = statistics.median(bare), statistics.median(ps)
    print(f"bare python -c 'import asyncio, json': {b * 1000:6.1f} ms (median of {args.runs})")
    print(f"jupyter-exec ps (running server):     {p * 1000:6.1f} ms (median of {args.runs})")
    print(f"ratio ps / bare: {p / b:.2f}x (target: at most about 2x)")
    if summary:
        print("largest cumulative imports of one ps run:\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
