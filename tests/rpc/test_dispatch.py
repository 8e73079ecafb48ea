"""fs/* and environment methods plugged into the real dispatcher, as Codex calls them."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from jupyter_exec.core.registry import Registry
from jupyter_exec.rpc import fs_methods
from jupyter_exec.rpc.dispatch import ExecService, ServiceConfig
from jupyter_exec.wire.rules import FrontRules
from tests.service import RawPeer


def test_codex_file_calls_through_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_methods, "WATCH_POLL_SECONDS", 0.05)
    root = tmp_path.resolve()

    async def scenario() -> None:
        service = ExecService(Registry(), ServiceConfig(rules=FrontRules("the test front", root)))
        wire = RawPeer(service)
        try:
            init = await wire.call(
                "initialize", {"clientName": "codex-environment", "resumeSessionId": None}
            )
            assert "result" in init, init
            wire.send("initialized", {}, notify=True)

            info = (await wire.call("environment/info", None))["result"]
            assert info["cwd"] == root.as_uri()
            assert info["capabilities"]["fsWatchMissing"] is True
            assert info["capabilities"]["environmentConfigRead"] is True

            missing = await wire.call(
                "fs/getMetadata", {"path": (root / ".git").as_uri(), "sandbox": None}
            )
            assert missing["error"]["code"] == -32004
            outside = await wire.call("fs/getMetadata", {"path": "file:///.git", "sandbox": None})
            assert outside["error"]["code"] == -32004  # served, and absent: not refused
            assert outside["error"]["message"] == "No such file or directory: /.git"

            target = (root / "added.txt").as_uri()
            data = base64.b64encode(b"hello\n").decode()
            written = await wire.call(
                "fs/writeFile", {"path": target, "dataBase64": data, "sandbox": None}
            )
            assert written == {"jsonrpc": "2.0", "id": written["id"], "result": {}}
            read = await wire.call("fs/readFile", {"path": target, "sandbox": None})
            assert read["result"] == {"dataBase64": data}

            watch = {
                "watchId": 1,
                "missing": [(root / ".agents" / "skills").as_uri(), "file:///.git"],
                "present": None,
            }
            assert (await wire.call("fs/watchMissing", watch))["result"] == {"watching": True}
            (root / ".agents").mkdir()
            changed = await wire.notification("fs/missingChanged", timeout=5)
            assert changed["params"] == {"watchId": 1}

            config = await wire.call(
                "environmentConfig/read",
                {"cwd": root.as_uri(), "configPaths": [["mcp_servers"]], "requirementsPaths": []},
            )
            assert config["result"]["config"] == {"layers": [], "cloudInsertionIndex": 0}
        finally:
            await wire.close()
            await service.aclose()

    asyncio.run(scenario())
