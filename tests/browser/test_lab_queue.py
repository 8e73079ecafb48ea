"""Queues, restarts and dependencies in the panel (issue 27, SPEC 11).

Real `jupyter lab` (the package's, conftest.py), real chromium, real processes:
a queued process shows as queued with no pid, a restart count shows and each
restart shows in the output view between its runs, the panel widens a queue
(`queue/set`), and the New process form sends a restart policy, a queue and
`after`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.lab import PANEL, Lab, open_panel, row, shot, view, wait_for_text, wait_until

pytestmark = pytest.mark.slow

QUEUE = "q-browser"


def test_queued_and_restarted_processes_and_the_form_that_makes_them(page: Any, lab: Lab) -> None:
    sh = ["sh", "-c"]
    ours = ["qa", "qb", "flaky"]
    lab.start({"processId": "qa", "argv": [*sh, "sleep 600"], "label": "qa", "queue": QUEUE})
    queued = lab.start(
        {"processId": "qb", "argv": [*sh, "echo b-ran"], "label": "qb", "queue": QUEUE}
    )
    assert (queued["state"], queued["pid"]) == ("queued", None)
    restart = {"policy": "on-failure", "maxRestarts": 2, "delayMs": 50}
    flaky_sh = "echo run; sleep 2; exit 3"
    lab.start({"processId": "flaky", "argv": [*sh, flaky_sh], "label": "flaky", "restart": restart})
    try:
        open_panel(page)
        # Its view, open while it runs: each restart shows between the runs.
        row(page, "flaky").locator("button.jp-ExecPanel-row").click()
        qb = row(page, "qb")
        qb.locator(".jp-ExecBadge", has_text="queued").wait_for()
        assert qb.locator(".jp-ExecPanel-pid").inner_text() == ""
        assert qb.locator(".jp-ExecPanel-waiting").inner_text() == f"queue {QUEUE}"
        flaky = row(page, "flaky")
        text = wait_for_text(page, r"\[process exited 3\]")
        assert re.findall(r"run|\[process exited 3[^]]*\]", text) == [
            *("run", "[process exited 3: restart 1]", "run", "[process exited 3: restart 2]"),
            *("run", "[process exited 3]"),
        ], text
        flaky.locator(".jp-ExecBadge", has_text="exited 3").wait_for()
        flaky.locator(".jp-ExecPanel-restarts", has_text="2 restarts").wait_for()
        line = page.locator(f'{PANEL} .jp-ExecPanel-queue[data-queue="{QUEUE}"]')
        line.get_by_text(f"{QUEUE}: 1 of 1 running, 1 queued").wait_for()
        shot(page, "queued-and-restarted")

        # The panel lets two run at once (queue/set): qb starts, and ends.
        parallel = line.locator("input.jp-ExecPanel-parallel")
        parallel.fill("2")
        parallel.press("Enter")
        qb.locator(".jp-ExecBadge", has_text="exited 0").wait_for()
        line.get_by_text(f"{QUEUE}: 1 of 2 running, 0 queued").wait_for()

        # The form: in the queue, after qa, restarted once on failure.
        open_panel(page).get_by_role("button", name="New process").click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator('input[name="command"]').fill("echo eval-ran")
        dialog.locator('input[name="name"]').fill("after-qa")
        dialog.locator('input[name="tty"]').set_checked(False)
        dialog.locator('select[name="restart"]').select_option("on-failure")
        dialog.locator('input[name="maxRestarts"]').fill("1")
        dialog.locator('input[name="queue"]').fill(QUEUE)
        dialog.locator('select[name="after"]').select_option(["qa"])
        shot(page, "dialog-after-qa")
        dialog.get_by_role("button", name="Start").click()
        dialog.wait_for(state="detached")
        listed = wait_until(
            lambda: next((p for p in lab.processes() if p["label"] == "after-qa"), None),
            "the form's process on the server",
        )
        ours.append(listed["processId"])
        assert (listed["state"], listed["queue"], listed["after"]) == ("queued", QUEUE, ["qa"])
        assert listed["restartPolicy"]["policy"] == "on-failure"
        assert listed["restartPolicy"]["maxRestarts"] == 1
        waiting = row(page, listed["processId"]).locator(".jp-ExecPanel-waiting")
        assert waiting.inner_text() == f"queue {QUEUE} · after qa"

        # qa terminated from its view: the one after it never starts, and says so.
        qa_row = row(page, "qa")
        qa_row.locator("button.jp-ExecPanel-row").click()
        view(page).get_by_role("button", name="Terminate").click()
        qa_row.locator(".jp-ExecBadge", has_text="killed by SIGTERM").wait_for()
        row(page, listed["processId"]).locator(".jp-ExecBadge", has_text="not started").wait_for()
        page.locator(
            ".Toastify__toast", has_text='"after-qa" did not start: dependency qa'
        ).wait_for()
        shot(page, "dependency-failed")
    finally:
        for process_id in ours:
            lab.remove(process_id)
