"""fs/* and environment methods plugged into the real dispatcher, as Codex calls them."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc import fs_methods
from jupyter_exec.rpc.dispatch import ExecService
from jupyter_exec.rpc.service import build_service
from jupyter_exec.wire.rules import FrontRules


class Wire:
    """One client connection to an in-process service, speaking raw frames."""

    def __init__(self, service: ExecService) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connection = service.connect(self._write)
        self._ids = 0

    async def _write(self, text: str) -> None:
        await self.frames.put(json.loads(text))

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        self._ids += 1
        self.connection.receive(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(self.frames.get(), 10)
            if message.get("id") == self._ids:
                return message

    async def notification(self, method: str, timeout: float) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.frames.get(), timeout)
            if message.get("method") == method:
                return message


def test_codex_file_calls_through_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs_methods, "WATCH_POLL_SECONDS", 0.05)
    root = tmp_path.resolve()

    async def scenario() -> None:
        service = build_service(rules=FrontRules("the test front", root))
        wire = Wire(service)
        try:
            init = await wire.call(
                "initialize", {"clientName": "codex-environment", "resumeSessionId": None}
            )
            assert "result" in init, init
            wire.connection.receive(json.dumps({"method": "initialized", "params": {}}))

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
            await wire.connection.aclose()
            await service.aclose()

    asyncio.run(scenario())
