"""``http/request``: an HTTP request made from where the processes run.

Codex (0.171) sends its remote MCP servers' Streamable HTTP traffic, OAuth
discovery and similar probes through this method, so they leave from the
executor's machine, not Codex's. Shapes and errors follow Codex's own
exec-server (docs/codex.md, "http/request"), measured against it:

- params ``{method, url, headers: [{name, value, valueEnvVar?}], bodyBase64?,
  timeoutMs?, redirectPolicy: "follow" | "stop", requestId, streamResponse}``;
  ``requestId`` is required even when nothing is streamed.
- result ``{status, headers: [{name, value}], bodyBase64}``; header names come
  back lower-cased, values that are not visible ASCII are left out.
- ``valueEnvVar``: the header is ``value`` followed by that variable of the
  executor's environment (here: the front's base environment, the one its
  commands get). Unset or empty is -32602; credentials of Codex and the cloud
  providers (`ENV_DENYLIST`, case-insensitive) are refused with -32602.
- ``streamResponse``: the result carries status and headers and an empty body;
  the body follows as ``http/request/bodyDelta {requestId, seq (from 1),
  deltaBase64 (at most 1 MiB), done, error}``, the last one ``done: true``,
  with ``error`` if the body broke off.
- ``timeoutMs`` omitted or null: no timeout; otherwise a deadline for the
  whole exchange, body included. Redirects (``follow``, the default) are
  followed up to 10 times, adding ``Referer`` like Codex's client; to a
  loopback URL only within the same origin, and never through a proxy.
- Bad method, URL (not absolute http/https), header name or value, base64:
  -32602. Refused connection, timeout, a broken body: -32603
  ``http/request failed: ...``.

Network policy: Codex's request has no ``sandbox`` and its server makes every
request it is given (a ``sandbox`` member is ignored, as there). This server
also has its own settings: when the front's ``default_sandbox`` (or, for an
agent, its ``agent_sandbox``) turns the network off, ``http/request`` is
refused with -32600, because its commands could not reach the network either.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import os
import re
import ssl
import weakref
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..core.tasks import TaskOwner
from ..wire.errors import InternalError, InvalidParamsError, InvalidRequestError
from ..wire.protocol import Params, notification, parse_params
from .context import AGENT_CLIENTS, EXECUTE, Method

if TYPE_CHECKING:  # httpx is imported on the first request: daemons start without it
    import httpx

    from .context import CallContext, Outlet

__all__ = [
    "BODY_DELTA_METHOD",
    "CAPABILITIES",
    "ENV_DENYLIST",
    "HTTP_METHODS",
    "MAX_DELTA_BYTES",
    "MAX_REDIRECTS",
    "HttpHeader",
    "HttpRequestParams",
    "http_request",
]


CAPABILITIES: dict[str, Any] = {"httpHeaderEnvVars": True}

BODY_DELTA_METHOD = "http/request/bodyDelta"
#: Largest decoded body piece one ``bodyDelta`` carries (Codex's limit).
MAX_DELTA_BYTES = 1 << 20
MAX_REDIRECTS = 10
#: Variables a header may not be built from, as in Codex's server (its own
#: tokens and the cloud providers' credentials), and Jupyter's tokens.
ENV_DENYLIST = frozenset(
    name.upper()
    for name in (
        "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
        "OPENAI_FEDERATION_RULE_ID",
        "OPENAI_IDENTITY_TOKEN_FILE",
        "OPENAI_WORKLOAD_IDENTITY_CONTEXT",
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "CODEX_ACCESS_TOKEN",
        "CODEX_CONNECTORS_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "JUPYTER_TOKEN",
        "JPY_API_TOKEN",
        "JUPYTERHUB_API_TOKEN",
    )
)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class HttpHeader(Params):
    name: str
    value: str
    value_env_var: str | None = None


class HttpRequestParams(Params):
    method: str
    url: str
    headers: list[HttpHeader] = []
    body_base64: str | None = None
    timeout_ms: int | None = None
    redirect_policy: Literal["follow", "stop"] = "follow"
    request_id: str
    stream_response: bool = False


_SSL: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """One verifying context for every request (building one costs milliseconds)."""
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


def _url(raw: str) -> httpx.URL:
    import httpx

    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise InvalidParamsError(f"http/request url is invalid: {exc}") from None
    if not url.scheme or not url.is_absolute_url:
        raise InvalidParamsError("http/request url is invalid: relative URL without a base")
    if url.scheme not in ("http", "https"):
        raise InvalidParamsError(
            f"http/request only supports http and https URLs, got {url.scheme}"
        )
    if not url.host:
        raise InvalidParamsError("http/request url is invalid: empty host")
    return url


def _headers(headers: list[HttpHeader], env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The request's headers in order (repeats kept), `valueEnvVar` filled in."""
    result = []
    for header in headers:
        if not _TOKEN.fullmatch(header.name):
            raise InvalidParamsError(
                "http/request header name is invalid: invalid HTTP header name"
            )
        value = header.value
        var = header.value_env_var
        if var is not None:
            if var.upper() in ENV_DENYLIST:
                raise InvalidParamsError(
                    f"http/request header {header.name} cannot use executor environment "
                    f"variable {var}"
                )
            if var not in env:
                raise InvalidParamsError(
                    f"http/request header {header.name} requires executor environment "
                    f"variable {var}"
                )
            if not env[var]:
                raise InvalidParamsError(
                    f"http/request header {header.name} requires a non-empty executor "
                    f"environment variable {var}"
                )
            value += env[var]
        if _BAD_VALUE.search(value):
            raise InvalidParamsError(
                f"http/request header value is invalid for {header.name}: "
                "failed to parse header value"
            )
        result.append((header.name, value))
    return result


def _is_loopback(url: httpx.URL) -> bool:
    host = url.host
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.lower(), url.port


def _response_headers(response: httpx.Response) -> list[dict[str, str]]:
    """Lower-cased names; values that are not visible ASCII are left out (as Codex's).

    The body is handed on decoded, so its encoding and length headers go (as
    Codex's client drops them when it decompresses)."""
    decoded = "content-encoding" in response.headers
    result = []
    for raw_name, raw_value in response.headers.raw:
        name = raw_name.decode("latin-1").lower()
        if decoded and name in ("content-encoding", "content-length"):
            continue
        try:
            value = raw_value.decode("ascii")
        except UnicodeDecodeError:
            continue
        if _BAD_VALUE.search(value):
            continue
        result.append({"name": name, "value": value})
    return result


def _failed(exc: BaseException, url: httpx.URL) -> InternalError:
    import httpx

    if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
        return InternalError("http/request failed: request timed out")
    if isinstance(exc, httpx.TooManyRedirects):
        return InternalError(f"http/request failed: too many redirects ({url})")
    if isinstance(exc, _CrossOrigin):
        return InternalError("http/request failed: loopback http/request redirect changed origin")
    return InternalError(f"http/request failed: error sending request for url ({url})")


class _CrossOrigin(Exception):
    pass


def _network_refusal(ctx: CallContext) -> str | None:
    """Why this front's own sandbox settings forbid the request, or None."""
    for setting, policy in ctx.rules.sandbox_policies(
        ctx.client_name.startswith(AGENT_CLIENTS)
    ).items():
        if policy.network is False:
            return f"http/request refused: this server's {setting} turns the network off"
    return None


def _client(url: httpx.URL, follow: bool, hops: list[httpx.URL]) -> httpx.AsyncClient:
    """A client for one request; loopback bypasses proxies and stays on its origin."""
    import httpx

    loopback = _is_loopback(url)

    async def on_request(request: httpx.Request) -> None:
        if hops:  # a redirect: Codex's client names where it came from
            if loopback and _origin(request.url) != _origin(hops[0]):
                raise _CrossOrigin
            request.headers["referer"] = str(hops[-1].copy_with(fragment=None, userinfo=b""))
        hops.append(request.url)

    client = httpx.AsyncClient(
        verify=_ssl_context(),
        trust_env=not loopback,
        follow_redirects=follow,
        max_redirects=MAX_REDIRECTS,
        timeout=None,
        event_hooks={"request": [on_request]},
        headers={"accept": "*/*"},
    )
    del client.headers["user-agent"]
    return client


async def http_request(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(HttpRequestParams, params)
    if not _TOKEN.fullmatch(p.method):
        raise InvalidParamsError("http/request method is invalid: invalid HTTP method")
    url = _url(p.url)
    headers = _headers(p.headers, os.environ if ctx.rules.env is None else ctx.rules.env)
    body = b""
    if p.body_base64 is not None:
        try:
            body = base64.b64decode(p.body_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParamsError("bodyBase64 is not valid base64") from None
    if p.timeout_ms is not None and p.timeout_ms < 0:
        raise InvalidParamsError("invalid timeoutMs: must be 0 or more")
    refusal = _network_refusal(ctx)
    if refusal is not None:
        raise InvalidRequestError(refusal)
    loop = asyncio.get_running_loop()
    deadline = None if p.timeout_ms is None else loop.time() + p.timeout_ms / 1000
    client = _client(url, p.redirect_policy == "follow", [])
    request = client.build_request(p.method, url, headers=headers, content=body or None)
    try:
        response = await asyncio.wait_for(
            client.send(request, stream=True), _remaining(deadline, loop)
        )
    except Exception as exc:
        await client.aclose()
        raise _failed(exc, url) from None
    result = {"status": response.status_code, "headers": _response_headers(response)}
    if p.stream_response:
        ctx.after_response.append(
            lambda: _start_stream(
                ctx.connection, _stream(ctx.connection, p.request_id, client, response, deadline)
            )
        )
        return {**result, "bodyBase64": ""}
    try:
        data = await asyncio.wait_for(response.aread(), _remaining(deadline, loop))
    except Exception as exc:
        raise InternalError(f"failed to read http/request response body: {_reason(exc)}") from None
    finally:
        await response.aclose()
        await client.aclose()
    return {**result, "bodyBase64": base64.b64encode(data).decode("ascii")}


def _remaining(deadline: float | None, loop: asyncio.AbstractEventLoop) -> float | None:
    return None if deadline is None else max(0.0, deadline - loop.time())


def _reason(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
        return "request timed out"
    return str(exc) or type(exc).__name__


#: Each connection's running body streams; its close cancels and awaits them.
_STREAMS: weakref.WeakKeyDictionary[Any, TaskOwner] = weakref.WeakKeyDictionary()


def _start_stream(connection: Outlet, body: Coroutine[Any, Any, None]) -> None:
    """Run `body` (a `_stream`) as a task the connection's close cancels."""
    owner = _STREAMS.get(connection)
    if owner is None:
        owner = _STREAMS[connection] = TaskOwner("a connection's http/request bodies")
        connection.on_close(owner.aclose)
    owner.start(body)


async def _stream(
    connection: Outlet,
    request_id: str,
    client: httpx.AsyncClient,
    response: httpx.Response,
    deadline: float | None,
) -> None:
    """The body as ordered ``bodyDelta`` notifications, the last one ``done``."""
    loop = asyncio.get_running_loop()
    seq = 1
    error: str | None = None

    def delta(data: bytes, done: bool) -> None:
        params = {
            "requestId": request_id,
            "seq": seq,
            "deltaBase64": base64.b64encode(data).decode("ascii"),
            "done": done,
            "error": error,
        }
        connection.notify(notification(BODY_DELTA_METHOD, params))

    try:
        pieces = response.aiter_bytes()
        while True:
            try:
                data = await asyncio.wait_for(pieces.__anext__(), _remaining(deadline, loop))
            except StopAsyncIteration:
                break
            for start in range(0, len(data), MAX_DELTA_BYTES):
                delta(data[start : start + MAX_DELTA_BYTES], False)
                seq += 1
                await connection.drained()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        error = f"error decoding response body: {_reason(exc)}"
    finally:
        await response.aclose()
        await client.aclose()
    delta(b"", True)


HTTP_METHODS: dict[str, Method] = {"http/request": Method(http_request, EXECUTE)}
