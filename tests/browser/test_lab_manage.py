"""The panel with many processes, their ports and usage, and word when they end (issue 26).

Real `jupyter lab` (the session's, conftest.py), real chromium, real processes.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser.lab import (
    PANEL,
    Lab,
    http,
    open_lab,
    open_panel,
    row,
    shot,
    view,
    wait_for_text,
    wait_until,
)

pytestmark = pytest.mark.slow

ORIGINS = [
    {"kind": "notebook", "name": "analysis.ipynb"},
    {"kind": "agent", "name": "codex"},
    {"kind": "cli", "name": "jupyter exec"},
]


def _visible_ids(page: Any) -> list[str]:
    ids = page.locator(f"{PANEL} .jp-ExecPanel-item").evaluate_all(
        "items => items.map(i => i.dataset.processId)"
    )
    return list(ids)


def _status(page: Any) -> str:
    return str(page.locator(f"{PANEL} .jp-ExecPanel-status").inner_text())


def test_two_hundred_processes_grouped_filtered_and_cleared(page: Any, lab: Lab) -> None:
    lab.remove_all()  # the session's Lab is shared: count from a known state

    def start(i: int) -> dict[str, Any]:
        running = i % 10 == 0
        script = "sleep 600" if running else f"exit {1 if i % 7 == 0 else 0}"
        return lab.start(
            {
                "processId": f"many-{i}",
                "argv": ["sh", "-c", script],
                "label": f"job-{i}",
                "origin": ORIGINS[i % 3],
            }
        )

    try:
        with ThreadPoolExecutor(8) as pool:
            started = list(pool.map(start, range(200)))
        assert {p["origin"]["kind"] for p in started} == {"notebook", "agent", "cli"}
        running = {f"many-{i}" for i in range(0, 200, 10)}
        wait_until(
            lambda: sum(p["state"] != "running" for p in lab.processes()) == 180,
            "180 processes to finish",
        )

        open_panel(page)
        page.locator(f"{PANEL} .jp-ExecPanel-status", has_text="20 running, 200 in all").wait_for()
        groups = page.locator(f"{PANEL} .jp-ExecPanel-group")
        labels = groups.locator(".jp-ExecPanel-groupLabel").all_inner_texts()
        assert labels == ["Notebook · analysis.ipynb", "Agent · codex", "Command line"]
        counts = [groups.nth(i).locator(".jp-ExecPanel-item").count() for i in range(3)]
        assert counts == [67, 67, 66]
        shot(page, "many-grouped")

        # Text: the notebook's processes only, in its group alone.
        page.get_by_label("Filter processes").fill("analysis")
        wait_until(lambda: len(_visible_ids(page)) == 67, "the notebook's 67 rows")
        assert groups.locator(".jp-ExecPanel-groupLabel").all_inner_texts() == [
            "Notebook · analysis.ipynb"
        ]
        assert {int(i.split("-")[1]) % 3 for i in _visible_ids(page)} == {0}
        # Text and state: the notebook's running ones, newest first.
        page.get_by_label("Show processes").select_option("running")
        expected = [f"many-{i}" for i in range(190, -1, -10) if i % 3 == 0]
        wait_until(lambda: _visible_ids(page) == expected, f"rows {expected}")
        assert "Showing 7 of 200" in _status(page)
        # State alone: the failures, with their badges.
        page.get_by_label("Filter processes").fill("")
        page.get_by_label("Show processes").select_option("failed")
        failed = {f"many-{i}" for i in range(200) if i % 7 == 0 and i % 10 != 0}
        wait_until(lambda: set(_visible_ids(page)) == failed, "the failed rows")
        badges = page.locator(f"{PANEL} .jp-ExecBadge").all_inner_texts()
        assert badges == ["exited 1"] * len(failed)
        shot(page, "many-failed")

        # "Clear finished" with no filter: only the running ones are left.
        page.get_by_label("Show processes").select_option("all")
        clear = page.locator(f"{PANEL} .jp-ExecPanel-clear")
        assert clear.inner_text() == "Clear finished (180)"
        clear.click()
        wait_until(lambda: set(_visible_ids(page)) == running, "only the 20 running rows")
        assert {p["processId"] for p in lab.processes()} == running
        assert clear.is_disabled()
        page.locator(f"{PANEL} .jp-ExecPanel-status", has_text="20 running, 20 in all").wait_for()
        shot(page, "many-cleared")
        # The status bar counts them, and opens the panel once it is hidden.
        status_item = page.locator("#jupyter-exec-status")
        assert status_item.inner_text().strip() == "20 running"
        page.locator(f'.jp-SideBar [data-id="{PANEL[1:]}"]').click()
        page.locator(PANEL).wait_for(state="hidden")
        status_item.click()
        page.locator(PANEL).wait_for(state="visible")
    finally:
        lab.remove_all()
    status_item.filter(has_text="0 running").wait_for()

    # The Launcher's "Process" tile and the palette's commands.
    page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
    tile = page.locator('.jp-LauncherCard:visible[title^="Start a process"]')
    assert tile.locator(".jp-LauncherCard-label").inner_text() == "Process"
    tile.click()
    page.locator(".jp-Dialog", has_text="New process").wait_for()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("processes")
    labels = page.locator(".lm-CommandPalette-itemLabel").all_inner_texts()
    for label in ("Show Processes Panel", "Filter Processes…", "Clear Finished Processes"):
        assert label in labels, labels


def test_a_panel_process_ending_is_announced_and_its_button_opens_the_output(
    page: Any, lab: Lab
) -> None:
    # Another client's process: by default only this browser's own are announced.
    lab.start({"processId": "not-mine", "argv": ["sh", "-c", "sleep 1"], "label": "not-mine"})
    open_panel(page).get_by_role("button", name="New process").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator('input[name="command"]').fill("sleep 2; echo finished-here")
    dialog.locator('input[name="name"]').fill("notify-me")
    dialog.locator('input[name="tty"]').set_checked(False)
    dialog.get_by_role("button", name="Start").click()
    dialog.wait_for(state="detached")
    # Close its view, so that only the notification's button can bring it back.
    view(page).wait_for()
    page.locator(
        ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon"
    ).click()
    view(page).wait_for(state="detached")
    info = next(p for p in lab.processes() if p["label"] == "notify-me")
    assert info["origin"] == {"kind": "panel", "name": "JupyterLab"}

    toast = page.locator(".Toastify__toast", has_text='"notify-me" exited 0 after')
    toast.wait_for(timeout=20_000)
    shot(page, "notified")
    assert page.locator(".Toastify__toast", has_text="not-mine").count() == 0
    toast.get_by_role("button", name="Open output").click()
    wait_for_text(page, r"finished-here")
    assert view(page).get_attribute("id") == f"jupyter-exec-view-{info['processId']}"

    # No browser open: two processes of another client end. With the settings
    # "every process, only failures", the next open announces the failure, once.
    page.goto("about:blank")
    for name, code in (("away-ok", 0), ("away-fails", 3)):
        lab.start({"processId": name, "argv": ["sh", "-c", f"exit {code}"], "label": name})
    wait_until(
        lambda: all(
            p["state"] != "running" for p in lab.processes() if p["label"].startswith("away")
        ),
        "the two to end",
    )
    settings = f"{lab.url}lab/api/settings/jupyter-exec:plugin"
    raw = json.dumps({"notifications": "all", "onlyFailures": True})
    assert http(settings, lab.token, "PUT", {"raw": raw})[0] == 204
    try:
        open_lab(page, lab)
        page.locator(".Toastify__toast", has_text='"away-fails" exited 3').wait_for()
        assert page.locator(".Toastify__toast", has_text="away-ok").count() == 0
        open_lab(page, lab)  # and not again
        open_panel(page)
        row(page, "away-fails").wait_for()
        page.wait_for_timeout(1000)
        assert page.locator(".Toastify__toast", has_text="away-fails").count() == 0
    finally:
        assert http(settings, lab.token, "PUT", {"raw": "{}"})[0] == 204


def test_the_port_link_opens_the_served_page_and_usage_shows(page: Any, lab: Lab) -> None:
    (lab.root / "served-here.txt").write_text("hello")
    web = lab.start(
        {
            "processId": "web",
            "argv": [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
            "label": "web",
        }
    )
    busy = lab.start(
        {"processId": "busy", "argv": [sys.executable, "-c", "while True: pass"], "label": "busy"}
    )
    try:
        open_panel(page)
        web_row = row(page, "web")
        link = web_row.locator("a.jp-ExecPort")
        link.wait_for(timeout=10_000)
        port = int(link.get_attribute("data-port") or 0)
        assert link.inner_text() == f":{port}"
        assert link.get_attribute("target") == "_blank"
        usage = row(page, "busy").locator(".jp-ExecPanel-usage")

        def busy_percent() -> float:
            match = re.match(r"([\d.]+) % · \d+(\.\d)? MB$", usage.inner_text())
            return float(match.group(1)) if match else -1

        # A busy loop shows a live CPU figure (its size depends on how busy the machine is).
        wait_until(lambda: busy_percent() > 1, "the busy loop's CPU % in its row")
        shot(page, "port-and-usage")
        with page.context.expect_page() as opened:
            link.click()
        served = opened.value
        served.wait_for_load_state()
        assert served.url.endswith(f"/proxy/{port}/")
        assert "served-here.txt" in served.content()
        served.close()
        # The view shows the same, in more words.
        web_row.locator("button.jp-ExecPanel-row").click()
        details = view(page).locator(".jp-ExecView-details")
        details.locator(f'a.jp-ExecPort[data-port="{port}"]').wait_for()
        assert re.search(r"RSS \d+(\.\d)? MB \(peak RSS", details.inner_text())
    finally:
        lab.remove(web["processId"])
        lab.remove(busy["processId"])


#: Numbered lines of 64 bytes, more than 2 MiB in all: more than the server holds in
#: memory, so the view's replay comes from the log and from notifications both.
LINES = 36_000
#: The output view of process "big", found through the app (`expose_app_in_browser`).
VIEW_JS = "Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.id === 'jupyter-exec-view-big')"


@pytest.mark.timeout(300)  # seconds on a quiet machine; minutes when chromium gets little CPU
def test_the_view_replays_more_than_2_mib_without_losing_or_repeating_a_line(
    page: Any, lab: Lab
) -> None:
    script = (
        f"import sys\nfor i in range({LINES}): sys.stdout.write(f'{{i:08d}} ' + 'x' * 55 + '\\n')"
    )
    lab.start({"processId": "big", "argv": [sys.executable, "-c", script], "label": "big"})
    wait_until(
        lambda: next(p for p in lab.processes() if p["processId"] == "big")["state"] == "closed",
        "big to end",
    )
    assert next(p for p in lab.processes() if p["processId"] == "big")["outputBytes"] > 2 * 2**20
    try:
        open_panel(page)
        row(page, "big").locator("button.jp-ExecPanel-row").click()
        # Wait in the page until the view has said the end; polling the DOM would slow xterm.
        try:
            page.wait_for_function(
                f"() => {{ const v = {VIEW_JS}; return !!(v && v._exitShown); }}",
                polling=500,
                timeout=240_000,
            )
        except Exception as error:
            state = page.evaluate(
                f"""() => {{
                  const s = {VIEW_JS}._stream;
                  return s && {{cursor: s._cursor, caughtUp: s._caughtUp, syncing: s._syncing,
                    again: s._again, pending: [...s._pending.keys()].slice(0, 10),
                    exited: s._exited, closed: s._closed, atEnd: s._atEnd, error: s._error,
                    subscribed: s._subscribedSession, session: s.connection.sessionId,
                    status: s.connection.status}};
                }}"""
            )
            raise AssertionError(f"the view did not finish its replay: {state}") from error
        # What the view's terminal received, line by line (xterm keeps 100,000 lines).
        numbers, markers, last = page.evaluate(
            f"""async () => {{
              const terminal = {VIEW_JS}._terminal;
              await new Promise(resolve => terminal.write('', resolve));  // all written is parsed
              const buffer = terminal.buffer.active;
              const numbers = [], markers = [];
              let last = -1;
              for (let y = 0; y < buffer.length; y++) {{
                const text = buffer.getLine(y).translateToString(true);
                const m = /^(\\d{{8}}) x{{55}}$/.exec(text);
                if (m) {{ numbers.push(Number(m[1])); last = y; }}
                if (text.includes('[process exited 0]')) markers.push(y);
              }}
              return [numbers, markers, last];
            }}"""
        )
        assert len(numbers) == LINES, (len(numbers), numbers[:3], numbers[-3:])
        assert numbers == list(range(LINES))
        # The end is said once, after the last line (not amid a replay that is still coming).
        assert len(markers) == 1 and markers[0] > last, (markers, last)
    finally:
        lab.remove("big")
