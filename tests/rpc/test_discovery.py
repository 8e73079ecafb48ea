"""Unit tests of capability discovery (jupyter_exec.rpc.discovery): limits, sandbox and the
front's environment; its agreement with Codex's server is test_differential_fs.py's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import discovery
from tests.rpc.test_fs_methods import FakeContext


def discover(ctx: FakeContext, *roots: tuple[str, Path], **extra: Any) -> list[dict[str, Any]]:
    params = {"roots": [{"id": i, "path": p.as_uri(), **extra} for i, p in roots]}
    return asyncio.run(discovery.discover_v1(ctx, params))["roots"]  # type: ignore[no-any-return]


def skill(directory: Path, name: str) -> None:
    directory.mkdir(parents=True)
    (directory / "SKILL.md").write_text(f"---\nname: {name}\ndescription: d\n---\n")


def test_oversized_files_are_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skill(tmp_path / "s1", "one")
    skill(tmp_path / "s2", "two")
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "SKILL.md").write_bytes(b"x" * (discovery.MAX_FILE_BYTES + 1))
    size = (tmp_path / "s1" / "SKILL.md").stat().st_size
    monkeypatch.setattr(discovery, "MAX_ROOT_BYTES", size + 1)  # room for one skill
    (found,) = discover(FakeContext(tmp_path), ("r", tmp_path))
    assert [s["instructions"]["path"].rsplit("/", 2)[1] for s in found["skills"]] == ["s1"]
    assert any("exceeds the 1048576-byte limit" in w for w in found["warnings"])
    assert any("bundle exceeds" in w for w in found["warnings"])


def test_a_confined_front_discovers_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    skill(tmp_path / "outside" / "s", "s")
    (root / "link").symlink_to(tmp_path / "outside")
    ctx = FakeContext(root, confine_to_root=True)
    inside, outside = discover(ctx, ("in", root), ("out", tmp_path / "outside"))
    assert inside["skills"] == [] and inside["error"] is None
    assert outside["error"] is not None and outside["skills"] == []


def test_root_sandbox_is_parsed(tmp_path: Path) -> None:
    skill(tmp_path / "s", "s")
    (found,) = discover(FakeContext(tmp_path), ("r", tmp_path), sandbox="read-only")
    assert [s["instructions"]["contents"] for s in found["skills"]] == [
        "---\nname: s\ndescription: d\n---\n"
    ]


def test_discover_v2_uses_the_fronts_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    skill(home / "codex" / "skills" / "x", "x")
    skill(home / "user" / ".agents" / "skills" / "y", "y")
    env = {"CODEX_HOME": str(home / "codex"), "HOME": str(home / "user")}
    ctx = FakeContext(tmp_path, env=env)
    found = asyncio.run(discovery.discover_v2(ctx, {"cwd": tmp_path.as_uri()}))
    assert [(s["name"], s["discoveryRoot"]["id"]) for s in found["skills"]] == [
        ("x", "codex-home-skills"),
        ("y", "user-agent-skills"),
    ]
    assert found["plugins"] == [] and found["warnings"] == []


def test_front_matter_subset() -> None:
    parse = discovery._front_matter
    assert parse("no front matter") is None
    assert parse("---\nname: 'a'\nmetadata:\n  short-description: \"s\"\n---\n") == {
        "name": "a",
        "metadata": {"short-description": "s"},
    }
    assert parse("---\nnot yaml\n---\n") is None
