"""Credential masking end to end (core/mitm.py, core/credential_broker.py, rpc/network_proxy.py).

A real child behind a masking proxy holds only dummies; it makes HTTPS
requests (``urllib``, and ``http.client`` for several requests on one
connection, a chunked body among them) to two local HTTPS echo servers whose
certificate a test authority signed (the daemon trusts it through
``SSL_CERT_FILE``, the child through the bundle the proxy names). One is a
custom provider's prefix: it must get the real value. The other must get
the dummy. The child's output must never hold a real value it did not get
echoed from the provider.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core import mitm
from jupyter_exec.core.credential_broker import (
    BROKER_ACTIVE,
    BROKERED_CREDENTIALS,
    Broker,
    Provider,
)
from jupyter_exec.core.network_proxy import NetworkProxy, ProxyPolicy

from ..rpc.echo_server import EchoServer, echo_server
from ..service import RawPeer, connected, py

REAL_KEY = "sk-custom-" + "R" * 32
KEY_PATTERN = "sk-custom-[A-Z]{32}"
REAL_GITHUB = "ghp_" + "a1B2c3D4e5" * 3 + "Zz9yXw"

FETCH = r"""
import base64, http.client, json, os, sys, urllib.request
key, gh = os.environ["MY_API_KEY"], os.environ["GITHUB_TOKEN"]
print("env", json.dumps({k: os.environ.get(k) for k in
      ["MY_API_KEY", "GITHUB_TOKEN", "CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE",
       "CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS", "SSL_CERT_FILE"]}), flush=True)
for url in sys.argv[1:]:
    request = urllib.request.Request(url + "/echo", headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(request, timeout=30) as answer:
        print("urllib", url, json.load(answer)["headers"]["authorization"], flush=True)
# Several requests on one connection through the proxy: framing must hold.
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[1].split(":")
host, port = sys.argv[1].split("//")[1].split(":")
import ssl
connection = http.client.HTTPSConnection(proxy[0], int(proxy[1]), timeout=30,
                                         context=ssl.create_default_context())
connection.set_tunnel(host, int(port))
def chunks():
    yield b"first,"
    yield b"second"
for method, body, auth in [("POST", chunks(), "Bearer " + key), ("GET", None, "token " + gh),
                           ("PUT", b"x" * 300000, "Bearer " + key)]:
    headers = {"Authorization": auth}
    if body is not None and not isinstance(body, bytes):
        headers["Transfer-Encoding"] = "chunked"
    connection.request(method, "/echo", body=body, headers=headers,
                       encode_chunked=not isinstance(body, (bytes, type(None))))
    echoed = json.load(connection.getresponse())
    print("kept", method, echoed["headers"]["authorization"],
          len(base64.b64decode(echoed["bodyBase64"])), flush=True)
"""


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EchoServer, EchoServer, Path]]:
    """Two HTTPS echo servers for `localhost` and the file of the authority that signed them."""
    authority = mitm.Authority()  # a test authority, not the process's own
    folder = tmp_path_factory.mktemp("tls")
    ca = folder / "test-ca.pem"
    ca.write_bytes(authority.pem)
    with (
        echo_server(authority.context_for("localhost")) as provider,
        echo_server(authority.context_for("localhost")) as other,
    ):
        yield provider, other, ca


def proxy_settings(**overrides: Any) -> dict[str, Any]:
    proxy = {"enabled": True, "enableSocks5": False, "enableSocks5Udp": False,
             "allowUpstreamProxy": False, "dangerouslyAllowAllUnixSockets": False,
             "mode": "full", "domains": {"localhost": "allow"}, "unixSockets": None,
             "allowLocalBinding": False, "credentialMasking": True}  # fmt: skip
    return {**proxy, **overrides}


async def output_of(peer: RawPeer, start: dict[str, Any]) -> str:
    reply = await peer.call("process/start", start)
    assert "result" in reply, reply
    output = b""
    pending = list(peer.seen)
    while True:
        message = pending.pop(0) if pending else await peer.recv(60)
        if message.get("method") == "process/output":
            output += base64.b64decode(message["params"]["chunk"])
        elif message.get("method") == "process/closed":
            return output.decode()


def start_of(provider: EchoServer, other: EchoServer, **extra: Any) -> dict[str, Any]:
    providers = {"mine": {"env": ["MY_API_KEY"], "patterns": [KEY_PATTERN],
                          "url_prefixes": [f"{provider.url}/"]}}  # fmt: skip
    return {
        "processId": "fetch",
        "argv": [*py(FETCH), provider.url, other.url],
        "env": {"MY_API_KEY": REAL_KEY, "GITHUB_TOKEN": REAL_GITHUB},
        "networkProxy": {"proxy": proxy_settings(credentialProviders=providers)},
        **extra,
    }


def check(output: str, provider: EchoServer, other: EchoServer) -> None:
    lines = output.splitlines()
    env = json.loads(lines[0].removeprefix("env "))
    dummy, gh_dummy = env["MY_API_KEY"], env["GITHUB_TOKEN"]
    assert re.fullmatch(KEY_PATTERN, dummy) and dummy != REAL_KEY
    assert gh_dummy.startswith("ghp_masked") and len(gh_dummy) == len(REAL_GITHUB)
    assert env[BROKER_ACTIVE] == "1"
    assert json.loads(env[BROKERED_CREDENTIALS]) == [
        ["@alias:GITHUB_TOKEN", gh_dummy], ["@alias:MY_API_KEY", dummy],
        ["GITHUB_TOKEN", gh_dummy], ["MY_API_KEY", dummy],
    ]  # fmt: skip
    assert Path(env["SSL_CERT_FILE"]).read_bytes().endswith(mitm.authority().pem)
    assert lines[1:] == [
        f"urllib {provider.url} Bearer {REAL_KEY}",  # the provider got the real value
        f"urllib {other.url} Bearer {dummy}",  # anywhere else: the dummy
        f"kept POST Bearer {REAL_KEY} 12",  # a chunked body, then the next request
        f"kept GET token {gh_dummy} 0",  # GitHub's token is not this provider's
        f"kept PUT Bearer {REAL_KEY} 300000",
    ]
    assert REAL_GITHUB not in output


@pytest.fixture
def trusted(servers: tuple[EchoServer, EchoServer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon trusts the test authority as it trusts the system's (``SSL_CERT_FILE``)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(servers[2]))


@pytest.mark.usefixtures("trusted")
async def test_the_provider_gets_the_real_value_and_nobody_else_does(
    tmp_path: Path, servers: tuple[EchoServer, EchoServer, Path]
) -> None:
    provider, other, _ = servers
    async with connected(tmp_path) as peer:
        output = await output_of(peer, start_of(provider, other))
    check(output, provider, other)


@pytest.mark.usefixtures("trusted")
async def test_masked_inside_a_sandbox(
    tmp_path: Path, servers: tuple[EchoServer, EchoServer, Path]
) -> None:
    """A sandboxed child reaches the proxy in its own network namespace and reads the bundle
    under Jupyter's data dir, which it cannot write."""
    provider, other, _ = servers
    sandbox = {"mode": "workspace-write", "network": True}
    async with connected(tmp_path) as peer:
        output = await output_of(peer, start_of(provider, other, sandbox=sandbox))
    check(output, provider, other)
    bundle = mitm.authority().bundle()
    probe = {"processId": "probe", "sandbox": sandbox,
             "argv": py(f"open({str(bundle)!r}, 'a').write('x')")}  # fmt: skip
    async with connected(tmp_path) as peer:
        written = await output_of(peer, probe)
    assert "PermissionError" in written or "Read-only file system" in written, written


async def test_masking_off_leaves_the_environment_alone(tmp_path: Path) -> None:
    script = "import os; print(os.environ['GH_TOKEN'], 'SSL_CERT_FILE' in os.environ)"
    start = {"processId": "p", "argv": py(script), "env": {"GH_TOKEN": "gho_" + "k" * 36},
             "networkProxy": {"proxy": proxy_settings(credentialMasking=False)}}  # fmt: skip
    async with connected(tmp_path) as peer:
        output = await output_of(peer, start)
    assert output.split() == ["gho_" + "k" * 36, "False"]


async def test_inherited_and_policy_environments_are_masked_too(tmp_path: Path) -> None:
    """The command's final environment: the front's base through ``envPolicy``."""
    os.environ["OPENAI_API_KEY"] = real = "sk-proj-" + "Q" * 40
    try:
        script = "import os; print(os.environ['OPENAI_API_KEY'])"
        start = {"processId": "p", "argv": py(script),
                 "envPolicy": {"inherit": "all", "ignoreDefaultExcludes": True, "exclude": [],
                               "set": {}, "includeOnly": []},
                 "networkProxy": {"proxy": proxy_settings()}}  # fmt: skip
        async with connected(tmp_path) as peer:
            output = await output_of(peer, start)
    finally:
        del os.environ["OPENAI_API_KEY"]
    assert output.strip().startswith("sk-proj-masked") and real not in output


@pytest.mark.parametrize(
    ("providers", "words"),
    [
        ({"x": {"env": ["A"], "colour": "red"}}, "colour"),
        ({"x": {"env": ["A"], "auth": ["magic"]}}, "auth"),
        ({"x": {"env": "A"}}, "env"),
    ],
)
async def test_bad_providers_start_nothing(tmp_path: Path, providers: Any, words: str) -> None:
    start = {"processId": "p", "argv": py("pass"),
             "networkProxy": {"proxy": proxy_settings(credentialProviders=providers)}}  # fmt: skip
    async with connected(tmp_path) as peer:
        reply = await peer.call("process/start", start)
        assert reply["error"]["code"] == -32602 and words in reply["error"]["message"], reply
        assert (await peer.call("process/list", {}))["result"]["processes"] == []


@pytest.mark.parametrize(
    "provider",
    [
        {"env": ["S"], "patterns": ["s_[a-z]+"], "url_prefixes": ["http://plain.test/"]},
        {"env": ["S"], "patterns": ["s_[a-z]+"]},  # nowhere to go
        {
            "env": ["S"],
            "patterns": ["s_[a-z]+"],
            "url_prefixes": ["https://a.test/"],
            "header": "x-key",
        },  # a header without auth "header"
        {
            "env": ["S", "GH_TOKEN"],
            "patterns": ["s_[a-z]+"],
            "url_prefixes": ["https://a.test/"],
        },  # GH_TOKEN is GitHub's
        {"env": ["S"], "patterns": ["s_[a-z]+_exact"], "url_prefixes": ["https://a.test/"]},
        {"env": ["S"], "patterns": ["s_secret"], "url_prefixes": ["https://a.test/"]},
        {"env": ["S"], "patterns": ["("], "url_prefixes": ["https://a.test/"]},
    ],
)
async def test_what_codex_ignores_is_left_as_it_is(
    tmp_path: Path, provider: dict[str, Any]
) -> None:
    """An invalid provider, a value its patterns do not match, or one no other value of
    the pattern can stand for: the variable is not masked, as Codex's server leaves it."""
    script = "import os; print(os.environ['S'], os.environ['GH_TOKEN'][:10])"
    start = {"processId": "p", "argv": py(script), "env": {"S": "s_secret", "GH_TOKEN": "x"},
             "networkProxy": {"proxy": proxy_settings(credentialProviders={"x": provider})}}  # fmt: skip
    async with connected(tmp_path) as peer:
        output = await output_of(peer, start)
    assert output.split() == ["s_secret", "ghp_masked"]


async def test_advertised(tmp_path: Path) -> None:
    async with connected(tmp_path) as peer:
        caps = (await peer.call("environment/info"))["result"]["capabilities"]
    assert caps["credentialMasking"] is True and caps["credentialMaskingCustomProviders"] is True


async def test_a_profile_exported_credential_is_masked_in_the_snapshot(tmp_path: Path) -> None:
    """A login profile that exports a token (from a file, say): with ``shellSnapshot`` the
    profile runs once, in the capture, and what the command gets is the replayed
    environment, masked like the rest."""
    home = tmp_path / "home"
    home.mkdir()
    token = "ghp_" + "Profile123" * 3 + "abcdef"
    (home / ".bash_profile").write_text(f"export GITHUB_TOKEN={token}\n")
    start = {
        "processId": "p", "argv": ["/bin/bash", "-lc", 'echo "token=$GITHUB_TOKEN"'],
        "env": {"HOME": str(home), "PATH": os.environ["PATH"]},
        "shellSnapshot": {"scopeId": "thread:env", "shell": {"name": "bash", "path": "/bin/bash"}},
        "networkProxy": {"proxy": proxy_settings()},
    }  # fmt: skip
    async with connected(tmp_path) as peer:
        output = await output_of(peer, start)
    assert output.startswith("token=ghp_masked") and token not in output, output


async def test_through_socks5_too(
    servers: tuple[EchoServer, EchoServer, Path], trusted: None
) -> None:
    """A SOCKS5 connect to a provider's host (``enableSocks5``, and the transparent TCP
    relay's way in) is opened by the proxy like a CONNECT."""
    provider, _, _ = servers
    port = int(provider.url.rsplit(":", 1)[1])
    policy = ProxyPolicy(mode="full", allowed=["localhost"])
    proxy = NetworkProxy(policy, None, lambda decision: None, socks5=True)
    pattern = re.compile(KEY_PATTERN)
    mine = Provider("mine", env=("K",), patterns=(pattern,), url_prefixes=(f"{provider.url}/",))
    proxy.broker = Broker([mine])
    dummy = proxy.broker.mask({"K": REAL_KEY})["K"]
    await proxy.start()
    try:
        context = ssl.create_default_context(cafile=str(mitm.authority().bundle()))
        echoed = await asyncio.to_thread(_socks5_get, proxy.socks_port, port, dummy, context)
    finally:
        await proxy.aclose()
    assert echoed["headers"]["authorization"] == f"Bearer {REAL_KEY}"


def _socks5_get(socks_port: int, port: int, dummy: str, context: ssl.SSLContext) -> Any:
    with socket.create_connection(("127.0.0.1", socks_port), timeout=30) as raw:
        raw.sendall(b"\x05\x01\x00")
        assert raw.recv(2) == b"\x05\x00"
        raw.sendall(b"\x05\x01\x00\x03\x09localhost" + struct.pack(">H", port))
        assert raw.recv(10)[:2] == b"\x05\x00"
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            request = f"GET /echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {dummy}\r\n"
            tls.sendall((request + "Connection: close\r\n\r\n").encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def test_the_bundle_holds_the_system_roots_and_survives_an_unwritable_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(mitm.Authority("some root").pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(roots))
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(blocker / "jupyter"))
    authority = mitm.Authority()
    bundle = authority.bundle()
    assert bundle.read_bytes() == roots.read_bytes().rstrip(b"\n") + b"\n" + authority.pem
    assert not str(bundle).startswith(str(blocker)) and oct(bundle.stat().st_mode)[-3:] == "644"
    assert authority.bundle() == bundle  # written once
    os.unlink(bundle)
    os.rmdir(bundle.parent)


SMUGGLED = (
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
    "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # two framings: which one ends it?
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n",
    "GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\nContent-Length: 9\r\n\r\n",
    "GET /echo HTTP/1.1\r\nHost : localhost\r\n\r\n",
    "GET /echo HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
)


@pytest.mark.parametrize("first", SMUGGLED)
async def test_framing_in_doubt_ends_the_connection(
    servers: tuple[EchoServer, EchoServer, Path], trusted: None, first: str
) -> None:
    """Where the proxy's reading of a request and the server's could differ, a header the
    proxy puts the real value into could be the body of another request to the server
    (and come back to the command): such a connection is closed before anything of it
    goes on."""
    provider, _, _ = servers
    port = int(provider.url.rsplit(":", 1)[1])
    proxy = NetworkProxy(ProxyPolicy(mode="full", allowed=["localhost"]), None, lambda d: None)
    mine = Provider("mine", env=("K",), patterns=(re.compile(KEY_PATTERN),),
                    url_prefixes=(f"{provider.url}/",))  # fmt: skip
    proxy.broker = Broker([mine])
    dummy = proxy.broker.mask({"K": REAL_KEY})["K"]
    second = f"GET /echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {dummy}\r\n\r\n"
    await proxy.start()
    try:
        context = ssl.create_default_context(cafile=str(mitm.authority().bundle()))
        answer = await asyncio.to_thread(_tunnel, proxy.port, port, first + second, context)
    finally:
        await proxy.aclose()
    assert answer == b""  # nothing was forwarded, so nothing came back
    assert REAL_KEY.encode() not in answer


def _tunnel(proxy_port: int, port: int, payload: str, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=30) as raw:
        raw.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload.encode())
            answer = b""
            try:
                while chunk := tls.recv(65536):
                    answer += chunk
            except (ssl.SSLError, OSError):
                pass
    return answer


def test_a_bundle_unused_for_a_week_is_removed_when_another_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each daemon has its own authority, so its own bundle: old ones must not pile up,
    and one still in use (touched at each use) stays."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    gone, in_use = mitm.Authority().bundle(), mitm.Authority()
    week_ago = time.time() - mitm.STALE_BUNDLE - 60
    for path in (gone, in_use.bundle()):
        os.utime(path, (week_ago, week_ago))
    kept = in_use.bundle()  # given to a command again: touched
    fresh = mitm.Authority().bundle()
    assert fresh.exists() and kept.exists() and not gone.exists()
