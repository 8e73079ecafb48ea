"""The REST mirror's 429: the registry is full (SPEC 8), told by the error's kind."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_exec": True}, "allow_root": True},
        "ExecExtensionApp": {"max_processes": 1},
    }


async def test_a_full_registry_answers_429_and_harms_nothing(jp_fetch):
    async def start(name: str):
        body = json.dumps({"processId": name, "argv": ["sleep", "30"]})
        return await jp_fetch("api", "exec", "processes", method="POST", body=body)

    assert (await start("first")).code == 201
    with pytest.raises(HTTPClientError) as err:
        await start("second")
    assert err.value.code == 429
    assert err.value.response is not None
    message = json.loads(err.value.response.body)["message"]
    assert message.startswith("too many processes: 1 already running through Jupyter server")
    assert message.endswith("(max_processes)")
    listed = json.loads((await jp_fetch("api", "exec", "processes")).body)
    assert [(p["processId"], p["state"]) for p in listed] == [("first", "running")]
    await jp_fetch("api", "exec", "processes", "first", method="DELETE")
