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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from ..core import transparent_tcp
from ..core.network_proxy import NetworkProxy, ProxyPolicy
from ..core.transparent_tcp import Relay
from ..wire.protocol import Params, StartParams, notification, parse_params
from . import transparent_tcp as transparent

if TYPE_CHECKING:
    from .context import CallContext

__all__ = [
    "CAPABILITIES",
    "NetworkProxyParams",
    "ProxySettings",
    "behind_proxy",
    "close_with",
    "launch",
    "with_proxy_env",
]


log = logging.getLogger(__name__)

CAPABILITIES: dict[str, Any] = {"networkProxyLaunch": True, "networkProxyReviewDomains": True}


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
    policy = ProxyPolicy.from_domains(
        settings.mode, settings.domains or {}, settings.allow_local_binding
    )
    asking = p.policy_decision_timeout_ms is not None
    proxy = NetworkProxy(policy, decide if asking else None, report, socks5=settings.enable_socks5)
    await proxy.start()
    return proxy


@contextlib.asynccontextmanager
async def behind_proxy(
    ctx: CallContext, params: Any, start: StartParams
) -> AsyncIterator[StartParams]:
    """`start` as it should run: with the proxy's environment if `params` ask for one.
    The proxy stops with the process, or at once if the start fails."""
    proxy = await launch(ctx, params, start.process_id)
    if proxy is None:
        yield start
        return
    relay = transparent.relay_for(params, proxy)
    try:
        with transparent_tcp.requesting(relay):  # the registry's start takes it
            yield parse_params(StartParams, with_proxy_env(params, proxy.env()))
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
