"""Browser tests talk to a `jupyter lab` subprocess, never to an in-process server.

pytest-jupyter's autouse fixtures manage an asyncio loop and an in-process
ServerApp for every test; here they would fight Playwright's sync API, which
runs its own loop on this thread. So they are replaced by no-ops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def jp_asyncio_loop() -> Iterator[None]:
    yield None


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    yield None
