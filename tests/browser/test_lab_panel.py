"""The JupyterLab panel, end to end: a real `jupyter lab`, Debian's chromium, no mocks.

One `jupyter lab` serves the whole module (bound to 127.0.0.1, token auth,
its own config/data/runtime dirs so the user's settings and workspaces stay
out); Playwright drives /usr/bin/chromium headless. Screenshots land in
`test-artifacts/` for a human to look at.

Without chromium or the `playwright` package these tests skip locally and
FAIL under CI=true, so a CI machine that lost its browser cannot go green.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.wire import stop_process

pytestmark = pytest.mark.slow

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


def _missing_requirements() -> list[str]:
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the `playwright` Python package (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def _require_browser() -> None:
    missing = _missing_requirements()
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Lab:
    def __init__(self, url: str, token: str, root: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.token, self.root, self.proc = url, token, root, proc

    def api(self, path: str) -> Any:
        status, body = _get(self.url + path, self.token)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


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
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited: {(base / 'lab.log').read_text()[-3000:]}")
        try:
            if _get(url + "api/status", token)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc, 20)
            pytest.fail(f"jupyter lab did not start: {(base / 'lab.log').read_text()[-3000:]}")
        time.sleep(0.2)
    status, body = _get(url + "api/exec/processes", token)
    assert status == 200, f"jupyter_exec server extension not serving: {status} {body[:300]!r}"
    return Lab(url, token, root, proc), log


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    running, log = launch_lab(base, _free_port(), secrets.token_hex(16))
    try:
        yield running
    finally:
        # Stop by PID: SIGTERM lets the server (and jupyter_exec) shut down cleanly.
        stop_process(running.proc, 20)
        log.close()
        (ARTIFACTS / "lab.log").parent.mkdir(exist_ok=True)
        (ARTIFACTS / "lab.log").write_bytes((base / "lab.log").read_bytes())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page on JupyterLab, with console errors collected for the report."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.locator(".jp-LabShell").wait_for()
    page.locator("#jupyterlab-splash").wait_for(state="detached")
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"))
    context.close()
    assert not [e for e in errors if "jupyter-exec" in e or "Exec" in e], errors


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


def start_from_dialog(
    page: Any,
    command: str,
    name: str,
    tty: bool,
    pipe_stdin: bool = False,
    limits: dict[str, str] | None = None,
) -> None:
    open_panel(page).get_by_role("button", name="New process").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[name="command"]').fill(command)
    dialog.locator('input[name="name"]').fill(name)
    dialog.locator('input[name="tty"]').set_checked(tty)
    if not tty:
        dialog.locator('input[name="pipeStdin"]').set_checked(pipe_stdin)
    for field, value in (limits or {}).items():  # timeLimit, memoryLimit, cpuLimit
        dialog.locator(f'input[name="{field}"]').fill(value)
    shot(page, f"dialog-{name}")
    dialog.get_by_role("button", name="Start").click()
    dialog.wait_for(state="detached")


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


def test_tty_process_start_type_terminate_reload(page: Any, lab: Lab) -> None:
    open_panel(page)
    shot(page, "panel-empty")
    script = (
        "printf '\\033[32mREADY\\033[0m\\n';"
        " for i in 1 2 3; do printf '\\rprogress %s/3' $i; sleep 0.1; done; echo;"
        ' echo waiting-for-input; while read -r line; do echo "got:$line"; done'
    )
    start_from_dialog(page, script, "echoer", tty=True)

    # Output appears in a main-area view; ANSI colour is rendered, \r overwrote the bar.
    view(page).wait_for()
    text = wait_for_text(page, r"waiting-for-input")
    assert "READY" in text and "progress 1/3" not in text
    assert view(page).locator(".xterm-rows span.xterm-fg-2", has_text="READY").count() == 1
    row = page.locator(f"{PANEL} .jp-ExecPanel-item", has_text="echoer")
    assert row.locator(".jp-ExecBadge").inner_text() == "running"

    # Typing goes to the pty: the line discipline echoes it, the loop answers.
    view(page).locator(".xterm").click()
    page.keyboard.type("ping-42")
    page.keyboard.press("Enter")
    wait_for_text(page, r"got:ping-42")
    shot(page, "tty-typed")

    # Terminate: SIGTERM, seen in the view and in the list.
    view(page).get_by_role("button", name="Terminate").click()
    badge = view(page).locator(".jp-ExecView-toolbar .jp-ExecBadge")
    badge.filter(has_text="SIGTERM").wait_for()
    row.locator(".jp-ExecBadge", has_text="SIGTERM").wait_for()
    wait_for_text(page, r"\[process killed by SIGTERM \(143\)\]")
    assert view(page).get_by_role("button", name="Remove").is_enabled()
    assert view(page).get_by_role("button", name="Kill").is_disabled()
    shot(page, "tty-terminated")
    before = terminal_text(page)

    # Reload: the history comes back from seq 0, once, in order.
    page.reload()
    page.locator("#jupyterlab-splash").wait_for(state="detached")
    row = open_panel(page).locator(".jp-ExecPanel-item", has_text="echoer")
    row.locator(".jp-ExecBadge", has_text="SIGTERM").wait_for()
    if not view(page).count():
        row.locator("button").focus()  # keyboard: Enter on the focused row opens it
        page.keyboard.press("Enter")
    after = wait_for_text(page, r"killed by SIGTERM")
    assert after.count("READY") == 1 and after.count("got:ping-42") == 1
    assert [ln.rstrip() for ln in after.splitlines() if ln.strip()] == [
        ln.rstrip() for ln in before.splitlines() if ln.strip()
    ]
    shot(page, "tty-after-reload")


def test_pipe_process_stderr_stdin_download_remove(page: Any, lab: Lab) -> None:
    # The dialog's cwd follows the file browser (relative to the server root).
    show_sidebar(page, "filebrowser").locator(".jp-DirListing-item", has_text="sub").dblclick()
    page.locator(".jp-BreadCrumbs", has_text="sub").wait_for()
    script = 'echo "out:$(pwd)"; echo err-line >&2; read x; echo "read:$x"'
    open_panel(page).get_by_role("button", name="New process").click()
    cwd = page.locator('.jp-Dialog input[name="cwd"]')
    assert cwd.input_value() == "sub"
    page.keyboard.press("Escape")
    start_from_dialog(page, script, "piper", tty=False, pipe_stdin=True)

    view(page).wait_for()
    text = wait_for_text(page, r"err-line")
    shot(page, "pipe-running")
    assert f"out:{lab.root / 'sub'}" in text.replace("\n", "")
    # stderr is drawn in a colour of its own (bright red, xterm palette 9).
    assert view(page).locator(".xterm-rows span.xterm-fg-9", has_text="err-line").count() == 1

    field = view(page).get_by_label("Standard input")
    field.fill("hello pipes")
    field.press("Enter")
    wait_for_text(page, r"read:hello pipes")
    view(page).locator(".jp-ExecBadge", has_text="exited 0").wait_for()
    shot(page, "pipe-exited")

    with page.expect_download() as info:
        view(page).get_by_role("button", name="Download").click()
    saved = ARTIFACTS / "piper.log"
    info.value.save_as(saved)
    assert b"err-line" in saved.read_bytes() and b"read:hello pipes" in saved.read_bytes()

    processes = lab.api("api/exec/processes")
    (piper,) = [p for p in processes if p["label"] == "piper"]
    view(page).get_by_role("button", name="Remove").click()
    # Its view goes (another restored view, e.g. the previous test's, may show then).
    page.locator(f"#jupyter-exec-view-{piper['processId']}").wait_for(state="detached")
    page.locator(f'{PANEL} .jp-ExecPanel-item[data-process-id="{piper["processId"]}"]').wait_for(
        state="detached"
    )
    assert piper["processId"] not in [p["processId"] for p in lab.api("api/exec/processes")]


def _set_theme(lab: Lab, theme: str) -> None:
    body = json.dumps({"raw": json.dumps({"theme": theme})}).encode()
    request = urllib.request.Request(
        lab.url + "lab/api/settings/@jupyterlab/apputils-extension:themes",
        data=body,
        method="PUT",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 204


def test_start_form_limits_reach_the_server(page: Any, lab: Lab) -> None:
    limits = {"timeLimit": "1", "memoryLimit": "2G", "cpuLimit": "60"}
    start_from_dialog(page, "sleep 30", "limited", tty=False, limits=limits)
    row = open_panel(page).locator(".jp-ExecPanel-item", has_text="limited")
    row.locator(".jp-ExecBadge", has_text="SIGTERM").wait_for(timeout=20_000)
    info = next(p for p in lab.api("api/exec/processes") if p["label"] == "limited")
    assert info["timeoutMs"] == 1000 and info["timedOut"] is True
    assert info["limits"] == {"memoryBytes": 2 << 30, "cpuSeconds": 60}


def test_start_form_sandbox_reaches_the_server_and_the_row_shows_it(page: Any, lab: Lab) -> None:
    open_panel(page).get_by_role("button", name="New process").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[name="command"]').fill("touch in-the-sandbox; echo rc=$?")
    dialog.locator('input[name="name"]').fill("boxed")
    dialog.locator('input[name="tty"]').set_checked(False)
    dialog.locator('select[name="sandbox"]').select_option("read-only")
    dialog.locator('input[name="noNetwork"]').set_checked(True)
    dialog.get_by_role("button", name="Start").click()
    dialog.wait_for(state="detached")
    row = open_panel(page).locator(".jp-ExecPanel-item", has_text="boxed")
    row.locator(".jp-ExecPanel-sandbox", has_text="sandbox: read-only, no network").wait_for()
    info = next(p for p in lab.api("api/exec/processes") if p["label"] == "boxed")
    assert info["sandbox"] == {"mode": "read-only", "network": False, "writableRoots": []}


def test_keyboard_only_start_and_dark_theme(page: Any, lab: Lab) -> None:
    # Keyboard only: focus "New process", Enter, type the command, Enter starts it.
    open_panel(page).get_by_role("button", name="New process").focus()
    page.keyboard.press("Enter")
    page.locator(".jp-Dialog").wait_for()
    assert page.evaluate("document.activeElement.name") == "command"
    page.keyboard.type("echo keyboard-only")
    page.keyboard.press("Enter")
    page.locator(".jp-Dialog").wait_for(state="detached")
    wait_for_text(page, "keyboard-only")

    def colours() -> tuple[str, str]:
        panel = page.locator(PANEL).evaluate("el => getComputedStyle(el).backgroundColor")
        term = (
            view(page)
            .locator(".xterm-viewport")
            .evaluate("el => getComputedStyle(el).backgroundColor")
        )
        return panel, term

    light = colours()
    _set_theme(lab, "JupyterLab Dark")
    try:
        page.reload()
        page.locator("body[data-jp-theme-light='false']").wait_for(state="attached")
        open_panel(page).locator(".jp-ExecPanel-item", has_text="keyboard-only").locator(
            "button"
        ).click()
        wait_for_text(page, "keyboard-only")
        dark = colours()
        shot(page, "dark-theme")
    finally:
        _set_theme(lab, "JupyterLab Light")

    def brightness(rgb: str) -> int:
        return sum(int(v) for v in re.findall(r"\d+", rgb)[:3])

    assert brightness(dark[0]) < brightness(light[0])
    assert brightness(dark[1]) < brightness(light[1])


def _post_process(lab: Lab, params: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        lab.url + "api/exec/processes",
        data=json.dumps(params).encode(),
        method="POST",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        return dict(json.loads(response.read()))


def test_network_blip_banner_then_resume_without_loss(page: Any, lab: Lab) -> None:
    """Cut the panel's websocket mid-output: banner, reconnect, every line exactly once.

    Playwright's WebSocket routing passes frames through to the real server and
    lets the test drop the connection, as a network blip would.
    """
    routes: list[tuple[Any, Any]] = []
    sent: list[dict[str, Any]] = []

    def relay(ws: Any) -> None:
        server = ws.connect_to_server()

        def forward(message: str | bytes) -> None:
            sent.append(json.loads(message))
            server.send(message)

        ws.on_message(forward)
        server.on_message(lambda message: ws.send(message))
        routes.append((ws, server))

    page.route_web_socket(re.compile(r".*/api/exec/ws.*"), relay)
    page.reload()
    page.locator("#jupyterlab-splash").wait_for(state="detached")
    n = 30
    script = f"for i in $(seq 1 {n}); do echo line-$i; sleep 0.1; done"
    info = _post_process(lab, {"processId": "blip", "argv": ["sh", "-c", script], "label": "blip"})
    open_panel(page).locator('.jp-ExecPanel-item[data-process-id="blip"] button').click()
    wait_for_text(page, r"line-5\b")

    for ws, server in routes:
        ws.close()
        server.close()
    banner = view(page).locator(".jp-ExecBanner")
    banner.filter(has_text="Disconnected").wait_for()
    shot(page, "blip-disconnected")
    banner.wait_for(state="hidden", timeout=30000)

    text = wait_for_text(page, r"\[process exited 0\]")
    shot(page, "blip-resumed")
    for i in range(1, n + 1):
        assert len(re.findall(rf"^line-{i}$", text, re.M)) == 1, (i, text)
    inits = [m for m in sent if m.get("method") == "initialize"]
    assert len(inits) >= 2 and inits[-1]["params"].get("resumeSessionId"), inits
    reads = [m["params"] for m in sent if m.get("method") == "process/read"]
    assert any(r["processId"] == info["processId"] and r.get("afterSeq", 0) > 0 for r in reads)
