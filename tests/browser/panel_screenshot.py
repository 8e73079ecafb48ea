"""Take the README's docs/panel.png from a real run: a real Lab, real processes.

    .venv/bin/python -m tests.browser.panel_screenshot docs/panel.png

A training-like job (busy, a few hundred MB) in a one-slot "gpu" queue with
the next sweep queued behind it and an evaluation to run after it, a worker
that restarts on failure, an http.server with its port link, an agent's
checks (one passes, one fails) and a command-line loop, started through the
REST mirror with their origins; then the panel and the job's output view are
photographed. Runs in a temporary directory with its
own runtime dir, and stops everything it started.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path

from tests.browser.lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    launch_lab,
    open_lab,
    open_panel,
    row,
    wait_for_text,
    wait_until,
)
from tests.daemon.harness import daemons_stopped
from tests.service import free_port, stop_process

TRAIN = """\
import time, random
weights = bytearray(300 * 1000 * 1000)  # the model, resident
for epoch in range(1, 10_000):
    loss = 2.0 / epoch + random.random() * 0.01
    deadline = time.time() + 1
    while time.time() < deadline:
        sum(range(20_000))
    print(f"epoch {epoch:4d}  loss {loss:.4f}  lr 3e-4", flush=True)
"""

NOTEBOOK = {"kind": "notebook", "name": "train.ipynb"}
AGENT = {"kind": "agent", "name": "codex"}
CLI = {"kind": "cli", "name": "jupyter exec"}


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="jupyter-exec-demo-"))
    with daemons_stopped(base / "runtime"):
        lab, log = launch_lab(base, free_port(), secrets.token_hex(16))
        try:
            (lab.root / "train.py").write_text(TRAIN)
            (lab.root / "index.html").write_text("<h1>results</h1>")
            flaky = "echo serving; sleep 2; exit 1"
            starts = [
                ("checks", ["python3", "-m", "compileall", "-q", "."], "compile check", AGENT),
                ("smoke", ["python3", "-c", "import torchvision"], "smoke test", AGENT),
                ("sync", ["sh", "-c", "while sleep 5; do date; done"], "sync loop", CLI),
                ("worker", ["sh", "-c", flaky], "worker", CLI),
                (
                    "web",
                    ["python3", "-m", "http.server", str(free_port()), "--bind", "127.0.0.1"],
                    "results server",
                    NOTEBOOK,
                ),
                ("train", ["python3", "train.py"], "train", NOTEBOOK),
            ]
            managed: dict[str, dict[str, object]] = {
                "worker": {"restart": {"policy": "on-failure", "delayMs": 200}},
                "train": {"queue": "gpu"},
            }
            for pid, argv, label, origin in starts:
                params = {"processId": pid, "argv": argv, "label": label, "origin": origin}
                lab.start({**params, **managed.get(pid, {})})
                time.sleep(0.5)
            for pid, label, extra in (
                ("sweep-2", "train lr=1e-4", {"queue": "gpu"}),
                ("eval", "evaluate", {"after": ["train"]}),
            ):
                argv = (
                    ["python3", "train.py"] if pid == "sweep-2" else ["python3", "-c", "print(1)"]
                )
                lab.start(
                    {"processId": pid, "argv": argv, "label": label, "origin": NOTEBOOK, **extra}
                )
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(60000)
                open_lab(page, lab)
                open_panel(page)
                # A wider sidebar, so each row's usage fits on one line.
                handle = page.locator(".jp-LabShell .lm-SplitPanel-handle:visible").first
                box = handle.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + 2, box["y"] + 200)
                page.mouse.down()
                page.mouse.move(box["x"] + 110, box["y"] + 200, steps=5)
                page.mouse.up()
                row(page, "web").locator("a.jp-ExecPort").wait_for()
                wait_until(
                    lambda: "MB" in row(page, "train").locator(".jp-ExecPanel-usage").inner_text(),
                    "train's usage",
                    60,
                )
                row(page, "worker").locator(".jp-ExecPanel-restarts").filter(
                    has_text="restarts"
                ).wait_for(timeout=60000)
                row(page, "train").locator("button.jp-ExecPanel-row").click()
                wait_for_text(page, r"epoch\s+6\b", timeout=60)
                page.mouse.move(5, 600)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            lab.remove_all()
            stop_process(lab.proc, 20)
            log.close()
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/panel.png"))
