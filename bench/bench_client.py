"""The bench's raw JSON-RPC client, the same for every server and transport.

It speaks as Codex's own client does (bench/run.py drives it): requests with
numeric ids, notifications to `on_notify`, nothing validated or retried, so
what is measured is the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any


class RpcError(Exception):
    pass


class Client:
    """A raw JSON-RPC client over one transport; notifications go to `on_notify`."""

    def __init__(self) -> None:
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.on_notify: Callable[[str, dict[str, Any]], None] = lambda m, p: None
        self._reader: asyncio.Task[None] | None = None

    # transport hooks
    async def _send_text(self, text: str) -> None:
        raise NotImplementedError

    async def _frames(self) -> Any:
        raise NotImplementedError
        yield

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read_loop())
        self._reader.add_done_callback(_report_failure)

    async def _read_loop(self) -> None:
        loads = json.loads
        pending = self._pending
        try:
            async for frame in self._frames():
                msg = loads(frame)
                method = msg.get("method")
                if method is not None:
                    self.on_notify(method, msg.get("params") or {})
                    continue
                fut = pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(RpcError(msg["error"]))
                    else:
                        fut.set_result(msg.get("result"))
        finally:
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(RpcError("connection closed"))

    async def call(self, method: str, params: Any) -> Any:
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await self._send_text(json.dumps({"id": rid, "method": method, "params": params}))
        return await fut

    async def notify(self, method: str, params: Any) -> None:
        await self._send_text(json.dumps({"method": method, "params": params}))

    async def handshake(self) -> None:
        await self.call("initialize", {"clientName": "jupyter-exec-bench", "resumeSessionId": None})
        await self.notify("initialized", {})


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"client reader failed: {task.exception()!r}", file=sys.stderr)


class StdioClient(Client):
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc

    async def _send_text(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def _frames(self) -> Any:
        assert self.proc.stdout is not None
        readline = self.proc.stdout.readline
        while True:
            line = await readline()
            if not line:
                return
            yield line


class WsClient(Client):
    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws

    async def _send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def _frames(self) -> Any:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self.ws:
                yield frame
        except ConnectionClosed:
            return

    async def aclose(self) -> None:
        await self.ws.close()
        await super().aclose()
