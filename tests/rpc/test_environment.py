"""Unit tests of environment/info and environmentConfig/read (jupyter_exec.rpc.environment)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import environment
from jupyter_exec.wire.errors import ErrorCode, ExecError
from tests.rpc.test_fs_methods import FakeContext


def call(ctx: FakeContext, method: str, params: Any) -> Any:
    return asyncio.run(environment.ENVIRONMENT_METHODS[method].handler(ctx, params))


def test_environment_info_shape(tmp_path: Path) -> None:
    ctx = FakeContext(tmp_path)
    info = call(ctx, "environment/info", None)
    assert set(info) == {
        "shell",
        "executorVersion",
        "providerId",
        "cwd",
        "userHomeDir",
        "platformOs",
        "prependPathDirs",
        "temporaryDirectories",
        "tempDir",
        "capabilities",
    }
    assert info["cwd"] == tmp_path.as_uri()
    assert info["userHomeDir"].startswith("file:///")
    assert info["tempDir"].startswith("file:///")
    assert info["platformOs"] == "linux"
    assert info["shell"]["name"] in ("bash", "zsh", "sh")
    assert os.access(info["shell"]["path"], os.X_OK)
    # Codex gates methods on exactly these names, and each is offered only once it holds
    # (docs/codex.md; SPEC 12).
    assert info["capabilities"] == {
        "fsWatchMissing": True,
        "environmentConfigRead": True,
        "sandboxedFileStreaming": True,
        "fileWriteStreaming": True,
        "capabilityDiscoverySandbox": True,
        "capabilityDiscoveryV2": True,
        "linuxRootWritePreservesDevices": True,
        "linuxApprovedRootWritePreservesRestrictions": True,
        "shellSnapshotV2": True,
        "httpHeaderEnvVars": True,
        "networkProxyLaunch": True,
        "networkProxyReviewDomains": True,
        "networkProxyTransparentTcp": True,
        "credentialMasking": True,
        "credentialMaskingCustomProviders": True,
    }


def test_provider_id_names_the_front(tmp_path: Path) -> None:
    """``sha256:`` and 64 hex digits, the same for every call on a front, another for
    another root (Codex's is the same whatever its home: docs/codex.md)."""
    first = call(FakeContext(tmp_path), "environment/info", None)["providerId"]
    assert first == call(FakeContext(tmp_path), "environment/info", None)["providerId"]
    assert first.startswith("sha256:") and len(first) == 71
    int(first[7:], 16)
    other = tmp_path / "other"
    other.mkdir()
    assert call(FakeContext(other), "environment/info", None)["providerId"] != first


def test_environment_status(tmp_path: Path) -> None:
    assert call(FakeContext(tmp_path), "environment/status", None) == {"status": "ready"}


def test_shell_falls_back_when_shell_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/usr/sbin/nologin")
    assert environment.login_shell()["name"] in ("bash", "sh")
    monkeypatch.setenv("SHELL", "/bin/sh")
    assert environment.login_shell() == {"name": "sh", "path": "/bin/sh"}


def test_environment_config_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "ch"))
    ctx = FakeContext(tmp_path)
    params = {
        "cwd": tmp_path.as_uri(),
        "configPaths": [["mcp_servers"]],
        "requirementsPaths": [["mcp_servers"]],
    }
    result = call(ctx, "environmentConfig/read", params)
    empty = {"layers": [], "cloudInsertionIndex": 0}
    assert result["config"] == empty and result["requirements"] == empty
    assert result["codexHomeDir"] == (tmp_path / "ch").as_uri()
    assert result["userHomeDir"] == Path.home().as_uri()
    assert isinstance(result["hostname"], str) and result["hostname"]


def test_environment_config_read_bad_params(tmp_path: Path) -> None:
    ctx = FakeContext(tmp_path)
    for params in ({"cwd": "relative"}, {"configPaths": "x"}):
        with pytest.raises(ExecError) as info:
            call(ctx, "environmentConfig/read", params)
        assert info.value.code == ErrorCode.INVALID_PARAMS
