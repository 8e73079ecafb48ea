"""fs/* follows process access; `confine_to_root` confines both (SPEC 4), over real sockets.

Real servers (``jupyter-exec serve`` and ``jupyter server`` subprocesses), real
websockets, real processes. Each server's root and an ``outside`` directory
are siblings in one temporary directory.
"""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .harness import Rpc, RunningServer, jupyter_server, rpc, standalone_server

CONFINED = "(confine_to_root is on)"


@dataclass
class Area:
    root: Path
    outside: Path


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Area:
    base = tmp_path_factory.mktemp("fs-access").resolve()
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "escape").symlink_to(outside)  # a symlink inside the root leading out
    return Area(root, outside)


@pytest.fixture(scope="module")
def open_server(area: Area) -> Iterator[RunningServer]:
    with standalone_server(area.root) as server:
        yield server


@pytest.fixture(scope="module")
def confined_standalone(area: Area) -> Iterator[RunningServer]:
    with standalone_server(area.root, "--confine-to-root") as server:
        yield server


@pytest.fixture(scope="module")
def confined_jupyter(
    area: Area, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    runtime = tmp_path_factory.mktemp("confined-jupyter")
    token = secrets.token_hex(16)
    with jupyter_server(
        area.root, runtime, token, "--ExecExtensionApp.confine_to_root=True"
    ) as server:
        yield server


def front_of(server: RunningServer) -> str:
    """How refusals name the server (SPEC 3: the rules are the front's)."""
    url = urlsplit(server.url)
    if url.path.endswith("api/exec/ws"):
        return f"Jupyter server http://{url.netloc}/"
    return "jupyter-exec serve"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def start(client: Rpc, process_id: str, code: str, **params: Any) -> dict[str, Any]:
    """process/start of a Python child; ended with its connection (and so with the test)."""
    argv = [sys.executable, "-c", code]
    return client.request(
        "process/start", {"processId": process_id, "argv": argv, "lifetime": "connection", **params}
    )


def output_of(client: Rpc, process_id: str) -> str:
    """All output of a process, once it has closed."""
    result = client.call("process/read", {"processId": process_id, "waitMs": 20_000})
    while not result["closed"]:
        after = result["nextSeq"] - 1
        more = {"processId": process_id, "afterSeq": after, "waitMs": 20_000}
        next_result = client.call("process/read", more)
        next_result["chunks"] = result["chunks"] + next_result["chunks"]
        result = next_result
    return b"".join(base64.b64decode(c["chunk"]) for c in result["chunks"]).decode()


def error_of(response: dict[str, Any], code: int) -> str:
    assert "error" in response, response
    assert response["error"]["code"] == code, response
    message: str = response["error"]["message"]
    return message


PWD = "import os; print(os.getcwd())"


def test_by_default_fs_reaches_wherever_processes_run(
    open_server: RunningServer, area: Area
) -> None:
    target = area.outside / "new" / "made-by-fs.txt"
    with rpc(open_server.url) as client:
        # a process may run outside the root, by absolute path or relative to the root
        assert "result" in start(client, "abs", PWD, cwd=str(area.outside))
        assert output_of(client, "abs") == f"{area.outside}\n"
        assert "result" in start(client, "rel", PWD, cwd="../outside")
        assert output_of(client, "rel") == f"{area.outside}\n"
        # ... and so may fs/*: absolute paths and file:// URIs
        client.call("fs/createDirectory", {"path": target.parent.as_uri()})
        client.call("fs/writeFile", {"path": str(target), "dataBase64": b64(b"made")})
        assert target.read_bytes() == b"made"
        read = client.call("fs/readFile", {"path": (area.outside / "secret.txt").as_uri()})
        assert base64.b64decode(read["dataBase64"]) == b"secret"
        through_link = client.call(
            "fs/readFile", {"path": str(area.root / "escape" / "secret.txt")}
        )
        assert base64.b64decode(through_link["dataBase64"]) == b"secret"
        client.call("fs/remove", {"path": str(target.parent)})
        assert not target.parent.exists()


@pytest.fixture(params=["standalone", "jupyter"])
def confined(request: pytest.FixtureRequest) -> RunningServer:
    """`jupyter-exec serve --confine-to-root` and `ExecExtensionApp.confine_to_root = True`."""
    return request.getfixturevalue(f"confined_{request.param}")  # type: ignore[no-any-return]


def test_confine_to_root_refuses_processes_and_files_outside(
    confined: RunningServer, area: Area
) -> None:
    root, outside = area.root, area.outside
    front = front_of(confined)
    with rpc(confined.url) as client:
        bystander = start(
            client, "bystander", "import sys; print('up'); print(sys.stdin.read())", pipeStdin=True
        )
        assert "result" in bystander, bystander

        # process/start: an absolute cwd outside, a relative one escaping with `..`,
        # a symlink inside the root that leads out, a file:// URI outside
        for cwd in (str(outside), "../outside", "sub/../../outside", "escape", outside.as_uri()):
            message = error_of(start(client, f"out-{cwd}", PWD, cwd=cwd), -32602)
            assert message == f"cwd {cwd!r} is outside the root {root} of {front} {CONFINED}"
        listed = client.call("process/list", {})["processes"]
        assert [p["processId"] for p in listed] == ["bystander"]

        # fs/*: reading outside reads as absent (-32004), writing is refused (-32600)
        secret = outside / "secret.txt"
        for path in (str(secret), secret.as_uri(), f"{root}/../outside/secret.txt"):
            message = error_of(client.request("fs/readFile", {"path": path}), -32004)
            assert message.endswith(f"is outside the root {root} of {front} {CONFINED}"), message
        via_link = root / "escape" / "secret.txt"
        message = error_of(client.request("fs/getMetadata", {"path": str(via_link)}), -32004)
        assert message == f"path {via_link} is outside the root {root} of {front} {CONFINED}"
        for path in (outside / "planted.txt", root / "escape" / "planted.txt"):
            write = {"path": str(path), "dataBase64": b64(b"planted")}
            message = error_of(client.request("fs/writeFile", write), -32600)
            assert message == f"path {path} is outside the root {root} of {front} {CONFINED}"
        error_of(client.request("fs/remove", {"path": str(secret)}), -32600)
        copy = {"sourcePath": str(secret), "destinationPath": str(root / "stolen.txt")}
        error_of(client.request("fs/copy", copy), -32004)

        # nothing outside was touched, and nothing inside was made by the refusals
        assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
        assert secret.read_text() == "secret"
        assert not (root / "stolen.txt").exists()

        # inside the root everything works: cwds relative and absolute, fs/*
        assert "result" in start(client, "in-rel", PWD, cwd="sub")
        assert output_of(client, "in-rel") == f"{root}/sub\n"
        assert "result" in start(client, "in-abs", PWD, cwd=str(root / "sub"))
        assert output_of(client, "in-abs") == f"{root}/sub\n"
        inside = root / "sub" / "inside.txt"
        client.call("fs/writeFile", {"path": inside.as_uri(), "dataBase64": b64(b"in")})
        read = client.call("fs/readFile", {"path": str(inside)})
        assert base64.b64decode(read["dataBase64"]) == b"in"
        client.call("fs/remove", {"path": str(inside)})

        # the bystander was never disturbed
        client.call("process/write", {"processId": "bystander", "chunk": b64(b"still here")})
        client.call("process/write", {"processId": "bystander", "chunk": "", "eof": True})
        assert output_of(client, "bystander") == "up\nstill here\n"
