"""One real Jupyter server per module, and MCP sessions to it over stdio and HTTP.

`mcp_session("stdio")` runs `jupyter-exec mcp --url ... --token ...` as a
subprocess (the SDK's stdio client starts and stops it); `mcp_session("http")`
talks streamable HTTP to `{base_url}api/exec/mcp` with the token header.
Either way the tools land in the same Jupyter server's registry.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.magics.jupyter_process import JupyterServer, jupyter_server

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    with jupyter_server(tmp_path_factory.mktemp("mcp")) as running:
        yield running


@contextlib.asynccontextmanager
async def mcp_session(server: JupyterServer, transport: str) -> AsyncIterator[ClientSession]:
    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            params = StdioServerParameters(
                command=str(BIN / "jupyter-exec"),
                args=["mcp", "--url", server.url, "--token", server.token],
                env=server.env,
            )
            streams = await stack.enter_async_context(stdio_client(params))
        else:
            headers = {"Authorization": f"token {server.token}"}
            timeout = httpx2.Timeout(30, read=300)
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=timeout)
            )
            url = server.url + "api/exec/mcp"
            streams = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(ClientSession(*streams))
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def stdio_session(
    args: list[str], env: dict[str, str], errlog: Path, cwd: Path | None = None
) -> AsyncIterator[ClientSession]:
    """`jupyter-exec <args>` as an MCP stdio server (its stderr goes to `errlog`), initialized."""
    params = StdioServerParameters(
        command=str(BIN / "jupyter-exec"),
        args=args,
        env=env,
        cwd=None if cwd is None else str(cwd),
    )
    with errlog.open("w") as log:
        async with stdio_client(params, errlog=log) as streams, ClientSession(*streams) as s:
            await s.initialize()
            yield s


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)
