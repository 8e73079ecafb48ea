"""``networkProxy.proxy.transparentTcp`` on ``process/start`` (core/transparent_tcp.py).

Codex (0.171) sends it from ``[features.network_proxy] transparent_tcp`` to a
server that advertises ``networkProxyTransparentTcp``. Its server then runs
the sandboxed command in its own network namespace where every TCP
connection, whatever the program, goes through the managed SOCKS5 listener
and its domain policy (docs/codex.md records what the command sees). As
Codex's server, we refuse it without a sandbox or without ``enableSocks5``
(-32602, nothing started).
"""

from __future__ import annotations

from typing import Any

from ..core import transparent_tcp
from ..core.network_proxy import NetworkProxy
from ..wire.errors import InvalidParamsError

__all__ = ["capabilities", "check", "relay_for"]


def capabilities() -> dict[str, Any]:
    """Offered only where it holds: sandboxes work and there is a TUN device."""
    return {} if transparent_tcp.unavailable() else {"networkProxyTransparentTcp": True}


def check(params: Any, enable_socks5: bool) -> None:
    """Codex's refusals: no sandbox, or no SOCKS5 listener to send the TCP through."""
    if not isinstance(params, dict) or params.get("sandbox") is None:
        raise InvalidParamsError("transparent TCP requires a managed Linux sandbox")
    if not enable_socks5:
        raise InvalidParamsError(
            "invalid network proxy config: transparent_tcp requires an enabled managed SOCKS5 proxy"
        )


def relay_for(params: Any, proxy: NetworkProxy) -> transparent_tcp.Relay | None:
    """The relay `params` (a start `launch` accepted) ask for next to `proxy`, or None.
    Its namespace bridges the proxy's two ports, so the proxy variables stay valid."""
    if params["networkProxy"]["proxy"].get("transparentTcp") is not True:
        return None
    return transparent_tcp.prepare((proxy.port, proxy.socks_port), proxy.socks_port)
