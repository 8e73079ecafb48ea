"""Credential masking: a command sees stand-ins, the provider's hosts get the real values.

Codex's ``credentialMasking`` (``networkProxy.proxy.credentialMasking``; docs/codex.md)
asks that a command behind the managed proxy never hold the credentials in
its environment. A `Broker` is built from the command's final environment:

- each credential of a `Provider` (a variable it names in ``env``, or any
  variable whose value fully matches one of its ``patterns``) is replaced by
  a *dummy* of the same shape (`dummy_for`: the same prefix, such as
  ``ghp_`` or ``sk-proj-``, then ``masked``, then random characters of the same
  classes, the same length, matching the same patterns), so tools that check
  a token's form still take it;
- the command is told what was brokered, as Codex's broker tells it
  (`BROKER_ACTIVE`, `BROKERED_CREDENTIALS`: ``[["@alias:NAME", dummy], ...,
  ["NAME", dummy], ...]``);
- the proxy (core/network_proxy.py, core/mitm.py) opens HTTPS to a host under
  one of the provider's ``url_prefixes`` (or the URL ``url_prefix_from_env``
  names) itself, and in each request under such a prefix puts the real
  value back where the dummy stands in the provider's header (`rewrite`):
  ``Authorization: Bearer``/``token``/``Basic`` (``auth``), or ``header``
  with its ``prefix``. Anywhere else the dummy goes out as it is, so the real
  value reaches only the provider.

Built in (when ``credentialMasking`` is on, as Codex's): GitHub (``GH_TOKEN``,
``GITHUB_TOKEN`` for github.com; ``GH_ENTERPRISE_TOKEN``,
``GITHUB_ENTERPRISE_TOKEN`` for the host ``GH_HOST`` names) and OpenAI
(``OPENAI_API_KEY`` for api.openai.com and ``OPENAI_BASE_URL``). Custom ones
come with the request (``credentialProviders``) and are added to these.
Only ``https`` prefixes are served: a credential goes back only inside TLS.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..wire.errors import InvalidParamsError

__all__ = [
    "AUTH_SCHEMES",
    "BROKERED_CREDENTIALS",
    "BROKER_ACTIVE",
    "BUILTIN_PROVIDERS",
    "Broker",
    "Provider",
    "Secret",
    "dummy_for",
]

BROKER_ACTIVE = "CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE"
BROKERED_CREDENTIALS = "CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS"
#: How a credential may travel in ``Authorization``.
AUTH_SCHEMES = ("bearer", "token", "basic")
#: The token prefixes that stay in a dummy (``ghp_``, ``sk-proj-``, ``github_pat_``).
_PREFIX = re.compile(r"^(?:[A-Za-z]{1,12}[_-]){1,3}")
_MARK = "masked"
_CLASSES = (string.digits, string.ascii_lowercase, string.ascii_uppercase)
_ATTEMPTS = 32


@dataclass(frozen=True)
class Provider:
    """Where one kind of credential may go, and how it travels there."""

    name: str
    env: tuple[str, ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    url_prefixes: tuple[str, ...] = ()
    url_prefix_from_env: str | None = None
    auth: tuple[str, ...] = ()
    header: str | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        for url in self.url_prefixes:
            _check_prefix(self.name, url)
        for scheme in self.auth:
            if scheme not in AUTH_SCHEMES:
                raise InvalidParamsError(
                    f"credential provider `{self.name}`: unknown auth `{scheme}` "
                    f"(expected one of {', '.join(AUTH_SCHEMES)})"
                )

    def owns(self, name: str, value: str) -> bool:
        """Whether the variable `name` = `value` is one of this provider's credentials."""
        return bool(value) and (name in self.env or any(p.fullmatch(value) for p in self.patterns))

    def prefixes(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """Its URL prefixes for a command with `env` (``url_prefix_from_env`` added)."""
        found = list(self.url_prefixes)
        named = env.get(self.url_prefix_from_env or "", "").strip()
        if named:
            url = named if "://" in named else f"https://{named}/"
            if urlsplit(url).scheme == "https" and urlsplit(url).hostname:
                found.append(url)
        return tuple(found)


def _check_prefix(provider: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidParamsError(
            f"credential provider `{provider}`: url_prefixes must be https URLs with a "
            f"host (a credential is put back only inside TLS), got {url!r}"
        )


BUILTIN_PROVIDERS = (
    Provider(
        "github",
        env=("GH_TOKEN", "GITHUB_TOKEN"),
        url_prefixes=(
            "https://github.com/",
            "https://api.github.com/",
            "https://uploads.github.com/",
            "https://raw.githubusercontent.com/",
        ),
        auth=AUTH_SCHEMES,
    ),
    Provider(
        "github-enterprise",
        env=("GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"),
        url_prefix_from_env="GH_HOST",
        auth=AUTH_SCHEMES,
    ),
    Provider(
        "openai",
        env=("OPENAI_API_KEY",),
        url_prefixes=("https://api.openai.com/",),
        url_prefix_from_env="OPENAI_BASE_URL",
        auth=("bearer",),
    ),
)


def dummy_for(value: str, patterns: Sequence[re.Pattern[str]] = ()) -> str:
    """A stand-in of `value`'s shape: its prefix, ``masked``, then random characters of
    the same classes (digit, lower, upper; others kept), matching every pattern `value`
    matches. Raises `InvalidParamsError` when no such stand-in comes up."""
    matched = [p for p in patterns if p.fullmatch(value)]
    head = m.group(0) if (m := _PREFIX.match(value)) and len(m.group(0)) < len(value) else ""
    body = value[len(head) :]
    for attempt in range(_ATTEMPTS):
        marked = attempt < _ATTEMPTS // 2 and len(body) > len(_MARK)
        start = _MARK if marked else ""
        candidate = head + start + "".join(_like(c) for c in body[len(start) :])
        if candidate != value and all(p.fullmatch(candidate) for p in matched):
            return candidate
    raise InvalidParamsError(
        "credential pattern could not independently generate a matching dummy "
        f"(a value of {len(value)} characters)"
    )


def _like(char: str) -> str:
    for chars in _CLASSES:
        if char in chars:
            return secrets.choice(chars)
    return char


@dataclass(frozen=True)
class Secret:
    """One masked variable: its real value, its dummy, and where the real one may go."""

    name: str
    real: str
    dummy: str
    provider: Provider
    prefixes: tuple[str, ...]


@dataclass
class Broker:
    """The credentials of one command (`mask` builds it), consulted by its proxy."""

    providers: tuple[Provider, ...] = BUILTIN_PROVIDERS
    secrets: list[Secret] = field(default_factory=list)

    def mask(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with each credential replaced by its dummy, and the broker's variables."""
        masked = dict(env)
        for name, value in env.items():
            provider = next((p for p in self.providers if p.owns(name, value)), None)
            if provider is None:
                continue
            dummy = dummy_for(value, provider.patterns)
            self.secrets.append(Secret(name, value, dummy, provider, provider.prefixes(env)))
            masked[name] = dummy
        pairs = sorted(self.secrets, key=lambda s: s.name)
        listed = [[f"@alias:{s.name}", s.dummy] for s in pairs] + [[s.name, s.dummy] for s in pairs]
        masked[BROKER_ACTIVE] = "1"
        masked[BROKERED_CREDENTIALS] = json.dumps(listed, separators=(",", ":"))
        return masked

    def covers(self, host: str, port: int) -> bool:
        """Whether HTTPS to `host`:`port` is opened by the proxy (some prefix is there)."""
        return any(_origin(url) == (host.lower(), port) for s in self.secrets for url in s.prefixes)

    def rewrite(self, url: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`headers` of a request to `url`, each dummy whose provider may go there swapped
        for the real value, in that provider's header and form only."""
        due = [s for s in self.secrets if any(url.startswith(p) for p in s.prefixes)]
        if not due:
            return headers
        return [(name, _swapped(name, value, due)) for name, value in headers]


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or 443


def _swapped(name: str, value: str, due: list[Secret]) -> str:
    lower = name.lower()
    for secret in due:
        provider = secret.provider
        named = provider.header is not None and lower == provider.header.lower()
        if named and value == provider.prefix + secret.dummy:
            return provider.prefix + secret.real
        if lower != "authorization" or provider.header not in (None, "authorization"):
            continue
        scheme, _, credential = value.partition(" ")
        scheme = scheme.lower()
        schemes = provider.auth or (() if provider.header else ("bearer",))
        if scheme in schemes and scheme != "basic" and credential.strip() == secret.dummy:
            return f"{value.split(' ', 1)[0]} {secret.real}"
        if scheme == "basic" and "basic" in schemes:
            swapped = _basic(credential.strip(), secret)
            if swapped is not None:
                return f"{value.split(' ', 1)[0]} {swapped}"
    return value


def _basic(encoded: str, secret: Secret) -> str | None:
    """A Basic credential with the dummy as user or password, re-encoded with the real one."""
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep or secret.dummy not in (user, password):
        return None
    user = secret.real if user == secret.dummy else user
    password = secret.real if password == secret.dummy else password
    return base64.b64encode(f"{user}:{password}".encode()).decode()
