"""Unit tests of fs/walk (jupyter_exec.rpc.fs_walk); its agreement with Codex's server is
tests/codex/test_differential_fs.py's."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import fs_walk
from jupyter_exec.rpc.fs_methods import Access, FsParams
from jupyter_exec.wire.errors import ErrorCode, ExecError
from tests.rpc.test_fs_methods import FakeContext


def walk(ctx: FakeContext, path: Path, **options: Any) -> Any:
    opts = {"maxDepth": 5, "maxEntries": 100, "maxDirectories": 100}
    opts["followDirectorySymlinks"] = False
    opts.update(options)
    params = {"path": path.as_uri(), "options": opts, "sandbox": options.pop("sandbox", None)}
    return asyncio.run(fs_walk.walk(ctx, params))


def names(result: dict[str, Any], root: Path) -> list[str]:
    return [e["path"][len(root.as_uri()) + 1 :] for e in result["entries"]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = (tmp_path / "root").resolve()
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "f").write_text("f")
    (root / "c.txt").write_text("c")
    return root


def test_breadth_first_sorted_by_name(root: Path) -> None:
    result = walk(FakeContext(root), root)
    assert names(result, root) == ["a", "b", "c.txt", "a/f", "b/deep"]
    assert result["errors"] == [] and result["truncated"] is False
    assert [e["kind"] for e in result["entries"]] == ["directory"] * 2 + ["file"] * 2 + [
        "directory"
    ]


def test_the_answer_has_a_size_budget(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tree whose paths would not fit in an answer stops, truncated, at the budget."""
    entry = len((root / "a").as_uri()) + fs_walk.WALK_ITEM_OVERHEAD_BYTES
    monkeypatch.setattr(fs_walk, "MAX_WALK_RESPONSE_BYTES", 2 * entry)
    result = walk(FakeContext(root), root)
    assert names(result, root) == ["a", "b"] and result["truncated"] is True


def test_confined_server_leaves_out_what_lies_outside(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "out-dir").symlink_to(outside)
    (root / "out-file").symlink_to(outside / "secret")
    confined = FakeContext(root, confine_to_root=True)
    result = walk(confined, root, followDirectorySymlinks=True)
    assert "out-dir" not in names(result, root) and "out-dir/secret" not in names(result, root)
    with pytest.raises(ExecError) as info:
        walk(confined, outside)
    assert info.value.code == ErrorCode.FS_ERROR
    # unconfined, the same link is followed
    assert "out-dir/secret" in names(
        walk(FakeContext(root), root, followDirectorySymlinks=True), root
    )


def test_limits_are_checked_before_anything_is_read(root: Path) -> None:
    ctx = FakeContext(root)
    cases: list[tuple[dict[str, Any], ErrorCode]] = [
        ({"maxEntries": 0}, ErrorCode.INVALID_REQUEST),
        ({"maxDirectories": 10_001}, ErrorCode.INVALID_REQUEST),
        ({"maxDepth": "1"}, ErrorCode.INVALID_PARAMS),
        ({"followDirectorySymlinks": None}, ErrorCode.INVALID_PARAMS),
    ]
    for options, code in cases:
        with pytest.raises(ExecError) as info:
            walk(ctx, root / "missing", **options)
        assert info.value.code == code, options


def test_unreadable_directory_is_an_error_and_the_walk_goes_on() -> None:
    """As Codex's server answers (recorded as uid nobody): the directory is listed, its
    failure is in ``errors`` with the OS's words, and its siblings are still walked."""
    with tempfile.TemporaryDirectory() as top:
        root = Path(top).resolve() / "t"
        (root / "locked").mkdir(parents=True)
        (root / "open" / "inner").mkdir(parents=True)
        os.chmod(top, 0o755)
        os.chmod(root / "locked", 0)
        access = Access.of(FakeContext(root), FsParams())
        options = fs_walk.WalkOptions(
            max_depth=5, max_entries=100, max_directories=100, follow_directory_symlinks=False
        )
        result = _as_unprivileged(lambda: fs_walk.walk_tree(access, root, options).result())
    assert [e["path"].rsplit("/", 2)[-2:] for e in result["entries"]] == [
        ["t", "locked"],
        ["t", "open"],
        ["open", "inner"],
    ]
    assert result["errors"] == [
        {"path": (root / "locked").as_uri(), "message": "Permission denied (os error 13)"}
    ]
    assert result["truncated"] is False


def _as_unprivileged(func: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`func()` here, or, as root (which reads any directory), in a child that is nobody."""
    if os.geteuid() != 0:
        return func()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, json.dumps(func()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result
