"""How fast `TerminalLog` turns output into what the handle, `%read` and the live view show.

    python bench/render.py [--megabytes 2.7] [--chunk 65536] [--repeat 3]

`ExecProcess.text`, `.tail()`, `_repr_html_`, `%read` (without `--raw`) and the
live view all feed a process's whole output through `TerminalLog`, so its speed
bounds theirs. Each kind of output below is fed whole and in `--chunk`-sized
pieces (as pages arrive), then rendered as text, ANSI and HTML; the table gives
MB of input per second (best of `--repeat`), every result checked against the
one-piece feed. No targets: the figures only compare versions on one machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from jupyter_exec.render.terminal import TerminalLog


def numbered(n: int, newline: str = "\n") -> str:
    return "".join(f"{i}{newline}" for i in range(n))


def coloured(n: int) -> str:
    """pytest-like: a coloured word on each line."""
    return "".join(f"test_{i} \x1b[32mPASSED\x1b[0m [{i % 100:3d}%]\n" for i in range(n))


def progress(n: int) -> str:
    """tqdm-like: a bar redrawn with `\\r` a hundred times per line."""
    bars = "".join(f"\r{p:3d}%|{'#' * (p // 10):<10}|" for p in range(100))
    return "".join(f"step {i}{bars}\n" for i in range(n // 100))


def hyperlinks(n: int) -> str:
    """`ls --hyperlink`-like: an OSC 8 link on each line, each string ended by ST."""
    return "".join(f"\x1b]8;;file:///tmp/f{i}\x1b\\f{i}\x1b]8;;\x1b\\\n" for i in range(n))


def unterminated_string(n: int) -> str:
    """`ESC ]` and no end (`cat` of a binary): one OSC string that every chunk extends."""
    return "shown\n\x1b]0;" + numbered(n)


KINDS: dict[str, Callable[[int], str]] = {
    "numbered lines (pipe)": numbered,
    "numbered lines (pty, \\r\\n)": lambda n: numbered(n, "\r\n"),
    "coloured lines (SGR)": coloured,
    "progress bars (\\r)": progress,
    "hyperlinks (OSC 8)": hyperlinks,
    "unterminated OSC": unterminated_string,
}


def sized(make: Callable[[int], str], megabytes: float) -> str:
    """`make(n)` with n scaled until it is about `megabytes` of UTF-8."""
    n, text = 1000, make(1000)
    for _ in range(8):  # lines get longer as n grows: a few steps from either side
        size = len(text.encode())
        if abs(size - megabytes * 1e6) < 0.02 * megabytes * 1e6:
            break
        n = max(100, int(n * megabytes * 1e6 / size))
        text = make(n)
    return text


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(text: str, chunk: int, repeat: int) -> dict[str, float]:
    """MB/s of input for each step; raises if chunked feeding changes the result."""
    megabytes = len(text.encode()) / 1e6

    def fed(size: int) -> TerminalLog:
        log = TerminalLog(max_lines=1_000_000)
        for start in range(0, len(text), size):
            log.feed(text[start : start + size])
        return log

    whole, pieces = fed(len(text) or 1), fed(chunk)
    for render in (TerminalLog.text, TerminalLog.ansi, TerminalLog.html):
        if render(whole) != render(pieces):
            raise AssertionError(f"{render.__name__}() differs when fed in {chunk}-char pieces")
    return {
        "feed whole": megabytes / best(repeat, lambda: fed(len(text) or 1)),
        f"feed {chunk}": megabytes / best(repeat, lambda: fed(chunk)),
        "text()": megabytes / best(repeat, whole.text),
        "ansi()": megabytes / best(repeat, whole.ansi),
        "html()": megabytes / best(repeat, whole.html),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--megabytes", type=float, default=2.7, help="size of each kind of output")
    p.add_argument("--chunk", type=int, default=65536, help="characters per feed() call")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args(argv)
    rows = []
    for name, make in KINDS.items():
        text = sized(make, a.megabytes)
        rows.append((name, len(text.encode()) / 1e6, measure(text, a.chunk, a.repeat)))
    steps = list(rows[0][2])
    width = max(len(name) for name, _, _ in rows)
    print(f"MB/s of input ({a.chunk}-char chunks; best of {a.repeat})")
    print(f"{'output':<{width}}  {'MB':>5}" + "".join(f"{s:>14}" for s in steps))
    for name, size, speeds in rows:
        print(f"{name:<{width}}  {size:5.1f}" + "".join(f"{speeds[s]:14.1f}" for s in steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
