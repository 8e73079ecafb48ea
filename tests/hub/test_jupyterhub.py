"""jupyter-exec behind a real JupyterHub: one registry per user server, hub auth in front.

Users `a` and `b` each get a single-user server (SimpleLocalProcessSpawner) with the
extension; clients reach it through the hub's proxy at `/user/NAME/api/exec/ws` with
a per-user hub API token in the `Authorization: token T` header, as the magics do with
the kernel's `JUPYTERHUB_API_TOKEN`. The tests run in order against one hub (conftest).
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from websockets.exceptions import InvalidStatus

from jupyter_exec.client import ExecClient, SyncExecClient
from tests.daemon.harness import daemon_pid, stop_daemon, wait_gone

from .harness import Hub, alive, http

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# What A's token gets on B's server: B's single-user server asks the hub about the
# token, finds no `access:servers!server=b/` scope, and refuses (logged as anonymous).
REFUSED = 403

PRINT_USER = "import os; print('hello from', os.environ['JUPYTERHUB_USER'], flush=True)"


async def connect(hub: Hub, server: str, token_of: str) -> ExecClient:
    return await ExecClient.connect(
        hub.user_url(server) + "api/exec/ws", hub.tokens[token_of], client_name="pytest-hub"
    )


def rest(hub: Hub, method: str, server: str, token_of: str | None, path: str = "", body=None):
    token = hub.tokens[token_of] if token_of else None
    return http(method, hub.user_url(server) + "api/exec/processes" + path, token, body)


async def test_user_runs_a_process_through_the_hub_proxy(hub: Hub) -> None:
    client = await connect(hub, "a", "a")
    try:
        assert client.server_info["serverInfo"]["name"] == "jupyter-exec"
        await client.start("a-hello", [sys.executable, "-c", PRINT_USER], label="from a")
        result = await client.read("a-hello", 0, wait_ms=15000, until_pattern=r"hello from \w+")
        assert result.matched, result
        assert result.data.decode().strip() == "hello from a"  # ran inside A's server
        final = await client.wait("a-hello", timeout=15)
        assert final.exit_code == 0
        listed = {p.process_id: p for p in await client.list()}
        assert listed["a-hello"].label == "from a"
        assert listed["a-hello"].state in ("exited", "closed")
    finally:
        await client.close()


def test_rest_mirror_works_with_the_users_token(hub: Hub) -> None:
    status, processes = rest(hub, "GET", "a", "a")
    assert status == 200, processes
    assert "a-hello" in {p["processId"] for p in processes}
    status, output = http(
        "GET", hub.user_url("a") + "api/exec/processes/a-hello/output", hub.tokens["a"]
    )
    assert (status, output) == (200, "hello from a\n")


def test_no_token_is_refused(hub: Hub) -> None:
    status, _ = rest(hub, "GET", "a", None)
    assert status == REFUSED


async def test_other_users_server_refuses_and_is_untouched(hub: Hub) -> None:
    b = await connect(hub, "b", "b")
    try:
        await b.start("b-sleeper", ["sleep", "300"], label="b's own")
        before = {p.process_id: p for p in await b.list()}
        assert before["b-sleeper"].state == "running"

        # A's token on B's websocket: refused at the HTTP upgrade.
        with pytest.raises(InvalidStatus) as refused:
            await connect(hub, "b", "a")
        assert refused.value.response.status_code == REFUSED

        # ... and on B's REST mirror, reading, starting and deleting alike.
        assert rest(hub, "GET", "b", "a")[0] == REFUSED
        assert rest(hub, "GET", "b", "a", "/b-sleeper")[0] == REFUSED
        start = {"processId": "a-intruder", "argv": ["true"]}
        assert rest(hub, "POST", "b", "a", body=start)[0] == REFUSED
        assert rest(hub, "DELETE", "b", "a", "/b-sleeper")[0] == REFUSED

        after = {p.process_id: p for p in await b.list()}
        assert set(after) == set(before)
        assert after["b-sleeper"].state == "running"
        assert after["b-sleeper"].pid == before["b-sleeper"].pid
        # B's own token still works on B's REST mirror.
        status, processes = rest(hub, "GET", "b", "b")
        assert status == 200
        assert [p["processId"] for p in processes] == ["b-sleeper"]
    finally:
        await b.close()


async def test_each_user_server_has_its_own_registry(hub: Hub) -> None:
    a, b = await asyncio.gather(connect(hub, "a", "a"), connect(hub, "b", "b"))
    try:
        a_ids = {p.process_id for p in await a.list()}
        b_ids = {p.process_id for p in await b.list()}
        assert "a-hello" in a_ids and "b-sleeper" not in a_ids
        assert "b-sleeper" in b_ids and "a-hello" not in b_ids
        # Process ids are per registry: B may use an id A already has.
        await b.start("a-hello", ["true"])
        assert (await b.wait("a-hello", timeout=15)).exit_code == 0
        assert [p.argv[0] for p in await a.list() if p.process_id == "a-hello"] == [sys.executable]
    finally:
        await asyncio.gather(a.close(), b.close())


def query_url(hub: Hub, server: str, token_of: str) -> str:
    return hub.user_url(server) + "api/exec/ws?token=" + hub.tokens[token_of]


async def test_query_token_is_refused_by_default(hub: Hub) -> None:
    """JupyterHub 5+ single-user servers ignore `?token=` unless JUPYTERHUB_ALLOW_TOKEN_IN_URL."""
    with pytest.raises(InvalidStatus) as refused:
        await ExecClient.connect(query_url(hub, "a", "a"))
    assert refused.value.response.status_code == REFUSED


async def test_query_token_with_allow_token_in_url(hub: Hub) -> None:
    """b's server sets JUPYTERHUB_ALLOW_TOKEN_IN_URL=1: the URL form Codex uses works there."""
    client = await ExecClient.connect(query_url(hub, "b", "b"))
    try:
        assert "b-sleeper" in {p.process_id for p in await client.list()}
    finally:
        await client.close()
    with pytest.raises(InvalidStatus) as refused:
        await ExecClient.connect(query_url(hub, "b", "a"))  # still only b's own token
    assert refused.value.response.status_code == REFUSED


# What `%exec` does in a kernel of A's server: find the server that launched it
# (JPY_PARENT_PID, its jpserver-PID.json) and connect with JUPYTERHUB_API_TOKEN.
KERNEL_DISCOVERY = """
from jupyter_exec.client import SyncExecClient
from tests.daemon.harness import daemon_pid, stop_daemon, wait_gone
from jupyter_exec.client.discovery import find_server
target = find_server()
with SyncExecClient.connect(target.url, target.token) as client:
    ids = sorted(p.process_id for p in client.list())
print(target.source, target.url, target.token == __import__("os").environ["JUPYTERHUB_API_TOKEN"], ids)
"""


async def test_kernel_side_discovery_uses_the_hub_token(hub: Hub) -> None:
    client = await connect(hub, "a", "a")
    try:
        env = {"JPY_PARENT_PID": str(hub.server_pids["a"])}  # as the kernel gets it
        argv = [sys.executable, "-c", KERNEL_DISCOVERY]
        await client.start("a-kernelish", argv, env=env, inherit_env=True)
        final = await client.wait("a-kernelish", timeout=30)
        output = (await client.read("a-kernelish", 0)).data.decode()
        assert final.exit_code == 0, output
        source, url, same_token, ids = output.strip().split(" ", 3)
        assert source == "kernel-parent"
        assert url.startswith("http://127.0.0.1:") and url.endswith("/user/a/")  # direct, no proxy
        assert same_token == "True"
        assert "a-hello" in ids and "a-kernelish" in ids
    finally:
        await client.close()


def test_a_stopped_user_server_leaves_its_processes_to_the_users_daemon(hub: Hub) -> None:
    """What culling an idle server does with a local spawner: the server goes, the user's
    exec daemon (in the same home's runtime dir) keeps the processes (docs/jupyterhub.md)."""
    with SyncExecClient.connect(hub.user_url("a"), hub.tokens["a"]) as client:  # as the magics
        client.start("a-long", ["sleep", "600"])
        pid = next(p.pid for p in client.list() if p.process_id == "a-long")
        assert pid and alive(pid)
    runtime = hub.workdir / "home" / "a" / ".local" / "share" / "jupyter" / "runtime"
    daemon = daemon_pid(runtime)
    assert daemon is not None
    hub.stop_server("a")
    assert not alive(hub.server_pids.pop("a"))
    assert alive(pid) and alive(daemon), "the process and its daemon outlive the server"
    stop_daemon(runtime)  # `jupyter exec shutdown` as user a would do the same
    assert wait_gone([pid, daemon])
    # The proxy's route is gone: the hub answers with a redirect to its /hub/user/a/ page.
    assert rest(hub, "GET", "a", "a")[0] == 302
