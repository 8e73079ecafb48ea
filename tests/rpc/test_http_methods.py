"""``http/request`` (jupyter_exec.rpc.http_methods) on a real service and a real HTTP server.

Every request goes to `echo_server` on 127.0.0.1; the expected answers and
error codes are those Codex 0.171's own exec-server gives (measured; the
differential test in tests/codex compares them directly).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.rpc.http_methods import MAX_DELTA_BYTES

from .. import service
from ..service import RawPeer
from .echo_server import GZIP_TEXT, EchoServer, echo_server, pattern

ENV = {"PATH": "/usr/bin:/bin", "API_TOKEN": "sekret", "EMPTY": ""}


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


def connected(tmp_path: Path, **rules: Any) -> contextlib.AbstractAsyncContextManager[RawPeer]:
    """A handshaken connection to a fresh service whose front's environment is `ENV`."""
    return service.connected(tmp_path, env=ENV, **rules)


def get(url: str, **params: Any) -> dict[str, Any]:
    return {"method": "GET", "url": url, "requestId": "r1", **params}


def body_of(result: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(result["bodyBase64"]))


async def ok(peer: RawPeer, params: dict[str, Any]) -> dict[str, Any]:
    answer = await peer.call("http/request", params)
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


async def error(peer: RawPeer, params: Any) -> dict[str, Any]:
    answer = await peer.call("http/request", params)
    assert "error" in answer, answer
    err: dict[str, Any] = answer["error"]
    return err


async def test_a_get_with_a_header_from_the_environment(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        headers = [
            {"name": "Authorization", "value": "Bearer ", "valueEnvVar": "API_TOKEN"},
            {"name": "X-Twice", "value": "1"},
            {"name": "X-Twice", "value": "2"},
        ]
        result = await ok(peer, get(f"{web.url}/echo?q=1", headers=headers))
        assert result["status"] == 200
        names = [h["name"] for h in result["headers"]]
        assert "x-mixed-case" in names and "content-type" in names
        assert all(name == name.lower() for name in names)
        echo = body_of(result)
        assert echo["method"] == "GET" and echo["path"] == "/echo?q=1"
        assert echo["headers"]["authorization"] == "Bearer sekret"  # value, then the variable
        assert echo["headers"]["accept"] == "*/*"
        assert "user-agent" not in echo["headers"]  # Codex's client sends none either


async def test_a_post_body(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        data = bytes(range(256))
        params = {"method": "POST", "url": f"{web.url}/echo", "requestId": "p",
                  "bodyBase64": base64.b64encode(data).decode()}  # fmt: skip
        echo = body_of(await ok(peer, params))
        assert echo["method"] == "POST"
        assert base64.b64decode(echo["bodyBase64"]) == data


@pytest.mark.parametrize(
    ("var", "words"),
    [
        ("NOT_SET_ANYWHERE", "requires executor environment variable NOT_SET_ANYWHERE"),
        ("EMPTY", "requires a non-empty executor environment variable EMPTY"),
        ("openai_api_key", "cannot use executor environment variable openai_api_key"),
    ],
)
async def test_a_header_variable_that_cannot_be_used(
    tmp_path: Path, web: EchoServer, var: str, words: str
) -> None:
    async with connected(tmp_path) as peer:
        header = {"name": "X-A", "value": "v", "valueEnvVar": var}
        err = await error(peer, get(f"{web.url}/echo", headers=[header]))
        assert err["code"] == -32602 and words in err["message"], err
        # the connection goes on
        assert (await ok(peer, get(f"{web.url}/echo")))["status"] == 200


async def test_the_variable_comes_from_the_fronts_environment_not_the_daemons(
    tmp_path: Path, web: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connected(tmp_path) as peer:
        monkeypatch.setenv("ONLY_IN_THE_DAEMON", "x")
        header = {"name": "X-A", "value": "", "valueEnvVar": "ONLY_IN_THE_DAEMON"}
        assert (await error(peer, get(f"{web.url}/echo", headers=[header])))["code"] == -32602


async def test_redirects_followed_with_a_referer_or_stopped(
    tmp_path: Path, web: EchoServer
) -> None:
    async with connected(tmp_path) as peer:
        start = f"{web.url}/redirect?to=/echo"
        followed = await ok(peer, get(start))
        assert followed["status"] == 200
        assert body_of(followed)["headers"]["referer"] == start
        with_credentials = start.replace("http://", "http://user:secret@")
        referer = body_of(await ok(peer, get(with_credentials)))["headers"]["referer"]
        assert referer == start  # the credentials are not passed on
        stopped = await ok(peer, get(start, redirectPolicy="stop"))
        assert stopped["status"] == 302
        assert {"name": "location", "value": "/echo"} in stopped["headers"]
        assert stopped["bodyBase64"] == ""


async def test_a_loopback_redirect_may_not_change_origin(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        with echo_server() as other:
            err = await error(peer, get(f"{web.url}/redirect?to={other.url}/echo"))
        assert err["code"] == -32603 and "changed origin" in err["message"], err


async def test_a_gzip_body_comes_back_decoded(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        result = await ok(peer, get(f"{web.url}/gzip"))
        assert base64.b64decode(result["bodyBase64"]) == GZIP_TEXT
        names = {h["name"] for h in result["headers"]}
        assert not names & {"content-encoding", "content-length"}, names


async def test_refused_and_timed_out_requests(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        refused = await error(peer, get("http://127.0.0.1:1/"))
        assert refused["code"] == -32603 and "http/request failed" in refused["message"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        late = await error(peer, get(f"{web.url}/slow", timeoutMs=300))
        assert late["code"] == -32603 and "timed out" in late["message"], late
        assert loop.time() - started < 1.5
        assert (await error(peer, get(f"{web.url}/echo", timeoutMs=0)))["code"] == -32603
        # without timeoutMs there is none
        assert (await ok(peer, get(f"{web.url}/slow")))["status"] == 200


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (get("not a url"), "url is invalid"),
        (get("/relative"), "url is invalid"),
        (get("ftp://127.0.0.1/x"), "only supports http and https URLs, got ftp"),
        ({**get("http://127.0.0.1:1/"), "method": "G T"}, "method is invalid"),
        (get("http://127.0.0.1:1/", headers=[{"name": "bad name", "value": "x"}]), "name"),
        (get("http://127.0.0.1:1/", headers=[{"name": "X", "value": "a\nb"}]), "value"),
        (get("http://127.0.0.1:1/", bodyBase64="!!!"), "base64"),
        (get("http://127.0.0.1:1/", redirectPolicy="weird"), "redirectPolicy"),
        (get("http://127.0.0.1:1/", timeoutMs=-1), "timeoutMs"),
        ({"method": "GET", "url": "http://127.0.0.1:1/"}, "requestId"),
        ({"url": "http://127.0.0.1:1/", "requestId": "x"}, "method"),
        ([1, 2], "params"),
    ],
)
async def test_bad_params(tmp_path: Path, params: Any, words: str) -> None:
    async with connected(tmp_path) as peer:
        err = await error(peer, params)
        assert err["code"] == -32602 and words in err["message"], err


async def deltas(peer: RawPeer, request_id: str) -> list[dict[str, Any]]:
    """This stream's bodyDelta params, up to the one marked done."""
    got: list[dict[str, Any]] = []
    pending = [m for m in peer.seen if m.get("method") == "http/request/bodyDelta"]
    peer.seen.clear()
    while not got or not got[-1]["done"]:
        message = pending.pop(0) if pending else await peer.recv()
        if message.get("params", {}).get("requestId") == request_id:
            got.append(message["params"])
    return got


async def test_a_streamed_body_comes_in_ordered_pieces(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        size = 2 * MAX_DELTA_BYTES + 12345
        result = await ok(peer, get(f"{web.url}/big?n={size}", requestId="s1", streamResponse=True))
        assert result["status"] == 200 and result["bodyBase64"] == ""
        assert not peer.seen  # the answer came before any piece
        pieces = await deltas(peer, "s1")
        assert [p["seq"] for p in pieces] == list(range(1, len(pieces) + 1))
        data = [base64.b64decode(p["deltaBase64"]) for p in pieces]
        assert all(len(d) <= MAX_DELTA_BYTES for d in data)
        assert b"".join(data) == pattern(size)
        assert pieces[-1] == {"requestId": "s1", "seq": len(pieces), "deltaBase64": "",
                              "done": True, "error": None}  # fmt: skip


async def test_a_body_that_breaks_off_ends_with_an_error(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        await ok(peer, get(f"{web.url}/broken", requestId="b1", streamResponse=True))
        pieces = await deltas(peer, "b1")
        assert pieces[-1]["done"] is True and pieces[-1]["error"], pieces
        # and unstreamed: the read fails as a whole
        err = await error(peer, get(f"{web.url}/broken"))
        assert err["code"] == -32603, err


async def test_closing_the_connection_stops_its_streams(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path) as peer:
        await ok(peer, get(f"{web.url}/drip", requestId="d", streamResponse=True))
        first = await peer.recv()
        assert first["params"]["requestId"] == "d" and first["params"]["seq"] == 1
    # the request's socket is closed: the server's next write fails
    assert await asyncio.to_thread(web.dropped.wait, 5)


async def test_a_front_without_network_refuses(tmp_path: Path, web: EchoServer) -> None:
    async with connected(tmp_path, default_sandbox="workspace-write:network-off") as peer:
        err = await error(peer, get(f"{web.url}/echo"))
        assert err["code"] == -32600 and "default_sandbox" in err["message"], err


async def test_advertised_capability(tmp_path: Path) -> None:
    async with connected(tmp_path) as peer:
        info = await peer.call("environment/info")
        assert info["result"]["capabilities"]["httpHeaderEnvVars"] is True
