"""`api/exec/mcp` under Jupyter's authorization: `read` lists, `execute` runs."""

from __future__ import annotations

import contextlib
import json

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.jupyter.test_authz_config import NoExecuteAuthorizer

from .conftest import text_of


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_exec": True},
            "allow_root": True,
            "authorizer_class": NoExecuteAuthorizer,
        },
        "ExecExtensionApp": {"log_dir": str(tmp_path / "logs"), "root_dir": str(tmp_path)},
    }


# `jp_fetch` in a test's arguments is what makes pytest-jupyter's server listen.


@contextlib.asynccontextmanager
async def session(url: str, token: str):
    headers = {"Authorization": f"token {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(*streams) as s,
    ):
        await s.initialize()
        yield s


async def test_read_only_user_may_list_but_not_run(
    jp_serverapp, jp_fetch, jp_http_port, jp_base_url
):
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}api/exec/mcp"
    token = jp_serverapp.identity_provider.token
    async with session(url, token) as s:
        assert (await s.call_tool("list_processes", {})).structured_content == {"processes": []}
        for tool, args in [
            ("run_command", {"command": "touch should-not-exist"}),
            ("start_process", {"command": "true"}),
            ("send_input", {"process_id": "x", "text": "y"}),
            ("signal_process", {"process_id": "x", "signal": "kill"}),
            ("terminate_process", {"process_id": "x"}),
        ]:
            r = await s.call_tool(tool, args)
            assert r.is_error and text_of(r).endswith(
                "permission denied: this needs the execute permission on exec"
            )
        r = await s.call_tool("read_output", {"process_id": "x"})
        assert r.is_error and "unknown process id x" in text_of(r)
    assert jp_serverapp.web_app.settings["jupyter_exec_service"].registry.list_processes() == []


async def test_get_is_405_and_no_token_is_refused(
    jp_serverapp, jp_fetch, jp_http_port, jp_base_url
):
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}api/exec/mcp"
    token = jp_serverapp.identity_provider.token
    async with httpx2.AsyncClient() as http:
        r = await http.get(url, headers={"Authorization": f"token {token}"})
        assert r.status_code == 405 and "stateless" in json.loads(r.text)["message"]
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code in (401, 403)
