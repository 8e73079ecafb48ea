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
import re
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


PRINT_SECRETS = (
    'printf \'%s\\n\' "gh=$GH_TOKEN" "github=$GITHUB_TOKEN" "openai=$OPENAI_API_KEY" '
    '"broker=$CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE" "ca=$SSL_CERT_FILE"'
)
SECRETS = {
    "GH_TOKEN": "gho_" + "Realtoken1" * 3 + "abcdef",
    "GITHUB_TOKEN": "ghp_" + "Realtoken2" * 3 + "abcdef",
    "OPENAI_API_KEY": "sk-proj-" + "RealKey3" * 6,
}


@pytest.mark.parametrize("login", [False, True])
def test_codex_gets_its_credentials_masked_through_us(
    codex: Codex, model: ScriptedModel, tmp_path: Path, login: bool
) -> None:
    """With ``credential_masking`` on, Codex asks us for it (``credentialMasking`` in the
    proxy settings, since we advertise it); the command sees only dummies of the same
    shape, and the broker's variables. Without a login shell Codex is content (no
    warning), as with its own server; with one (its default) Codex warns that masking is
    unavailable for the shell startup, as with its own server, whose command then gets
    the real values: ours masks them anyway (docs/codex.md)."""
    root = tmp_path / "root"
    root.mkdir()
    model.script([[exec_command(PRINT_SECRETS)]])
    codex.sandbox_mode = "workspace-write"
    codex.top_config = "" if login else "allow_login_shell = false\n"
    codex.extra_config = MANAGED_NETWORK.replace(
        "network_proxy = true",
        "network_proxy = true\ncredential_masking = true\nshell_snapshot_v2 = true",
    )
    codex.extra_env = dict(SECRETS)
    codex.environments_toml = stdio_environments_toml(root)

    result = codex.run(root, None)

    output = tool_outputs(model.requests[-1])[0]
    for secret in SECRETS.values():
        assert secret not in output, (output, result.describe())
    assert "gh=gho_masked" in output and "github=ghp_masked" in output, output
    assert "openai=sk-proj-masked" in output, output
    assert "broker=1" in output and "/exec-proxy/ca-bundle-" in output, output
    warned = "Credential masking is unavailable for this shell startup" in result.stdout
    assert warned == login, result.describe()


CUSTOM_PROVIDER = """
[features]
credential_masking = true

[features.network_proxy]
enabled = true

[features.network_proxy.credentials.mine]
env = ["MY_API_KEY"]
patterns = ["mykey_[A-Za-z0-9]{40}"]
url_prefixes = ["https://api.example.test/"]

[sandbox_workspace_write]
network_access = true
"""


def test_codex_sends_its_custom_providers_and_we_mask_them(
    codex: Codex, model: ScriptedModel, tmp_path: Path
) -> None:
    """A provider in Codex's ``[features.network_proxy.credentials.NAME]`` reaches us as
    ``credentialProviders`` (we advertise ``credentialMaskingCustomProviders``), and its
    variable is masked with a dummy its pattern generates."""
    root = tmp_path / "root"
    root.mkdir()
    real = "mykey_" + "Real4" * 8
    model.script([[exec_command('echo "key=$MY_API_KEY"')]])
    codex.sandbox_mode = "workspace-write"
    codex.top_config = "allow_login_shell = false\n"
    codex.extra_config = CUSTOM_PROVIDER
    codex.extra_env = {"MY_API_KEY": real}
    codex.environments_toml = stdio_environments_toml(root)

    result = codex.run(root, None)

    output = tool_outputs(model.requests[-1])[0]
    found = re.search(r"key=(\S+)", output)
    assert found is not None, (output, result.describe())
    assert found.group(1) != real and re.fullmatch(r"mykey_[A-Za-z0-9]{40}", found.group(1))
    assert "Credential masking" not in result.stdout, result.describe()
