"""`{base_url}api/exec/mcp`: the SPEC 10 tools as streamable HTTP inside Jupyter Server.

Tornado is not ASGI, and the `mcp` SDK's streamable HTTP transport is an ASGI
app (`StreamableHTTPSessionManager.handle_request(scope, receive, send)`).
This handler keeps Jupyter in charge of the request (authentication,
authorization on resource `exec`, its origin and XSRF policy) and then hands
it to the SDK as one ASGI call: the scope is built from the tornado request,
`receive` yields its body, `send` writes status, headers and body back
(flushing each part, so a streamed answer streams). The manager runs
*stateless* with JSON responses: each POST is answered on its own, so there is
no session state to keep, expire or share across Jupyter's workers, and no
long-lived GET stream to hold open (GET answers 405, as the MCP spec allows).

The tools reach the processes through an `ExecClient` of the exec daemon
(relay.py), like any other client. Which tools a caller may use is
decided per request: `read` opens the endpoint (and `read_output`,
`list_processes`); everything that starts or touches a process needs
`execute` (passed to the tools in the ASGI scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from ..mcp.tools import ClientSource
    from .relay import DaemonLink

__all__ = [
    "ACTIONS_SCOPE_KEY",
    "AUTH_RESOURCE",
    "ENDPOINT_KEY",
    "McpEndpoint",
    "McpHandler",
    "endpoint",
    "stop_endpoint",
]


AUTH_RESOURCE = "exec"
ENDPOINT_KEY = "jupyter_exec_mcp_endpoint"
ACTIONS_SCOPE_KEY = "jupyter_exec.actions"


class McpEndpoint:
    """The SDK's session manager over the exec daemon, run by a task this object owns."""

    def __init__(self, link: DaemonLink) -> None:
        from ..mcp.tools import ClientSource, build_server

        self.source: ClientSource = ClientSource(
            lambda: link.connect_client(client_name="jupyter-exec-mcp-http")
        )
        server = build_server(self.source, _scope_actions)
        # host "": no DNS-rebinding allow-list of the SDK's; Jupyter's host/origin policy holds.
        server.streamable_http_app(json_response=True, stateless_http=True, host="")
        self.manager = server.session_manager
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.manager.run():
            self._ready.set()
            await self._stop.wait()

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._ready.wait()
        await self.manager.handle_request(scope, receive, send)

    async def aclose(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            await self._task
        await self.source.aclose()


def _scope_actions(ctx: Context) -> frozenset[str] | None:
    request = ctx.request_context.request
    scope = getattr(request, "scope", None) or {}
    actions = scope.get(ACTIONS_SCOPE_KEY)
    return frozenset() if actions is None else frozenset(actions)


def endpoint(settings: dict[str, Any], link: DaemonLink) -> McpEndpoint:
    found = settings.get(ENDPOINT_KEY)
    if found is None:
        found = settings[ENDPOINT_KEY] = McpEndpoint(link)
    assert isinstance(found, McpEndpoint)
    return found


async def stop_endpoint(settings: dict[str, Any]) -> None:
    """Server shutdown (app.py): stop the session manager if it was started."""
    found = settings.pop(ENDPOINT_KEY, None)
    if isinstance(found, McpEndpoint):
        await found.aclose()


class McpHandler(JupyterHandler):
    """Jupyter's auth, then one ASGI call into the SDK's streamable HTTP transport."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, link: DaemonLink) -> None:
        self.link = link

    def get_login_url(self) -> str:
        # As Jupyter's APIHandler: an API answers 403, it does not redirect to a login page.
        raise web.HTTPError(403, "an MCP client must send a token (Authorization: token ...)")

    @web.authenticated
    async def get(self) -> None:
        # Stateless: no server-to-client stream to open (the MCP spec allows 405 here).
        await self._actions()
        self.set_header("Allow", "POST, DELETE")
        raise web.HTTPError(405, "this MCP endpoint is stateless: POST requests only")

    @web.authenticated
    async def post(self) -> None:
        await self._bridge()

    @web.authenticated
    async def delete(self) -> None:
        await self._bridge()

    async def _actions(self) -> frozenset[str]:
        can = self.authorizer.is_authorized
        user = self.current_user
        actions = {
            action
            for action in ("read", "execute")
            if await ensure_async(can(self, user, action, AUTH_RESOURCE))
        }
        if "read" not in actions:
            raise web.HTTPError(403, "not authorized to read exec")
        return frozenset(actions)

    async def _bridge(self) -> None:
        try:
            import mcp  # noqa: F401
        except ImportError:
            raise web.HTTPError(
                501, "the MCP endpoint needs `pip install jupyter-exec[mcp]`"
            ) from None
        scope = self._scope(await self._actions())
        self._disconnected = asyncio.Event()
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": self.request.body, "more_body": False}
            await self._disconnected.wait()
            return {"type": "http.disconnect"}

        await endpoint(self.settings, self.link).handle(scope, receive, self._send_asgi)
        if not self._finished:
            self.finish()

    def _scope(self, actions: frozenset[str]) -> dict[str, Any]:
        req = self.request
        host, _, port = (req.host or "127.0.0.1").partition(":")
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": req.version.split("/")[-1] if req.version else "1.1",
            "method": req.method,
            "scheme": req.protocol,
            "path": req.path,
            "raw_path": req.path.encode("latin-1"),
            "query_string": req.query.encode("latin-1"),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.get_all()
            ],
            "client": (req.remote_ip or "", 0),
            "server": (host, int(port) if port.isdigit() else 80),
            ACTIONS_SCOPE_KEY: sorted(actions),
        }

    async def _send_asgi(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.set_status(message["status"])
            self.clear_header("Content-Type")
            seen: set[str] = set()
            for raw_key, raw_value in message.get("headers", []):
                key, value = raw_key.decode("latin-1"), raw_value.decode("latin-1")
                if key.lower() in seen:
                    self.add_header(key, value)
                else:
                    self.set_header(key, value)
                    seen.add(key.lower())
        elif message["type"] == "http.response.body":
            if self._finished:
                return
            self.write(message.get("body", b""))
            if message.get("more_body"):
                with contextlib.suppress(Exception):
                    await self.flush()
            else:
                self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as JSON (a client of this endpoint is a program, not a browser)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def on_connection_close(self) -> None:
        super().on_connection_close()
        disconnected = getattr(self, "_disconnected", None)
        if disconnected is not None:
            disconnected.set()
