"""Codex's own exec-server and ours mask a command's credentials alike (``credentialMasking``).

The same sandboxed ``process/start`` with ``networkProxy.proxy.credentialMasking``
goes to both, with GitHub's and OpenAI's credentials and custom providers'
keys in its ``env``; the command is ``bash -c`` (Codex's server masks that form
only: recorded in docs/codex.md). It prints its
environment, dummies reduced to their shape (``ghp_masked<30>``, ``<dummy of
46>``) and the CA bundle's path to a name, then makes HTTPS requests through
the proxy to two local echo servers, one under the custom providers'
``url_prefixes``: which certificate it saw, what a POST got, and whether each
server received the real value or the dummy. Compared with that: every
``network/policyDecision``. Both servers trust the echo servers' test
authority through ``SSL_CERT_FILE``, as they trust the system's.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import shlex
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.core import mitm

from ..rpc.echo_server import EchoServer, echo_server
from .differential import Pair, Side
from .test_differential_network import behind_proxy, settings
from .test_differential_transparent_tcp import sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GITHUB = "ghp_" + "Realtoken2" * 3 + "abcdef"
SECRETS = {
    "GH_TOKEN": "gho_" + "Realtoken1" * 3 + "abcdef",
    "GITHUB_TOKEN": GITHUB,
    "OPENAI_API_KEY": "sk-proj-" + "RealKey3" * 6,
    "GH_ENTERPRISE_TOKEN": "ghp_" + "Enterprise" * 3 + "abcdef",  # no GH_HOST: left alone
    "CLONE_URL": f"https://x-access-token:{GITHUB}@github.com/o/r.git",  # masked inside
    "MY_API_KEY": "mykey_" + "Real4" * 8,
    "MY_HEADER_KEY": "hdr_" + "real5" * 4,
    "MY_IGNORED_KEY": "ign_" + "real6" * 4,  # its provider is invalid: left alone
    "MY_ODD_KEY": "something else",  # does not match its pattern: left alone
}
PATTERNS = {"MY_API_KEY": "mykey_[A-Za-z0-9]{40}", "MY_HEADER_KEY": "hdr_[a-z0-9]{20}",
            "MY_IGNORED_KEY": "ign_[a-z0-9]{20}", "MY_ODD_KEY": "odd_[a-z]+"}  # fmt: skip
SHOW = r"""
import json, os, re, sys, urllib.error, urllib.request
real, patterns = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def shape(name, text):
    if name in patterns:
        fits = text != real[name] and re.fullmatch(patterns[name], text)
        return f"<dummy of {len(text)}>" if fits else "real" if text == real[name] else text
    for other in patterns:  # a custom dummy is random: its name stands for it
        if os.environ[other] != real[other]:
            text = text.replace(os.environ[other], f"<dummy {other}>")
    text = re.sub(r"(masked)([A-Za-z0-9]+)", lambda m: f"masked<{len(m.group(2))}>", text)
    return re.sub(r"/[^ ,\"]*/ca-bundle-[0-9a-f]{64}\.pem", "<bundle>", text)
for name in sorted(os.environ):
    if re.search("CODEX_NETWORK|CERT|CA_|CAFILE|CAINFO|TOKEN|KEY|URL", name):
        print(name, shape(name, os.environ[name]))
for url in sys.argv[3:]:
    request = urllib.request.Request(url + "/echo", headers={
        "Authorization": "Bearer " + os.environ["MY_API_KEY"],
        "X-Api-Key": "Key " + os.environ["MY_HEADER_KEY"]})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            issuer = dict(x[0] for x in answer.fp.raw._sock.getpeercert()["issuer"])
            got = json.load(answer)["headers"]
        print("certificate from", "the test authority" if "test" in issuer["commonName"]
              else "the proxy")
    except Exception as exc:
        got = {"error": type(exc).__name__}
    post = urllib.request.Request(url + "/echo", data=b"x", method="POST")
    try:
        with urllib.request.urlopen(post, timeout=30) as answer:
            print("POST", answer.status)
    except urllib.error.HTTPError as exc:
        print("POST", exc.code, exc.headers.get("x-proxy-error"), exc.read())
    except Exception as exc:
        print("POST", type(exc).__name__)
    for header, name, before in (("authorization", "MY_API_KEY", "Bearer "),
                                 ("x-api-key", "MY_HEADER_KEY", "Key ")):
        value = got.get(header, got.get("error"))
        seen = ("real" if value == before + real[name] else
                "dummy" if value == before + os.environ[name] else value)
        print("sent", header, "to provider" if url == sys.argv[3] else "elsewhere", seen)
"""
STARTS = itertools.count(1)


@pytest.fixture(scope="module")
def authority() -> mitm.Authority:
    return mitm.Authority("the echo servers' test authority")


@pytest.fixture(scope="module")
def server_environment(
    authority: mitm.Authority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Both servers trust the system's roots and the echo servers' test authority."""
    bundle = tmp_path_factory.mktemp("trust") / "bundle.pem"
    system = ssl.get_default_verify_paths().cafile or ""
    bundle.write_bytes((Path(system).read_bytes() if system else b"") + authority.pem)
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(bundle)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = old


@pytest.fixture(scope="module")
def webs(authority: mitm.Authority) -> Iterator[tuple[EchoServer, EchoServer]]:
    context = authority.context_for("localhost")
    with echo_server(context) as provider, echo_server(context) as other:
        yield provider, other


def masked_run(side: Side, process_id: str, proxy: dict[str, Any], urls: list[str]) -> Any:
    """SHOW behind `proxy` on `side`, as ``bash -c`` (what Codex sends without a login
    shell: the one form its server masks), its output and the proxy's decisions."""
    arguments = [SHOW, json.dumps(SECRETS), json.dumps(PATTERNS), *urls]
    command = shlex.join([sys.executable, "-c", *arguments])
    extra = {"env": {"PATH": os.environ["PATH"], **SECRETS}, "sandbox": sandbox(side),
             "argv": ["/bin/bash", "-c", command]}  # fmt: skip
    return behind_proxy(side, process_id, proxy, [], ask=False, extra=extra)


def providers(url: str) -> dict[str, Any]:
    prefix = [f"{url}/"]
    return {
        "mine": {"env": ["MY_API_KEY"], "patterns": [PATTERNS["MY_API_KEY"]], "url_prefixes": prefix},
        "by-header": {"env": ["MY_HEADER_KEY"], "patterns": [PATTERNS["MY_HEADER_KEY"]],
                      "url_prefixes": prefix, "auth": ["header"], "header": "x-api-key",
                      "prefix": "Key "},
        "ignored": {"env": ["MY_IGNORED_KEY"], "patterns": [PATTERNS["MY_IGNORED_KEY"]],
                    "url_prefixes": prefix, "header": "x-api-key"},  # header without auth
        "odd": {"env": ["MY_ODD_KEY"], "patterns": [PATTERNS["MY_ODD_KEY"]], "url_prefixes": prefix},
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["full", "limited"])
def test_credentials_masked_alike(
    pair: Pair, webs: tuple[EchoServer, EchoServer], mode: str
) -> None:
    provider, other = webs
    proxy = {**settings(mode, {"localhost": "allow"}), "enableSocks5": True,
             "credentialMasking": True, "credentialProviders": providers(provider.url)}  # fmt: skip
    process_id = f"mask-{next(STARTS)}"
    codex = masked_run(pair.codex, process_id, proxy, [provider.url, other.url])
    ours = masked_run(pair.ours, process_id, proxy, [provider.url, other.url])
    diff = difflib.unified_diff(codex["output"], ours["output"], "codex", "ours", lineterm="")
    assert ours == codex, "\n".join(diff)
    if mode == "limited":
        return
    for line in ("GITHUB_TOKEN ghp_masked<30>", "MY_API_KEY <dummy of 46>",
                 "MY_IGNORED_KEY real", "sent authorization to provider real",
                 "sent authorization elsewhere dummy", "sent x-api-key to provider real"):  # fmt: skip
        assert line in ours["output"], ours


@pytest.mark.parametrize(
    ("providers", "code"),
    [
        ({"x": {"env": ["A"], "colour": "red"}}, -32602),
        ({"x": {"env": ["A"], "auth": ["magic"]}}, -32602),
        ({"x": {"env": "A"}}, -32602),
        # a pattern that does not compile: the provider is ignored, the start runs
        ({"x": {"env": ["A"], "patterns": ["("], "url_prefixes": ["https://a.test/"]}}, None),
    ],
)
def test_bad_providers_are_refused_alike(pair: Pair, providers: Any, code: int | None) -> None:
    proxy = {**settings("full", {}), "credentialMasking": True, "credentialProviders": providers}
    for side in (pair.codex, pair.ours):
        params = {"processId": f"bad-{next(STARTS)}", "argv": ["/bin/true"],
                  "cwd": side.workspaces.as_uri(), "env": {}, "tty": False, "arg0": None,
                  "networkProxy": {"proxy": proxy}, "sandbox": sandbox(side)}  # fmt: skip
        answer = side.client.request("process/start", params)
        assert answer.get("error", {}).get("code") == code, answer
