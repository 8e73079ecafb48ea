"""What the daemon tests share: a private runtime dir whose daemon and holder stop after."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.harness import daemons_stopped


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A short runtime dir in /tmp (0700); its holder, daemon and processes stopped at the end."""
    path = Path(tempfile.mkdtemp(prefix="jx-daemon-"))
    with daemons_stopped(path):
        yield path
