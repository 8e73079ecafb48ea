"""Authorization with resource `exec`, and the config traits taking effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from tests.jupyter.test_extension import open_rpc


class NoExecuteAuthorizer(Authorizer):
    """Lets a user look at processes but not start or touch them."""

    def is_authorized(self, handler, user, action, resource):
        return not (resource == "exec" and action == "execute")


@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_exec": True},
            "allow_root": True,
            "authorizer_class": NoExecuteAuthorizer,
        },
        "ExecExtensionApp": {
            "log_dir": str(tmp_path / "exec-logs"),
            "max_processes": 3,
            "default_lifetime": "connection",
            "retained_bytes_per_process": 4096,
            "log_bytes_per_process": 0,
            "exited_retention_seconds": 1.5,
            "root_dir": str(tmp_path),
        },
    }


async def test_read_is_allowed_but_execute_is_denied(jp_fetch, jp_ws_fetch, jp_serverapp):
    rpc = await open_rpc(jp_ws_fetch)
    assert (await rpc.call("process/list", {}))["result"] == {"processes": []}
    for method, params in [
        ("process/start", {"processId": "x", "argv": ["true"]}),
        ("process/write", {"processId": "x", "chunk": ""}),
        ("process/signal", {"processId": "x", "signal": "kill"}),
        ("process/terminate", {"processId": "x"}),
    ]:
        err = (await rpc.call(method, params))["error"]
        assert (
            err["code"] == -32600
            and err["message"]
            == f"permission denied: {method} needs the execute permission on exec"
        )
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            "api",
            "exec",
            "processes",
            method="POST",
            body=json.dumps({"processId": "x", "argv": ["true"]}),
        )
    assert info.value.code == 403
    assert json.loads((await jp_fetch("api", "exec", "processes")).body) == []  # reads still work
    rpc.ws.close()


async def test_traits_reach_the_daemon_config(jp_serverapp, tmp_path):
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_exec"]
    config = app.link.config
    assert (config.max_processes, config.retained_bytes_per_process) == (3, 4096)
    assert (config.log_bytes_per_process, config.exited_retention_seconds) == (0, 1.5)
    assert config.root_dir == tmp_path.resolve() and config.log_dir == tmp_path / "exec-logs"
    assert config.default_lifetime == "connection"
    assert app.link.runtime_dir == Path(jp_serverapp.runtime_dir)
