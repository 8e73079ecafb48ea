"""Credential masking: a command sees stand-ins, the provider's hosts get the real values.

Codex's ``credentialMasking`` (``networkProxy.proxy.credentialMasking``) asks
that a command behind the managed proxy never hold its credentials. A `Broker`
is built from the command's final environment, by the rules Codex 0.171's
own exec-server follows (recorded in docs/codex.md):

- **built in** (`BUILTIN_PROVIDERS`): ``GH_TOKEN`` and ``GITHUB_TOKEN`` (any
  value), ``GH_ENTERPRISE_TOKEN`` and ``GITHUB_ENTERPRISE_TOKEN`` (only with
  ``GH_HOST`` naming the host they are for), ``OPENAI_API_KEY``. The dummy
  keeps the token's kind (``ghp_``, ``gho_``, ``github_pat_``, ``sk-proj-``,
  ...), then ``masked``, then random letters and digits, as long as the real
  value and at least as long as a real token (40 for GitHub, 51 for OpenAI);
- **custom** (``credentialProviders``): a provider counts only with ``env``,
  ``patterns`` and somewhere to go (``url_prefixes``, all ``https``, or a
  ``url_prefix_from_env`` that is set), a ``header`` exactly when ``auth``
  has ``"header"`` (``prefix`` only with it), and no variable another
  provider already has; any other is ignored (logged), as Codex ignores it.
  A variable is masked when its value matches one of the patterns; the dummy
  is a fresh string the pattern generates (``rstr``). A value no distinct
  dummy can be made for stays as it is, as with Codex;
- values are trimmed, and a real value found inside any other variable is
  replaced there too;
- a value gets the same dummy on every command while the daemon runs (Codex's
  server keeps them too), so a tool that cached one still has it; the cache is
  keyed by an HMAC of the value under a key of this process, never the value;
- the command is told what was brokered (`BROKER_ACTIVE`, and
  `BROKERED_CREDENTIALS`: ``[["@alias:NAME", dummy], ..., ["NAME", dummy],
  ...]``: an alias for every variable a dummy was put in, by name, then each
  masked credential).

The proxy (core/network_proxy.py, core/mitm.py) then opens HTTPS itself to
the hosts where a credential may go and, in each request under one of its
provider's prefixes, puts the real value back where the dummy stands
(`Broker.rewrite`): ``Authorization: Bearer``, ``token`` or ``Basic``
(``auth``; Bearer when none is named), or ``header`` with its ``prefix``.
Anywhere else the dummy goes out as it is, so the real value reaches only
the provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import random
import re
import secrets as _secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import rstr

__all__ = [
    "AUTH_SCHEMES",
    "BROKERED_CREDENTIALS",
    "BROKER_ACTIVE",
    "BUILTIN_PROVIDERS",
    "Broker",
    "Provider",
    "Secret",
    "valid_provider",
]

log = logging.getLogger(__name__)

BROKER_ACTIVE = "CODEX_NETWORK_PROXY_CREDENTIAL_BROKER_ACTIVE"
BROKERED_CREDENTIALS = "CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS"
#: How a credential may travel (Codex's names).
AUTH_SCHEMES = ("bearer", "token", "basic", "header")
_MARK = "masked"
_ALPHANUMERIC = string.ascii_letters + string.digits
_RANDOM = random.SystemRandom()
_GENERATOR = rstr.Rstr(_RANDOM)
_ATTEMPTS = 16
#: A real value shorter than this is not looked for inside other variables.
_MIN_INSIDE = 8
#: Dummies given so far, by an HMAC of (provider, variable, value) under this process's key.
_GIVEN: dict[bytes, str] = {}
_GIVEN_MAX = 4096
_KEY = _secrets.token_bytes(32)


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
    #: Built in: the token kinds its dummies keep (the first is the default), and the
    #: shortest dummy.
    kinds: tuple[str, ...] = ()
    length: int = 0

    def prefixes(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """Its URL prefixes for a command with `env` (``url_prefix_from_env`` added)."""
        found = list(self.url_prefixes)
        named = env.get(self.url_prefix_from_env or "", "").strip()
        if named:
            url = named if "://" in named else f"https://{named}/"
            if _https(url):
                found.append(url if url.endswith("/") else url + "/")
        return tuple(found)

    def dummy(self, name: str, value: str) -> str | None:
        """A stand-in for `value` of the variable `name` (the one it got before, if any),
        or None when none can be made (it then stays)."""
        shape = "\0".join(p.pattern for p in self.patterns)  # another pattern: another dummy
        seen = f"{self.name}\0{shape}\0{name}\0{value}".encode()
        key = hmac.new(_KEY, seen, hashlib.sha256).digest()
        given = _GIVEN.get(key) or self._fresh(value)
        if given is not None:
            _GIVEN[key] = given
            while len(_GIVEN) > _GIVEN_MAX:
                del _GIVEN[next(iter(_GIVEN))]
        return given

    def _fresh(self, value: str) -> str | None:
        if self.kinds:
            found = [k for k in self.kinds if value.startswith(k)]
            kind = max(found, key=len) if found else self.kinds[0]
            size = max(self.length, len(value)) - len(kind) - len(_MARK)
            return kind + _MARK + "".join(_RANDOM.choice(_ALPHANUMERIC) for _ in range(size))
        matched = [p for p in self.patterns if p.fullmatch(value)]
        for _ in range(_ATTEMPTS):
            candidate = _GENERATOR.xeger(matched[0].pattern)
            if candidate != value and "\0" not in candidate and matched[0].fullmatch(candidate):
                return candidate
        return None

    def owns(self, name: str, value: str) -> bool:
        """Whether the variable `name` = `value` (trimmed) is this provider's credential."""
        if name not in self.env or not value:
            return False
        return bool(self.kinds) or any(p.fullmatch(value) for p in self.patterns)


def _https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def valid_provider(provider: Provider, env: Mapping[str, str], taken: set[str]) -> bool:
    """Codex's rules for a custom provider (an invalid one is ignored, not refused)."""
    problems = []
    if not provider.env or not provider.patterns:
        problems.append("it needs env and patterns")
    if not all(_https(url) for url in provider.url_prefixes):
        problems.append("url_prefixes must all be https")
    elif not provider.prefixes(env):
        problems.append("it has nowhere to go (url_prefixes, or url_prefix_from_env unset)")
    if (provider.header is not None) != ("header" in provider.auth):
        problems.append('header is given exactly when auth has "header"')
    if provider.prefix and provider.header is None:
        problems.append("prefix needs header")
    if taken & set(provider.env):
        problems.append("another provider has one of its variables")
    if problems:
        log.warning("ignoring credential provider %r: %s", provider.name, "; ".join(problems))
    return not problems


_GITHUB_KINDS = ("ghp_", "github_pat_", "gho_", "ghs_", "ghu_", "ghr_")
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
        auth=("bearer", "token", "basic"),
        kinds=_GITHUB_KINDS,
        length=40,
    ),
    Provider(
        "github-enterprise",
        env=("GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"),
        url_prefix_from_env="GH_HOST",
        auth=("bearer", "token", "basic"),
        kinds=_GITHUB_KINDS,
        length=40,
    ),
    Provider(
        "openai",
        env=("OPENAI_API_KEY",),
        url_prefixes=("https://api.openai.com/",),
        url_prefix_from_env="OPENAI_BASE_URL",
        auth=("bearer",),
        kinds=("sk-", "sk-proj-", "sk-admin-"),
        length=51,
    ),
)


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
    """The credentials of one command (`mask` fills it), consulted by its proxy."""

    custom: Sequence[Provider] = ()
    secrets: list[Secret] = field(default_factory=list)

    def mask(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with each credential replaced by its dummy, and the broker's variables."""
        providers = [p for p in BUILTIN_PROVIDERS if p.prefixes(env)]
        taken = {name for p in BUILTIN_PROVIDERS for name in p.env}
        for provider in self.custom:
            if valid_provider(provider, env, taken):
                providers.append(provider)
                taken |= set(provider.env)
        masked = dict(env)
        for name in sorted(env):
            value = env[name].strip()
            owner = next((p for p in providers if p.owns(name, value)), None)
            dummy = owner.dummy(name, value) if owner is not None else None
            if owner is None or dummy is None:
                continue
            if any(dummy == s.dummy or value == s.dummy for s in self.secrets):
                continue  # not unique: Codex skips it too
            self.secrets.append(Secret(name, value, dummy, owner, owner.prefixes(env)))
            masked[name] = dummy
        aliases = [(s.name, s.dummy) for s in self.secrets]
        mine = {s.name for s in self.secrets}
        for name, value in masked.items():  # a real value inside another variable, too
            if name not in mine:
                for secret in self.secrets:
                    if len(secret.real) >= _MIN_INSIDE and secret.real in value:
                        value = value.replace(secret.real, secret.dummy)
                        aliases.append((name, secret.dummy))
                masked[name] = value
        listed = [[f"@alias:{name}", dummy] for name, dummy in sorted(aliases)]
        listed += [[s.name, s.dummy] for s in self.secrets]
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
        schemes = provider.auth or ("bearer",)
        named = provider.header is not None and lower == provider.header.lower()
        if "header" in schemes and named and value == provider.prefix + secret.dummy:
            return provider.prefix + secret.real
        if lower != "authorization":
            continue
        scheme, _, credential = value.partition(" ")
        kind = scheme.lower()
        if kind in ("bearer", "token") and kind in schemes and credential.strip() == secret.dummy:
            return f"{scheme} {secret.real}"
        if kind == "basic" and kind in schemes:
            swapped = _basic(credential.strip(), secret)
            if swapped is not None:
                return f"{scheme} {swapped}"
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
