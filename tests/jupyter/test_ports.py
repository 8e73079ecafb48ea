"""SPEC 11 ports inside Jupyter Server: each has its jupyter-server-proxy link, and the
link serves the page through the user's (token-authenticated) Jupyter session."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

#: A grandchild (bash -> python) serves the root dir on a free port of 127.0.0.1.
SERVER = ["bash", "-c", "python3 -m http.server 0 --bind 127.0.0.1 >/dev/null 2>&1 & wait"]


@pytest.fixture
def jp_server_config():
    extensions = {"jupyter_exec": True, "jupyter_server_proxy": True}
    return {"ServerApp": {"jpserver_extensions": extensions, "allow_root": True}}


@pytest.fixture
def jp_base_url():
    return "/lab-base/"


async def test_a_port_gets_its_proxy_link_and_the_link_serves_the_page(
    jp_fetch, jp_root_dir, jp_base_url, jp_http_port
):
    (jp_root_dir / "listed-here.txt").write_text("hello")
    body = json.dumps({"processId": "web", "argv": SERVER})
    await jp_fetch("api", "exec", "processes", method="POST", body=body)
    started, info = time.monotonic(), {}
    while not info.get("ports") and time.monotonic() - started < 10:
        await asyncio.sleep(0.1)
        info = json.loads((await jp_fetch("api", "exec", "processes", "web")).body)
    assert time.monotonic() - started < 2.5, "the port showed later than 2 s"
    [port] = info["ports"]
    assert port["url"] == f"{jp_base_url}proxy/{port['port']}/"
    assert port["pid"] != info["pid"]  # the grandchild's socket counts
    page = await jp_fetch("proxy", str(port["port"]), "")  # jp_fetch sends the token
    assert b"listed-here.txt" in page.body
    anonymous = await AsyncHTTPClient().fetch(  # without it, Jupyter refuses
        f"http://127.0.0.1:{jp_http_port}{port['url']}", raise_error=False, follow_redirects=False
    )
    assert anonymous.code in (302, 403) and b"listed-here.txt" not in (anonymous.body or b"")
    await jp_fetch("api", "exec", "processes", "web", method="DELETE")
