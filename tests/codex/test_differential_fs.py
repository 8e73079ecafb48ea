"""Codex's own exec-server and ours answer the same fs and environment requests alike.

One Codex server and one of ours per transport for the whole module
(differential.py); each case builds its workspace fresh on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .differential import TRANSPORTS, Case, Pair, Side, Step, codex_side, our_side


@pytest.fixture(scope="module")
def codex_server(codex_launcher: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with codex_side(codex_launcher, tmp_path_factory.mktemp("codex")) as side:
        yield side


@pytest.fixture(scope="module", params=TRANSPORTS)
def pair(
    request: pytest.FixtureRequest, codex_server: Side, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    with our_side(request.param, tmp_path_factory.mktemp(request.param)) as ours:
        yield Pair(codex_server, ours)


def tree(ws: Path) -> None:
    """A small workspace: nested directories, files, links to a file, a directory, nowhere."""
    (ws / "a" / "b" / "c").mkdir(parents=True)
    (ws / "z").mkdir()
    (ws / ".hidden" / "x").mkdir(parents=True)
    (ws / "a" / "f.txt").write_text("hello\n")
    (ws / "a" / "b" / "g").write_text("g\n")
    (ws / "m.txt").write_text("m\n")
    (ws / "a" / "to-file").symlink_to("f.txt")
    (ws / "a" / "to-dir").symlink_to("b")
    (ws / "a" / "dangling").symlink_to("nowhere")


def test_existing_fs_methods_agree(pair: Pair) -> None:
    """The driver itself: methods both servers had before (a case that fails if they differ)."""
    pair.assert_same(
        Case(
            "metadata and reads",
            [
                Step("fs/readFile", {"path": "file://{ws}/a/f.txt", "sandbox": None}),
                Step("fs/readFile", {"path": "file://{ws}/missing", "sandbox": None}),
                Step(
                    "fs/getMetadata",
                    {"path": "file://{ws}/a/to-file", "sandbox": None},
                    pick=lambda r: {k: r[k] for k in ("isDirectory", "isFile", "isSymlink")},
                ),
                Step("fs/canonicalize", {"path": "file://{ws}/a/to-dir", "sandbox": None}),
            ],
            tree,
        )
    )
