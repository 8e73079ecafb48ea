"""Browser tests talk to a `jupyter lab` subprocess, never to an in-process server.

pytest-jupyter's autouse fixtures manage an asyncio loop and an in-process
ServerApp for every test; here they would fight Playwright's sync API, which
runs its own loop on this thread. So they are replaced by no-ops.

One `jupyter lab` and one chromium serve every browser test (starting Lab costs
seconds of CI time); each test gets a fresh page. Both are package-scoped, not
session-scoped: Playwright's sync API keeps its loop running on this thread
while it is open, and `asyncio.run` in any later test would fail.
Without chromium or the `playwright` package these tests skip locally and
FAIL under CI=true, so a CI machine that lost its browser cannot go green.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.lab import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    Lab,
    launch_lab,
    missing_requirements,
    open_lab,
)
from tests.daemon.harness import daemons_stopped
from tests.service import free_port, stop_process


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield None


@pytest.fixture(scope="session", autouse=True)
def _require_browser() -> None:
    missing = missing_requirements()
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="package")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    with daemons_stopped(base / "runtime"):
        running, log = launch_lab(base, free_port(), secrets.token_hex(16))
        try:
            yield running
        finally:
            # Stop by PID: SIGTERM lets the server (and jupyter_exec) shut down cleanly.
            stop_process(running.proc, 20)
            log.close()
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "lab.log").write_bytes((base / "lab.log").read_bytes())


@pytest.fixture(scope="package")
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
    open_lab(page, lab)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"))
    context.close()
    assert not [e for e in errors if "jupyter-exec" in e or "Exec" in e], errors
