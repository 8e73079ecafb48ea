"""The panel across a `kill -9` of JupyterLab and its restart: same view, no lost line."""

from __future__ import annotations

import re
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab import launch_lab, open_panel, shot, view, wait_for_text
from tests.daemon.harness import daemons_stopped
from tests.service import free_port, stop_process

pytestmark = pytest.mark.slow

LINES = 90


@pytest.mark.timeout(180)
def test_the_panel_continues_through_a_server_restart(browser: Any, tmp_path: Path) -> None:
    port, token = free_port(), secrets.token_hex(16)
    with daemons_stopped(tmp_path / "runtime"):
        lab, log = launch_lab(tmp_path, port, token)
        # Tall enough that the terminal shows every line without scrolling.
        context = browser.new_context(viewport={"width": 1400, "height": 2400})
        page = context.new_page()
        page.set_default_timeout(20000)
        try:
            page.goto(f"{lab.url}lab?token={token}")
            page.locator("#jupyterlab-splash").wait_for(state="detached")
            script = f"for i in $(seq 1 {LINES}); do echo n-$i; sleep 0.1; done"
            lab.start({"processId": "count", "argv": ["sh", "-c", script]})
            open_panel(page).locator('.jp-ExecPanel-item[data-process-id="count"] button').click()
            wait_for_text(page, r"n-5\b")
            lab.proc.send_signal(signal.SIGKILL)
            lab.proc.wait(30)
            banner = view(page).locator(".jp-ExecBanner")
            banner.filter(has_text="Disconnected").wait_for()
            shot(page, "restart-disconnected")
            time.sleep(2)
            lab, log2 = launch_lab(tmp_path, port, token)
            log2.close()
            banner.wait_for(state="hidden", timeout=60000)
            text = wait_for_text(page, r"\[process exited 0\]", timeout=60)
            shot(page, "restart-resumed")
            for i in range(1, LINES + 1):
                assert len(re.findall(rf"^n-{i}$", text, re.M)) == 1, (i, text)
        finally:
            context.close()
            stop_process(lab.proc, 20)
            log.close()
