"""A real `jupyter lab` and the page helpers every browser test uses.

One `jupyter lab` serves the whole session (conftest.py's `lab` fixture):
bound to 127.0.0.1, token auth, its own config/data/runtime dirs so the
user's settings and workspaces stay out, and `expose_app_in_browser` so a
test can ask the page what a view's model received. Playwright drives
/usr/bin/chromium headless. Screenshots land in `test-artifacts/` for a human
to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.service import stop_process

CHROMIUM = os.environ.get("JUPYTER_EXEC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PANEL = "#jupyter-exec-processes"


def missing_requirements() -> list[str]:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the `playwright` Python package (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    return missing


def http(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, bytes]:
    """One authenticated request; (status, body), also for error statuses."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Lab:
    def __init__(self, url: str, token: str, root: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.token, self.root, self.proc = url, token, root, proc

    def api(self, path: str) -> Any:
        status, body = http(self.url + path, self.token)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def processes(self) -> list[dict[str, Any]]:
        return list(self.api("api/exec/processes"))

    def start(self, params: dict[str, Any]) -> dict[str, Any]:
        """`POST api/exec/processes` (SPEC 8): the process as the server lists it."""
        status, body = http(self.url + "api/exec/processes", self.token, "POST", params)
        assert status == 201, (status, body[:500])
        return dict(json.loads(body))

    def remove(self, process_id: str) -> None:
        """`DELETE api/exec/processes/ID`: terminate if running, forget it."""
        status, body = http(f"{self.url}api/exec/processes/{process_id}", self.token, "DELETE")
        assert status in (204, 404), (status, body[:500])

    def remove_all(self) -> None:
        for p in self.processes():
            self.remove(p["processId"])


def launch_lab(base: Path, port: int, token: str) -> tuple[Lab, Any]:
    """A `jupyter lab` on `base` (config, data, runtime, root); (lab, its log file)."""
    root = base / "root"
    (root / "sub").mkdir(parents=True, exist_ok=True)
    # No "get notified about news?" toast over the screenshots.
    settings = base / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS="false",
    )
    log = (base / "lab.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited: {(base / 'lab.log').read_text()[-3000:]}")
        try:
            if http(url + "api/status", token)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc, 20)
            pytest.fail(f"jupyter lab did not start: {(base / 'lab.log').read_text()[-3000:]}")
        time.sleep(0.2)
    status, body = http(url + "api/exec/processes", token)
    assert status == 200, f"jupyter_exec server extension not serving: {status} {body[:300]!r}"
    return Lab(url, token, root, proc), log


def open_lab(page: Any, lab: Lab) -> None:
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.locator(".jp-LabShell").wait_for()
    page.locator("#jupyterlab-splash").wait_for(state="detached")


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def show_sidebar(page: Any, widget_id: str) -> Any:
    """Show a left-sidebar widget. Its tab toggles, and the layout restorer may be
    opening the same widget at that moment, so look again after each click."""
    widget = page.locator(f"#{widget_id}")
    for _ in range(3):
        if widget.is_visible():
            return widget
        page.locator(f'.jp-SideBar [data-id="{widget_id}"]').click()
        with contextlib.suppress(Exception):
            widget.wait_for(state="visible", timeout=3000)
    widget.wait_for(state="visible")
    return widget


def open_panel(page: Any) -> Any:
    return show_sidebar(page, PANEL[1:])


def row(page: Any, process_id: str) -> Any:
    """A process's row in the panel."""
    return page.locator(f'{PANEL} .jp-ExecPanel-item[data-process-id="{process_id}"]')


def view(page: Any) -> Any:
    """The active process view in the main area."""
    return page.locator(".jp-ExecView:visible")


def terminal_text(page: Any) -> str:
    return str(view(page).locator(".xterm-rows").inner_text())


def wait_for_text(page: Any, pattern: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = terminal_text(page)
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in terminal:\n{text}")
        time.sleep(0.1)


def wait_until(check: Any, what: str, timeout: float = 20) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
