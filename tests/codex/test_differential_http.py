"""Codex's own exec-server and ours answer the same ``http/request`` requests alike.

Both servers make their requests to one local HTTP server on 127.0.0.1
(tests/rpc/echo_server.py) and are started with the same environment,
including `TOKEN_VAR` for ``valueEnvVar``. What must agree: status, response
header names and values (the date aside), the body, and what the HTTP server
saw of the request (method, path, body, the headers the caller set, the
referer of a redirect); errors by code. Streamed bodies: the same bytes, seq
from 1, the last piece done without error.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..rpc.echo_server import EchoServer, echo_server
from .differential import Case, Pair, Side, Step, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN_VAR = "DIFFERENTIAL_HTTP_TOKEN"
#: Request headers the callers set, compared as the HTTP server saw them.
SEEN_HEADERS = ("authorization", "x-twice", "referer", "accept", "content-type")
#: Numbers the streamed cases' workspaces (Codex's side outlives one pair).
STREAMS = itertools.count(1)


@pytest.fixture(scope="module")
def web() -> Iterator[EchoServer]:
    with echo_server() as server:
        yield server


@pytest.fixture(scope="module")
def server_environment() -> Iterator[None]:
    """`TOKEN_VAR` in the environment both sides' servers start with."""
    os.environ[TOKEN_VAR] = "sekret"
    try:
        yield
    finally:
        del os.environ[TOKEN_VAR]


def response(result: dict[str, Any]) -> dict[str, Any]:
    """What must agree of a result; an echo's body is reduced to what the caller set."""
    headers = [(h["name"], h["value"]) for h in result["headers"] if h["name"] != "date"]
    body = base64.b64decode(result["bodyBase64"])
    picked: dict[str, Any] = {"status": result["status"], "headers": sorted(headers)}
    try:
        echo = json.loads(body)
    except ValueError:
        picked["body"] = body.decode("latin-1")
        return picked
    seen = echo["headers"]
    picked["echo"] = {
        "method": echo["method"],
        "path": echo["path"],
        "bodyBase64": echo["bodyBase64"],
        "headers": {name: seen.get(name) for name in SEEN_HEADERS},
    }
    picked["headers"] = [h for h in picked["headers"] if h[0] != "content-length"]
    return picked


def request(url: str, **params: Any) -> Step:
    return Step("http/request", {"method": "GET", "url": url, "requestId": "r", **params}, response)


def test_requests_agree(pair: Pair, web: EchoServer) -> None:
    u = web.url
    pair.assert_same(
        Case(
            "answers",
            [
                request(
                    f"{u}/echo?a=1",
                    headers=[
                        {"name": "Authorization", "value": "Bearer ", "valueEnvVar": TOKEN_VAR},
                        {"name": "X-Twice", "value": "1"},
                        {"name": "X-Twice", "value": "2"},
                    ],
                ),
                request(
                    f"{u}/echo",
                    method="POST",
                    bodyBase64=base64.b64encode(b"hi").decode(),
                    headers=[{"name": "Content-Type", "value": "text/plain"}],
                ),
                request(f"{u}/redirect?to=/echo"),
                request(f"{u}/redirect?to=/echo", redirectPolicy="stop"),
                request(f"{u}/gzip"),
                request(f"{u}/big?n=1000", timeoutMs=10000),
            ],
        ),
        Case(
            "errors",
            [
                request(
                    f"{u}/echo", headers=[{"name": "X", "value": "", "valueEnvVar": "UNSET_X"}]
                ),
                request(
                    f"{u}/echo",
                    headers=[{"name": "X", "value": "", "valueEnvVar": "OPENAI_API_KEY"}],
                ),
                request(f"{u}/echo", headers=[{"name": "bad name", "value": "x"}]),
                request(f"{u}/echo", headers=[{"name": "X", "value": "a\nb"}]),
                request("http://127.0.0.1:1/"),
                request(f"{u}/slow", timeoutMs=200),
                request(f"{u}/echo", timeoutMs=0),
                request("not a url"),
                request("ftp://127.0.0.1/"),
                request(f"{u}/echo", method="G T"),
                request(f"{u}/echo", bodyBase64="!!!"),
                request(f"{u}/echo", redirectPolicy="sideways"),
                Step("http/request", {"method": "GET", "url": f"{u}/echo"}),
            ],
        ),
    )


def stream(side: Side, ws: Path, url: str, request_id: str) -> list[Any]:
    """The answer and the stream's pieces, normalized: status, seqs, joined bytes, last piece."""
    side.client.notifications.clear()
    case = Case("stream", [request(url, requestId=request_id, streamResponse=True)])
    [(answer, _raw)] = run(side, case, ws)
    pieces = _deltas(side, request_id)
    data = b"".join(base64.b64decode(p["deltaBase64"]) for p in pieces)
    last = {k: v for k, v in pieces[-1].items() if k != "seq"}
    return [answer, [p["seq"] for p in pieces][:1], len(data), data[:64], last,
            bool(pieces[-1]["error"])]  # fmt: skip


def _deltas(side: Side, request_id: str) -> list[dict[str, Any]]:
    def mine() -> list[dict[str, Any]]:
        return [
            n["params"]
            for n in side.client.notifications
            if n.get("method") == "http/request/bodyDelta"
            and n["params"]["requestId"] == request_id
        ]

    while not mine() or not mine()[-1]["done"]:
        side.client.notifications.append(side.client.peer.receive())
    return mine()


@pytest.mark.parametrize("path", ["/big?n=3000000", "/gzip"])
def test_streamed_bodies_agree(pair: Pair, web: EchoServer, path: str) -> None:
    name = f"stream-{next(STREAMS)}"
    codex = stream(pair.codex, pair.codex.workspaces / name, web.url + path, "s")
    ours = stream(pair.ours, pair.ours.workspaces / name, web.url + path, "s")
    assert ours == codex
