"""The JupyterLab panel, end to end: a real `jupyter lab`, Debian's chromium, no mocks.

The session's one `jupyter lab` and chromium come from conftest.py; the page
helpers from lab.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from tests.browser.lab import (
    ARTIFACTS,
    PANEL,
    Lab,
    open_panel,
    shot,
    show_sidebar,
    terminal_text,
    view,
    wait_for_text,
)

pytestmark = pytest.mark.slow


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
    # Keyboard: Enter on the focused row opens its view, or brings the restored one to
    # the front (the session's Lab may restore other tests' views too).
    row.locator("button").focus()
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
    info = lab.start({"processId": "blip", "argv": ["sh", "-c", script], "label": "blip"})
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
