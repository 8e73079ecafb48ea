"""The credential broker's rules (core/credential_broker.py), as recorded from Codex 0.171.

End to end (a real child, the proxy's TLS, Codex's own server side by side):
tests/core/test_mitm.py and tests/codex/test_differential_credentials.py.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from jupyter_exec.core.credential_broker import (
    BROKER_ACTIVE,
    BROKERED_CREDENTIALS,
    Broker,
    Provider,
)

B36 = "A1b2C3d4E5" * 3 + "f6G7h8"


@pytest.mark.parametrize(
    ("name", "value", "shape"),
    [  # what Codex's server gave each (docs/codex.md)
        ("GH_TOKEN", "ghp_short", r"ghp_masked[A-Za-z0-9]{30}"),
        ("GITHUB_TOKEN", "ghs_" + B36, r"ghs_masked[A-Za-z0-9]{30}"),
        ("GH_TOKEN", "gho_" + B36 + "x", r"gho_masked[A-Za-z0-9]{31}"),
        ("GITHUB_TOKEN", "github_pat_short", r"github_pat_masked[A-Za-z0-9]{23}"),
        ("GH_TOKEN", "v1.abcdef0123456789abcdef0123456789abcdef01", r"ghp_masked[A-Za-z0-9]{33}"),
        ("GH_TOKEN", " ghp_" + B36 + " ", r"ghp_masked[A-Za-z0-9]{30}"),
        ("OPENAI_API_KEY", "sk-ant-xyz", r"sk-masked[A-Za-z0-9]{42}"),
        ("OPENAI_API_KEY", "sess-abc", r"sk-masked[A-Za-z0-9]{42}"),
        ("OPENAI_API_KEY", "sk-proj-x", r"sk-proj-masked[A-Za-z0-9]{37}"),
        ("OPENAI_API_KEY", "sk-admin-abc", r"sk-admin-masked[A-Za-z0-9]{36}"),
    ],
)
def test_built_in_dummies_keep_the_kind_and_the_length(name: str, value: str, shape: str) -> None:
    masked = Broker().mask({name: value})
    assert re.fullmatch(shape, masked[name]), masked[name]
    assert masked[BROKER_ACTIVE] == "1"


def test_what_is_not_masked() -> None:
    env = {"GH_ENTERPRISE_TOKEN": "ghu_" + B36, "CODEX_API_KEY": "sk-abcdef",
           "AZURE_OPENAI_API_KEY": "sk-abcdef", "PATH": "/usr/bin", "GH_TOKEN": ""}  # fmt: skip
    masked = Broker().mask(env)
    assert {k: masked[k] for k in env} == env
    assert json.loads(masked[BROKERED_CREDENTIALS]) == []


def test_enterprise_tokens_with_a_host() -> None:
    broker = Broker()
    masked = broker.mask({"GH_ENTERPRISE_TOKEN": "ghp_" + B36, "GH_HOST": "git.corp.test"})
    assert masked["GH_ENTERPRISE_TOKEN"].startswith("ghp_masked")
    assert broker.covers("git.corp.test", 443) and not broker.covers("github.com", 443)


def test_a_real_value_inside_another_variable_is_masked_and_listed_as_an_alias() -> None:
    token = "ghp_" + B36
    masked = Broker().mask({"GITHUB_TOKEN": token, "URL": f"https://x:{token}@github.com/r"})
    dummy = masked["GITHUB_TOKEN"]
    assert masked["URL"] == f"https://x:{dummy}@github.com/r"
    assert json.loads(masked[BROKERED_CREDENTIALS]) == [
        ["@alias:GITHUB_TOKEN", dummy], ["@alias:URL", dummy], ["GITHUB_TOKEN", dummy],
    ]  # fmt: skip


def test_the_real_value_goes_only_to_its_providers_prefixes_in_its_forms() -> None:
    token = "ghp_" + B36
    broker = Broker()
    dummy = broker.mask({"GITHUB_TOKEN": token})["GITHUB_TOKEN"]
    basic = base64.b64encode(f"x-access-token:{dummy}".encode()).decode()
    headers = [("Authorization", f"Bearer {dummy}"), ("X-Other", dummy)]
    assert broker.rewrite("https://api.github.com/user", headers) == [
        ("Authorization", f"Bearer {token}"), ("X-Other", dummy),
    ]  # fmt: skip
    assert broker.rewrite("https://evil.test/", headers) == headers
    ((_, value),) = broker.rewrite(
        "https://github.com/o/r.git", [("authorization", f"Basic {basic}")]
    )
    assert base64.b64decode(value.split()[1]).decode() == f"x-access-token:{token}"
    assert broker.rewrite("https://api.github.com/", [("Authorization", f"token {dummy}")]) == [
        ("Authorization", f"token {token}")
    ]
    assert broker.covers("api.github.com", 443) and not broker.covers("api.github.com", 8443)


def test_a_custom_header_provider() -> None:
    provider = Provider("mine", env=("K",), patterns=(re.compile(r"k_[a-z]{12}"),),
                        url_prefixes=("https://api.test/v1/",), auth=("header",),
                        header="x-api-key", prefix="Key ")  # fmt: skip
    broker = Broker([provider])
    dummy = broker.mask({"K": "k_secretsecret"})["K"]
    assert re.fullmatch(r"k_[a-z]{12}", dummy) and dummy != "k_secretsecret"
    headers = [("X-Api-Key", f"Key {dummy}"), ("Authorization", f"Bearer {dummy}")]
    assert broker.rewrite("https://api.test/v1/x", headers) == [
        ("X-Api-Key", "Key k_secretsecret"), ("Authorization", f"Bearer {dummy}"),
    ]  # fmt: skip
    assert broker.rewrite("https://api.test/v2/x", headers) == headers


def test_a_value_keeps_its_dummy_from_command_to_command() -> None:
    """As Codex's server: a tool that cached the dummy still has a valid one."""
    env = {"GITHUB_TOKEN": "ghp_" + B36, "GH_TOKEN": "gho_" + B36}
    first, second = Broker().mask(env), Broker().mask(env)
    assert first["GITHUB_TOKEN"] == second["GITHUB_TOKEN"] != first["GH_TOKEN"]
    assert Broker().mask({"GITHUB_TOKEN": "ghp_other"})["GITHUB_TOKEN"] != first["GITHUB_TOKEN"]


def test_one_token_in_two_variables_is_masked_in_both() -> None:
    token = "ghp_" + B36
    masked = Broker().mask({"GITHUB_TOKEN": token, "GH_TOKEN": token})
    assert masked["GITHUB_TOKEN"].startswith("ghp_masked")
    assert masked["GH_TOKEN"].startswith("ghp_masked")
    assert token not in json.dumps(masked)
