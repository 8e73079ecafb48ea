"""The real Codex makes its remote MCP server's HTTP requests through our ``http/request``.

An MCP server configured with ``environment_id`` is reached from the exec
server's machine: Codex 0.171 sends each Streamable HTTP request as
``http/request``, and its ``bearer_token_env_var`` as a ``valueEnvVar``
header, filled in from the executor's environment. Here the token exists only
in our server's environment (``env`` of the stdio environment in
``environments.toml``), not in Codex's: an MCP server that sees it was
reached through us. The MCP server is a minimal Streamable HTTP one on
127.0.0.1 that answers JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .harness import Codex, stdio_environments_toml
from .model_server import ScriptedModel, assistant_message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "mcp-token-only-the-executor-has"


class _McpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _McpServer

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, payload: Any = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
            self.send_header("Mcp-Session-Id", "session-1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # no server-to-client stream offered
        self._reply(405)

    def do_POST(self) -> None:
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        self.server.seen.append((message.get("method"), authorized))
        if not authorized:
            self._reply(401)
        elif "id" not in message:
            self._reply(202)
        else:
            self._reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": _result(message)})


def _result(message: dict[str, Any]) -> dict[str, Any]:
    if message["method"] == "initialize":
        return {"protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}}, "serverInfo": {"name": "probe", "version": "1"}}  # fmt: skip
    if message["method"] == "tools/list":
        schema = {"type": "object", "properties": {}}
        return {"tools": [{"name": "ping", "description": "ping", "inputSchema": schema}]}
    return {}


class _McpServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str | None, bool]]


@contextmanager
def mcp_server() -> Iterator[_McpServer]:
    server = _McpServer(("127.0.0.1", 0), _McpHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_codex_reaches_a_remote_mcp_server_through_http_request(
    codex: Codex, model: ScriptedModel, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    model.script([[assistant_message("done")]])
    toml = stdio_environments_toml(root)
    codex.environments_toml = toml.replace(
        "args = [", f'env = {{ EXEC_MCP_TOKEN = "{TOKEN}" }}\nargs = ['
    )
    with mcp_server() as server:
        codex.extra_config = f"""
[mcp_servers.probe]
url = "http://127.0.0.1:{server.server_address[1]}/mcp"
environment_id = "jupyter"
bearer_token_env_var = "EXEC_MCP_TOKEN"
"""
        result = codex.run(root, None)
        seen = list(server.seen)
    assert "EXEC_MCP_TOKEN" not in codex.extra_env
    methods = [method for method, authorized in seen if authorized]
    assert methods[:3] == ["initialize", "notifications/initialized", "tools/list"], (
        seen,
        result.describe(),
    )
    assert all(authorized for _, authorized in seen), seen
