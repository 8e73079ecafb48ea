"""The real Codex's managed network runs through our proxy (``networkProxy``).

With ``features.network_proxy`` and a workspace-write sandbox with network
access, Codex 0.171 sends ``networkProxy`` on each ``process/start`` to a
server that advertises ``networkProxyLaunch`` (``domains: null``, no
``policyDecisionTimeoutMs``). The command then has the proxy's environment,
and a host its profile does not allow gets the proxy's 403, local addresses
too (the echo server on 127.0.0.1): the same as through Codex's own
exec-server, which the same test drives as the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..rpc.echo_server import EchoServer, echo_server
from .harness import Codex, stdio_environments_toml
from .model_server import ScriptedModel, exec_command, tool_outputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FETCH = """python3 -c '
import http.client, os
host, port = os.environ["HTTP_PROXY"].rsplit("/", 1)[1].split(":")
print("active", os.environ["CODEX_NETWORK_PROXY_ACTIVE"])
for url in ("http://blocked.test/", "URL"):
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", url)
    answer = connection.getresponse()
    print(url, answer.status, answer.getheader("x-proxy-error"))
'"""

MANAGED_NETWORK = """
[features]
network_proxy = true

[sandbox_workspace_write]
network_access = true
"""


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


@pytest.mark.parametrize("server", ["ours", "codex"])
def test_a_command_under_codexs_managed_network(
    codex: Codex, model: ScriptedModel, tmp_path: Path, web: EchoServer, server: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    model.script([[exec_command(FETCH.replace("URL", f"{web.url}/echo"))]])
    codex.sandbox_mode = "workspace-write"
    codex.extra_config = MANAGED_NETWORK
    if server == "ours":
        codex.environments_toml = stdio_environments_toml(root)
    else:  # the reference: Codex's own exec-server, started the same way
        codex.environments_toml = f"""\
default = "jupyter"
include_local = false

[[environments]]
id = "jupyter"
program = {json.dumps(str(codex.launcher))}
args = ["exec-server", "--listen", "stdio"]
"""

    result = codex.run(root, None)

    output = tool_outputs(model.requests[-1])[0]
    assert "active 1" in output, (output, result.describe())
    assert "http://blocked.test/ 403 blocked-by-allowlist" in output, output
    assert f"{web.url}/echo 403 blocked-by-allowlist" in output, output
