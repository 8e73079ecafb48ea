"""The module-scoped `hub` fixture: one JupyterHub with users `a` and `b` (see harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Hub, running_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("jupyterhub").resolve()) as running:
        yield running
