"""``networkProxy`` on ``process/start``: a managed proxy per command (core/network_proxy.py).

Codex (0.171) sends ``networkProxy {proxy: {enabled, enableSocks5,
enableSocks5Udp, allowUpstreamProxy, dangerouslyAllowAllUnixSockets, mode:
"limited" | "full", domains: {HOST: "allow" | "deny" | "none"}, unixSockets,
allowLocalBinding}, environmentId?, executionId?, policyDecisionTimeoutMs?}``
to a server that advertises ``networkProxyLaunch``. With ``enabled``, the
command gets the proxy's environment; a host the domains leave open ("none",
or not listed) is put to the client as the server-to-client request
``network/policyRequest {processId, request: {protocol, host, port}}``, whose
answer ``{decision: {type: "allow" | "deny", reason}}`` decides
(``networkProxyReviewDomains``); no answer within
``policyDecisionTimeoutMs``, an error, or a closed connection is a deny with
reason ``not_allowed``, as from Codex's server. Without
``policyDecisionTimeoutMs`` (the real Codex sends none unless a reviewer
decides its network approvals) the client is not asked: such a host is
blocked as ``not_allowed``, as Codex's server does.
Every decision goes to the client as ``network/policyDecision {processId,
...}``. The proxy stops when the process is closed.

The proxy runs where the daemon runs. A sandboxed command has a network
namespace of its own: with the network on, it reaches this proxy at the same
port inside its namespace (core/sandbox_net.py serves that port with this
proxy); without, it reaches nothing. With ``transparentTcp: true`` its TCP
all goes through the SOCKS5 listener instead (rpc/transparent_tcp.py), whose
relay then serves the proxy's ports inside the namespace.
``enableSocks5`` adds a SOCKS5 listener with the same policy.

``credentialMasking: true`` (``credentialMasking``) gives the proxy a credential
broker (core/credential_broker.py): the command's final environment (after
``envPolicy`` and a shell snapshot's replay, `masked`) holds dummies in place
of GitHub's and OpenAI's credentials and those of the request's
``credentialProviders`` (``credentialMaskingCustomProviders``: a map from a
name to ``{env, patterns, url_prefixes, url_prefix_from_env, auth, header,
prefix}``, snake_case, unknown members refused as Codex refuses them), and
the proxy puts the real values back only into requests to the providers'
HTTPS prefixes (core/mitm.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from ..core import transparent_tcp
from ..core.child import build_env
from ..core.credential_broker import Broker, Provider
from ..core.network_proxy import NetworkProxy, ProxyPolicy
from ..core.transparent_tcp import Relay
from ..wire.protocol import Params, StartParams, notification, parse_params
from ..wire.rules import FrontRules
from . import transparent_tcp as transparent

if TYPE_CHECKING:
    from .context import CallContext

__all__ = [
    "CAPABILITIES",
    "NetworkProxyParams",
    "ProviderParams",
    "ProxySettings",
    "behind_proxy",
    "close_with",
    "launch",
    "masked",
    "with_proxy_env",
]


log = logging.getLogger(__name__)

CAPABILITIES: dict[str, Any] = {
    "networkProxyLaunch": True,
    "networkProxyReviewDomains": True,
    "credentialMasking": True,
    "credentialMaskingCustomProviders": True,
}


class ProviderParams(BaseModel):
    """One of ``credentialProviders`` (Codex's members, snake_case; no others)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    env: list[str] = []
    patterns: list[str] = []
    url_prefixes: list[str] = []
    url_prefix_from_env: str | None = None
    auth: list[Literal["bearer", "token", "basic", "header"]] = []
    header: str | None = None
    prefix: str | None = None

    def provider(self, name: str) -> Provider:
        try:
            patterns = tuple(re.compile(p) for p in self.patterns)
        except re.error as exc:  # ignored as Codex ignores it: without patterns it is invalid
            log.warning("credential provider %r: a pattern does not compile: %s", name, exc)
            patterns = ()
        return Provider(
            name, tuple(self.env), patterns, tuple(self.url_prefixes), self.url_prefix_from_env,
            tuple(self.auth), self.header, self.prefix or "",
        )  # fmt: skip


class ProxySettings(Params):
    enabled: bool
    enable_socks5: bool
    enable_socks5_udp: bool
    allow_upstream_proxy: bool
    dangerously_allow_all_unix_sockets: bool
    mode: Literal["limited", "full"]
    #: null from the real Codex when its profile lists none.
    domains: dict[str, Literal["allow", "deny", "none"]] | None = None
    unix_sockets: dict[str, Any] | None = None
    allow_local_binding: bool
    #: Codex's ``[features.network_proxy] transparent_tcp`` (rpc/transparent_tcp.py).
    transparent_tcp: bool = False
    credential_masking: bool = False
    credential_providers: dict[str, ProviderParams] | None = None

    def broker(self) -> Broker | None:
        """The credential broker asked for (built in providers and the request's)."""
        if not self.credential_masking:
            return None
        custom = self.credential_providers or {}
        return Broker([p.provider(n) for n, p in custom.items()])


class NetworkProxyParams(Params):
    proxy: ProxySettings
    environment_id: str | None = None
    execution_id: str | None = None
    policy_decision_timeout_ms: int | None = None


class _Wrapper(Params):
    network_proxy: NetworkProxyParams | None = None


async def launch(ctx: CallContext, params: Any, process_id: str) -> NetworkProxy | None:
    """The started proxy `params` (a `process/start`'s) ask for, or None."""
    if not isinstance(params, dict) or params.get("networkProxy") is None:
        return None
    p = parse_params(_Wrapper, params).network_proxy
    assert p is not None
    if not p.proxy.enabled:
        return None
    if p.proxy.transparent_tcp:  # all its TCP through the SOCKS5 listener (transparent_tcp.py)
        transparent.check(params, p.proxy.enable_socks5)
    connection = ctx.connection
    timeout = (p.policy_decision_timeout_ms or 0) / 1000

    async def decide(request: dict[str, Any]) -> tuple[str, str]:
        asked = {"processId": process_id, "request": request}
        try:
            answer = await connection.ask("network/policyRequest", asked, timeout)
            decision = answer["decision"]
            return str(decision["type"]), str(decision.get("reason") or "")
        except Exception:  # no answer in time, an error, a malformed one, a closed connection
            log.debug("network/policyRequest got no decision", exc_info=True)
            return "deny", "not_allowed"  # as Codex's server: the domain stays not allowed

    def report(decision: dict[str, Any]) -> None:
        connection.notify(
            notification("network/policyDecision", {"processId": process_id, **decision})
        )

    settings = p.proxy
    broker = settings.broker()  # providers Codex would ignore are ignored (logged)
    policy = ProxyPolicy.from_domains(
        settings.mode, settings.domains or {}, settings.allow_local_binding
    )
    asking = p.policy_decision_timeout_ms is not None
    proxy = NetworkProxy(policy, decide if asking else None, report, socks5=settings.enable_socks5)
    proxy.broker = broker
    await proxy.start()
    return proxy


@contextlib.asynccontextmanager
async def behind_proxy(
    ctx: CallContext, params: Any, start: StartParams
) -> AsyncIterator[tuple[StartParams, NetworkProxy | None]]:
    """`start` as it should run, with the proxy's environment if `params` ask for one,
    and that proxy (for `masked`). It stops with the process, or at once if the start
    fails."""
    proxy = await launch(ctx, params, start.process_id)
    if proxy is None:
        yield start, None
        return
    relay = transparent.relay_for(params, proxy)
    try:
        with transparent_tcp.requesting(relay):  # the registry's start takes it
            yield parse_params(StartParams, with_proxy_env(params, proxy.env())), proxy
        if relay is not None:
            await relay.start()
    except BaseException:
        if relay is not None:
            await relay.aclose()
        await proxy.aclose()
        raise
    close_with(ctx, start.process_id, proxy)
    if relay is not None:
        close_with(ctx, start.process_id, relay)


def with_proxy_env(params: Any, env: dict[str, str]) -> Any:
    """`process/start` params whose command also gets `env` (on top of what it asked for)."""
    params = dict(params)
    if params.get("env") is None and params.get("envPolicy") is None:
        params["inheritEnv"] = True
    params["env"] = {**(params.get("env") or {}), **env}
    return params


def masked(start: StartParams, proxy: NetworkProxy | None, rules: FrontRules) -> StartParams:
    """`start` with its credentials masked when its proxy brokers them: its whole final
    environment (`envPolicy`, the front's base, a snapshot's replay) resolved here."""
    if proxy is None or proxy.broker is None:
        return start
    base = os.environ if rules.env is None else rules.env
    env = build_env(start.env, start.inherit_env, start.env_policy, base)
    if start.tty and "TERM" not in (start.env or {}):
        env.pop("TERM", None)  # SPEC 4: a tty child gets its own TERM, as without masking
    update = {"env": proxy.broker.mask(env), "inherit_env": False, "env_policy": None}
    return start.model_copy(update=update)


def close_with(ctx: CallContext, process_id: str, proxy: NetworkProxy | Relay) -> None:
    """Stop `proxy` once the process is closed (or gone from the registry); a task of
    the service (it outlives the request), awaited when the service closes."""
    proc = ctx.registry.find(process_id)

    async def wait_then_close() -> None:
        try:
            if proc is not None:
                await proc.closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await proxy.aclose()

    ctx.tasks.start(wait_then_close())
