"""Authorization with resource `exec`, and the config traits taking effect."""

from __future__ import annotations

import json
import os
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
            "max_processes": 3,
            "default_lifetime": "connection",
            "confine_to_root": True,
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


async def test_traits_are_this_servers_rules(jp_serverapp, tmp_path):
    """SPEC 3: the traits become the rules this server sends with its connections."""
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_exec"]
    rules = app.link.rules
    assert (rules.max_processes, rules.default_lifetime, rules.confine_to_root) == (
        3,
        "connection",
        True,
    )
    assert rules.root_dir == tmp_path.resolve()
    assert rules.name == f"Jupyter server {jp_serverapp.connection_url}"
    assert rules.env == dict(os.environ)  # this server's environment, not the daemon's
    assert app.link.runtime_dir == Path(jp_serverapp.runtime_dir)
