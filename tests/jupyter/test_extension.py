"""The extension inside a real Jupyter server (pytest-jupyter): websocket, REST, auth, traits."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClientConnection

from tests.service import py


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_exec": True}, "allow_root": True}}


class Rpc:
    """A JSON-RPC peer over a tornado websocket client."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self.ids = 0
        self.notes: list[dict] = []

    async def call(self, method: str, params=None) -> dict:
        self.ids += 1
        msg = {"jsonrpc": "2.0", "id": self.ids, "method": method}
        if params is not None:
            msg["params"] = params
        await self.ws.write_message(json.dumps(msg))
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), 10)
            assert raw is not None, "websocket closed"
            reply = json.loads(raw)
            if reply.get("id") == self.ids and "method" not in reply:
                return reply
            self.notes.append(reply)

    async def handshake(self) -> None:
        assert "result" in await self.call("initialize", {"clientName": "pytest"})
        await self.ws.write_message(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))


async def open_rpc(jp_ws_fetch) -> Rpc:
    rpc = Rpc(await jp_ws_fetch("api", "exec", "ws"))
    await rpc.handshake()
    return rpc


async def test_websocket_speaks_the_protocol_and_processes_are_shared(jp_ws_fetch, jp_root_dir):
    a = await open_rpc(jp_ws_fetch)
    b = await open_rpc(jp_ws_fetch)
    started = await a.call(
        "process/start",
        {"processId": "hello", "argv": py("import os; print('hi from', os.getcwd())")},
    )
    assert started["result"]["processId"] == "hello"
    read = await b.call(
        "process/read", {"processId": "hello", "waitMs": 5000, "untilPattern": "hi from .*\\n"}
    )
    data = b"".join(base64.b64decode(c["chunk"]) for c in read["result"]["chunks"])
    assert data.decode().strip() == f"hi from {jp_root_dir}"  # default cwd: the server's root_dir
    listed = await b.call("process/list", {})
    info = listed["result"]["processes"][0]
    assert info["lifetime"] == "detached" and info["processId"] == "hello"
    a.ws.close()
    b.ws.close()


async def test_rest_mirror(jp_fetch, jp_serverapp):
    created = await jp_fetch(
        "api",
        "exec",
        "processes",
        method="POST",
        body=json.dumps(
            {
                "processId": "r1",
                "argv": py("import sys; print('out'); print('err', file=sys.stderr)"),
            }
        ),
    )
    assert created.code == 201
    info = json.loads(created.body)
    assert info["processId"] == "r1" and info["state"] == "running"
    listed = json.loads((await jp_fetch("api", "exec", "processes")).body)
    assert [p["processId"] for p in listed] == ["r1"]
    for _ in range(200):
        got = json.loads((await jp_fetch("api", "exec", "processes", "r1")).body)
        if got["state"] == "closed":
            break
        await asyncio.sleep(0.05)
    assert got["state"] == "closed" and got["exitCode"] == 0
    out = await jp_fetch("api", "exec", "processes", "r1", "output")
    assert out.headers["Content-Type"] == "application/octet-stream"
    assert sorted(out.body.splitlines()) == [b"err", b"out"]
    only_err = await jp_fetch(
        "api", "exec", "processes", "r1", "output", params={"stream": "stderr"}
    )
    assert only_err.body == b"err\n"
    deleted = await jp_fetch("api", "exec", "processes", "r1", method="DELETE")
    assert deleted.code == 204
    for method, body in (("GET", None), ("DELETE", None)):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("api", "exec", "processes", "r1", method=method, body=body)
        assert err.value.code == 404


async def test_rest_errors_are_clear(jp_fetch):
    cases = [
        (json.dumps({"argv": ["true"]}), 400),
        ("not json", 400),
        (json.dumps({"processId": "x", "argv": ["no-such-prog-abc"]}), 400),
        (json.dumps({"processId": "x", "argv": ["true"], "cwd": "/no/such/dir"}), 400),
    ]
    for body, code in cases:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("api", "exec", "processes", method="POST", body=body)
        assert err.value.code == code
        assert err.value.response is not None and json.loads(err.value.response.body)["message"]
    await jp_fetch(
        "api",
        "exec",
        "processes",
        method="POST",
        body=json.dumps({"processId": "d", "argv": ["sleep", "30"]}),
    )
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(
            "api",
            "exec",
            "processes",
            method="POST",
            body=json.dumps({"processId": "d", "argv": ["true"]}),
        )
    assert err.value.code == 409
    deleted = await jp_fetch(
        "api", "exec", "processes", "d", method="DELETE"
    )  # terminates a running one
    assert deleted.code == 204


async def test_no_or_wrong_token_is_refused(jp_fetch, jp_ws_fetch):
    for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("api", "exec", "processes", headers=headers)
        assert err.value.code == 403
        with pytest.raises(HTTPClientError) as err:
            await jp_ws_fetch("api", "exec", "ws", headers=headers)
        assert err.value.code == 403


async def test_query_token_works_like_codex_sends_it(
    jp_fetch, jp_serverapp, jp_http_port, jp_base_url
):
    from tornado.websocket import websocket_connect

    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/exec/ws?token={jp_serverapp.identity_provider.token}"
    ws = await websocket_connect(url)
    rpc = Rpc(ws)
    await rpc.handshake()
    assert "result" in await rpc.call("process/list", {})
    ws.close()


async def _login_cookie(jp_serverapp, port: int, base: str) -> str:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client = AsyncHTTPClient()
    page = await client.fetch(f"http://127.0.0.1:{port}{base}login")
    cookies = "; ".join(c.split(";")[0] for c in page.headers.get_list("Set-Cookie"))
    xsrf = next(c.split("=", 1)[1] for c in cookies.split("; ") if c.startswith("_xsrf="))
    body = f"_xsrf={xsrf}&password={jp_serverapp.identity_provider.token}"
    req = HTTPRequest(
        f"http://127.0.0.1:{port}{base}login",
        method="POST",
        body=body,
        headers={"Cookie": cookies},
        follow_redirects=False,
    )
    try:
        resp = await client.fetch(req, raise_error=False)
    except HTTPClientError as exc:
        resp = exc.response
    assert resp is not None and resp.code == 302
    return "; ".join([cookies] + [c.split(";")[0] for c in resp.headers.get_list("Set-Cookie")])


async def test_foreign_origin_is_refused_for_cookie_auth(
    jp_fetch, jp_serverapp, jp_http_port, jp_base_url
):
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    cookie = await _login_cookie(jp_serverapp, jp_http_port, jp_base_url)
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}api/exec/ws"
    with pytest.raises(HTTPClientError) as err:
        await websocket_connect(
            HTTPRequest(url, headers={"Cookie": cookie, "Origin": "http://evil.example"})
        )
    assert err.value.code == 403
    same = HTTPRequest(
        url, headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{jp_http_port}"}
    )
    ws = await websocket_connect(same)
    rpc = Rpc(ws)
    await rpc.handshake()
    assert "result" in await rpc.call("process/list", {})
    ws.close()


async def test_running_processes_count_as_server_activity(jp_fetch, jp_serverapp):
    from datetime import datetime, timezone

    ext = next(
        e
        for e in jp_serverapp.extension_manager.extension_apps["jupyter_exec"]
        if hasattr(e, "link")
    )
    settings = jp_serverapp.web_app.settings
    await ext._report_activity()
    assert "exec_last_activity" not in settings  # nothing running: not busy
    await jp_fetch(
        "api",
        "exec",
        "processes",
        method="POST",
        body=json.dumps({"processId": "busy", "argv": ["sleep", "30"]}),
    )
    before = datetime.now(timezone.utc)
    await ext._report_activity()
    assert settings["exec_last_activity"] >= before
    assert jp_serverapp.web_app.last_activity() >= before
