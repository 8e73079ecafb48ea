"""Security properties (README "Threat model"): authentication on every transport,
constant-time token checks, the Origin gate, owner-only files, no environment
values in listings, and no unauthenticated network listener.

Already covered elsewhere: 401/403 basics and non-loopback refusal of the
standalone server (tests/transports/test_serve.py), Jupyter token/cookie/origin
(tests/jupyter/test_extension.py), read-only authorization (test_authz_config.py),
log permissions in-process (tests/core/test_processes.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

from jupyter_exec.client import ExecClient
from jupyter_exec.jupyter.handlers import handlers
from jupyter_exec.transports import serve
from tests.reliability.rawws import popen
from tests.service import PY, py, standalone

SECRET = "s3cr3t-value-9f8e7d"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with standalone(cwd=tmp_path_factory.mktemp("sec")) as s:
        yield s


# -- authentication ------------------------------------------------------------------


async def test_no_frame_reaches_the_server_without_the_exact_token(server):
    t = server.token
    attempts = [
        (server.bare_url, {}),
        (server.bare_url + "?token=", {}),
        (server.bare_url, {"Authorization": "Bearer "}),
        (server.bare_url, {"Authorization": f"Bearer {t[:-1]}"}),
        (server.bare_url, {"Authorization": f"Bearer {t}x"}),
        (server.bare_url, {"Authorization": f"Bearer {t.upper()}"}),
        (server.bare_url, {"Authorization": f"Basic {t}"}),
        (server.bare_url + f"?token={t[:8]}", {}),
        (server.bare_url + f"?tok={t}", {}),
        # A wrong header is not rescued by a right query token: the header decides.
        (server.url, {"Authorization": "Bearer wrong"}),
    ]
    for url, headers in attempts:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401, (url, headers)


def test_tokens_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = serve.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(serve.hmac, "compare_digest", spy)
    for presented in ("Bearer right-token", "Bearer wrong", "token right-token-but-longer"):
        serve.check_request("/", Headers({"Authorization": presented}), "right-token", [])
    serve.check_request("/?token=nope", Headers(), "right-token", [])
    assert len(calls) == 4
    assert all(b == b"right-token" for _, b in calls)


def test_origin_must_match_the_allow_list_exactly():
    allowed = ["https://lab.example.org"]
    good = {"Authorization": "Bearer tok"}
    assert serve.check_request("/", Headers(good), "tok", allowed) is None
    assert serve.check_request("/", Headers({**good, "Origin": allowed[0]}), "tok", allowed) is None
    for origin in [
        "null",
        "https://lab.example.org.evil.com",
        "https://lab.example.org:8443",
        "http://lab.example.org",
        "https://LAB.example.org",
        "http://127.0.0.1",
        "",
    ]:
        refusal = serve.check_request("/", Headers({**good, "Origin": origin}), "tok", allowed)
        assert refusal is not None and refusal[0] == 403, origin
    # An allowed origin still needs the token.
    refusal = serve.check_request("/", Headers({"Origin": allowed[0]}), "tok", allowed)
    assert refusal is not None and refusal[0] == 401


async def test_no_token_server_on_loopback_still_refuses_foreign_origins(tmp_path):
    with standalone("--no-token", "--listen", "ws://127.0.0.1:0", cwd=tmp_path) as s:
        assert "token" not in s.url
        with pytest.raises(InvalidStatus) as info:
            async with connect(s.url, additional_headers={"Origin": "http://evil.example"}):
                pass
        assert info.value.response.status_code == 403  # a web page cannot drive it


def test_no_listener_off_loopback_without_a_token():
    for listen in ["ws://0.0.0.0:0", "ws://[::]:0", "ws://example.invalid:0", "ws://10.1.2.3:0"]:
        r = subprocess.run(
            [PY, "-m", "jupyter_exec.transports.serve", "--listen", listen, "--no-token"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 2 and "without a token" in r.stderr, (listen, r.stderr)


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_exec": True}, "allow_root": True}}


async def test_every_jupyter_route_and_verb_needs_authentication(
    jp_fetch, jp_ws_fetch, jp_serverapp
):
    """Guards future handlers too: it walks the route table itself."""
    paths = {
        r"/api/exec/ws": ["api", "exec", "ws"],
        r"/api/exec/mcp": ["api", "exec", "mcp"],
        r"/api/exec/processes/?": ["api", "exec", "processes"],
        r"/api/exec/processes/(?P<process_id>[^/]+)/output": ["api", "exec", "processes", "x", "output"],
        r"/api/exec/processes/(?P<process_id>[^/]+)/?": ["api", "exec", "processes", "x"],
        r"/api/exec/shutdown": ["api", "exec", "shutdown"],
    }  # fmt: skip
    routes = [pattern for pattern, *_ in handlers(None, 0)]
    assert sorted(routes) == sorted(paths), "a new route: add it here"
    for pattern in routes:
        if pattern.endswith("/ws"):
            with pytest.raises(HTTPClientError) as err:
                await jp_ws_fetch(*paths[pattern], headers={"Authorization": ""})
            assert err.value.code == 403
            continue
        for verb in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            body = "{}" if verb in ("POST", "PUT", "PATCH") else None
            with pytest.raises(HTTPClientError) as err:
                await jp_fetch(
                    *paths[pattern], method=verb, body=body, headers={"Authorization": ""}
                )
            assert err.value.code in (403, 405), (pattern, verb, err.value.code)


# -- files and listings ------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_logs_and_their_directories_are_owner_only_even_with_umask_0(tmp_path):
    parent = tmp_path / "a" / "b" / "logs"
    proc = popen(
        [PY, "-m", "jupyter_exec.transports.serve", "--listen", "ws://127.0.0.1:0", "--log-dir", str(parent)],
        cwd=tmp_path, preexec_fn=lambda: os.umask(0),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base, token = proc.stdout.readline().strip().split("?token=")
        c = await ExecClient.connect(base, token)
        await c.start("p", py("print('x' * 100)"))
        await c.wait("p", 10)
        session_dirs = list(parent.iterdir())
        assert len(session_dirs) == 1
        logs = list(session_dirs[0].iterdir())
        assert logs
        assert _mode(parent) == 0o700
        assert _mode(session_dirs[0]) == 0o700
        assert {_mode(p) for p in logs} == {0o600}
        await c.close()
    finally:
        proc.terminate()
        proc.wait(20)


async def test_no_environment_value_appears_in_any_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_SIDE_SECRET", SECRET + "-server")
    with standalone("--lifetime", "detached", cwd=tmp_path) as s:
        c = await ExecClient.connect(s.bare_url, s.token)
        seen: list[str] = []
        c.listeners.append(lambda method, params: seen.append(method + json.dumps(params)))
        await c.request("process/list", {"watch": True})
        await c.request(
            "process/start",
            {"processId": "env", "argv": py("import time; time.sleep(5)"),
             "env": {"CHILD_SECRET": SECRET}, "inheritEnv": True},
        )  # fmt: skip
        await c.request(
            "process/start",
            {"processId": "policy", "argv": ["true"],
             "envPolicy": {"inherit": "all", "set": {"POLICY_SECRET": SECRET}}},
        )  # fmt: skip
        await asyncio.sleep(0.2)
        texts = [
            json.dumps(await c.request("process/list", {})),
            json.dumps(await c.request("environment/info")),
            json.dumps(c.server_info),
            *seen,
        ]
        for text in texts:
            assert SECRET not in text
        assert any(t.startswith("process/started") and '"env"' in t for t in seen)
        await c.terminate("env", 100)
        await c.close()
