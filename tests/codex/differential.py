"""Differential testing: the same requests to Codex's own exec-server and to ours.

Codex's ``codex exec-server --listen stdio`` is the reference (SPEC 12). A
`Case` builds the same small workspace in a fresh directory on each side,
sends the same `Step`s to both, and each answer is normalized before the
comparison: the request id is dropped, the side's workspace directory (plain
or as a ``file://`` URI) becomes ``<ws>``, an error is reduced to its code
(the words differ, the code is what Codex's client acts on), and a step may
pick the part of a result that must agree (``environment/info`` names its own
version and paths). `diff` lists every disagreement, so a failing test shows
all of them at once.

Codex's side (`codex_side`) runs ``codex exec-server --listen stdio``; ours
(`our_side`) runs over stdio, the standalone websocket server or the
Jupyter extension (harness.standalone_server / harness.jupyter_server). Each
`Side` has done the handshake (``initialize`` + ``initialized``) before a
case runs, and can open more connections (`Side.connect`). Both sides get
their own ``CODEX_HOME`` (named ``<codex-home>`` in answers).

A test module keeps one Codex server and one of ours per transport: the
module-scoped ``codex_server`` and ``pair`` fixtures (conftest.py; a module
overrides ``setup_home`` or ``server_environment`` to prepare both alike)::

    def test_something(pair):
        pair.assert_same(Case("name", [Step("fs/readFile", {"path": "file://{ws}/f"})], build))

Params are templates: any string containing ``{ws}`` gets the side's
workspace path, so ``"file://{ws}/a"`` is a URI inside it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from websockets.sync.client import connect

from tests.service import stop_process

from .harness import JUPYTER_EXEC, jupyter_server, standalone_server

#: Longest we wait for one answer.
ANSWER_TIMEOUT = 30.0


class Peer(Protocol):
    """One JSON-RPC connection to an exec server."""

    def send(self, message: dict[str, Any]) -> None: ...

    def receive(self) -> dict[str, Any]: ...


@dataclass
class Client:
    """Requests and notifications over a `Peer`; notifications received meanwhile are kept."""

    peer: Peer
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def request(self, method: str, params: Any) -> dict[str, Any]:
        """The whole response (``result`` or ``error``)."""
        request_id = next(self.ids)
        self.peer.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            message = self.peer.receive()
            if "method" in message:
                self.notifications.append(message)
            elif message.get("id") == request_id:
                return message

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.peer.send(message)

    def handshake(self) -> dict[str, Any]:
        answer = self.request("initialize", {"clientName": "differential-test"})
        if "error" in answer:
            raise RuntimeError(f"initialize failed: {answer}")
        self.notify("initialized")
        return answer


# -- peers ----------------------------------------------------------------------------


@dataclass
class StdioPeer:
    """Newline-delimited JSON over a child's stdin/stdout."""

    process: subprocess.Popen[bytes]

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"server closed stdout (exit {self.process.poll()})")
        message: dict[str, Any] = json.loads(line)
        return message


@contextlib.contextmanager
def stdio_client(
    argv: list[str], cwd: Path, env: dict[str, str], handshake: bool = True
) -> Iterator[Client]:
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = Client(StdioPeer(process))
        if handshake:
            client.handshake()
        yield client
    finally:
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        stop_process(process)


def server_env(codex_home: Path) -> dict[str, str]:
    """The environment both sides' servers run in: ours, with its own ``CODEX_HOME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env["CODEX_HOME"] = str(codex_home)
    return env


@dataclass
class WsPeer:
    ws: Any

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=ANSWER_TIMEOUT))
        return message


@contextlib.contextmanager
def ws_client(url: str, handshake: bool = True) -> Iterator[Client]:
    """A connection to our websocket server (standalone or in Jupyter)."""
    with connect(url, open_timeout=10, max_size=None) as ws:
        client = Client(WsPeer(ws))
        if handshake:
            client.handshake()
        yield client


# -- cases ----------------------------------------------------------------------------


@dataclass
class Step:
    """One request. `pick` projects the result before comparing (default: all of it)."""

    method: str
    params: Any = None
    pick: Callable[[Any], Any] | None = None
    #: A notification (no answer expected), e.g. to test what follows it.
    notification: bool = False


@dataclass
class Case:
    """A named request sequence run against a freshly built workspace on each side."""

    name: str
    steps: list[Step]
    #: Creates the workspace's contents in the (empty) directory it is given.
    build: Callable[[Path], None] = lambda ws: None


def fill(template: Any, ws: Path) -> Any:
    """`template` with ``{ws}`` in every string replaced by the workspace path."""
    if isinstance(template, str):
        return template.replace("{ws}", str(ws))
    if isinstance(template, list):
        return [fill(item, ws) for item in template]
    if isinstance(template, dict):
        return {key: fill(value, ws) for key, value in template.items()}
    return template


def normalize(
    answer: dict[str, Any], places: dict[str, Path], pick: Callable[[Any], Any] | None
) -> Any:
    """What must agree: ``{"error": code}`` or ``{"result": picked result}``, with each of
    `places` (``{"<ws>": workspace, "<codex-home>": ...}``) named instead of its path."""
    if "error" in answer:
        return {"error": answer["error"].get("code")}
    result = answer.get("result")
    if pick is not None:
        result = pick(result)
    return {"result": _unpath(result, places)}


def _unpath(value: Any, places: dict[str, Path]) -> Any:
    if isinstance(value, str):
        for name, path in places.items():
            value = value.replace(path.as_uri(), name).replace(str(path), name)
        return value
    if isinstance(value, list):
        return [_unpath(item, places) for item in value]
    if isinstance(value, dict):
        return {key: _unpath(item, places) for key, item in value.items()}
    return value


def run(side: Side, case: Case, ws: Path) -> list[tuple[Any, dict[str, Any]]]:
    """Build the workspace, send every step; per step its normalized and its raw answer."""
    ws.mkdir(parents=True)
    case.build(ws)
    places = {"<ws>": ws, "<codex-home>": side.codex_home}
    answers = []
    for step in case.steps:
        params = fill(step.params, ws)
        if step.notification:
            side.client.notify(step.method, params)
            continue
        raw = side.client.request(step.method, params)
        answers.append((normalize(raw, places, step.pick), raw))
    return answers


def diff(
    case: Case,
    codex: list[tuple[Any, dict[str, Any]]],
    ours: list[tuple[Any, dict[str, Any]]],
) -> list[str]:
    """Every step whose normalized answers differ, with both raw answers."""
    steps = [step for step in case.steps if not step.notification]
    problems = []
    for step, (want, codex_raw), (got, our_raw) in zip(steps, codex, ours, strict=True):
        if want != got:
            problems.append(
                f"{case.name}: {step.method} {json.dumps(step.params)[:300]}\n"
                f"  codex: {json.dumps(want)[:2000]}\n  ours:  {json.dumps(got)[:2000]}\n"
                f"  (raw codex error/ours: {json.dumps(codex_raw.get('error'))} / "
                f"{json.dumps(our_raw.get('error'))})"
            )
    return problems


_CASE_NUMBERS = itertools.count(1)


@dataclass
class Side:
    """One server under comparison, connected and handshaken."""

    client: Client
    #: Where the cases' workspaces go (inside our server's root).
    workspaces: Path
    #: Its ``CODEX_HOME`` (named ``<codex-home>`` in answers).
    codex_home: Path
    #: Opens another connection to the same server (`handshake` False: none done).
    connect: Callable[[bool], contextlib.AbstractContextManager[Client]]


@dataclass
class Pair:
    """Codex's server and one of ours."""

    codex: Side
    ours: Side

    def compare(self, case: Case) -> list[str]:
        """Run `case` on both sides in fresh workspaces; the differences (empty: none)."""
        n = next(_CASE_NUMBERS)  # Codex's side outlives one Pair: names never repeat
        slug = "".join(c if c.isalnum() else "-" for c in case.name)
        name = f"{n:03d}-{slug}"
        return diff(
            case,
            run(self.codex, case, self.codex.workspaces / name),
            run(self.ours, case, self.ours.workspaces / name),
        )

    def assert_same(self, *cases: Case) -> None:
        problems = [problem for case in cases for problem in self.compare(case)]
        assert not problems, "Codex's server and ours answer differently:\n" + "\n".join(problems)


# -- both sides ----------------------------------------------------------------------

#: Where our server is reached: ``jupyter-exec serve`` over stdio and ws, and Jupyter.
TRANSPORTS = ("stdio", "standalone", "jupyter")


@contextlib.contextmanager
def codex_side(
    launcher: Path, base: Path, setup_home: Callable[[Path], None] = lambda home: None
) -> Iterator[Side]:
    """Codex's own ``codex exec-server --listen stdio``, with its own ``CODEX_HOME``,
    filled by `setup_home` before it starts (Codex reads installed plugins at start)."""
    workspaces, home = base / "codex-ws", base / "codex-home"
    workspaces.mkdir(parents=True)
    home.mkdir()
    setup_home(home)
    argv = [str(launcher), "exec-server", "--listen", "stdio"]

    def connect(handshake: bool) -> contextlib.AbstractContextManager[Client]:
        return stdio_client(argv, workspaces, server_env(home), handshake)

    with connect(True) as client:
        yield Side(client, workspaces, home, connect)


@contextlib.contextmanager
def our_side(
    transport: str, base: Path, setup_home: Callable[[Path], None] = lambda home: None
) -> Iterator[Side]:
    """Our server over `transport` (one of `TRANSPORTS`); workspaces go in its root."""
    root = (base / f"ours-{transport}").resolve()
    home = base / "our-codex-home"
    root.mkdir(parents=True)
    home.mkdir()
    setup_home(home)
    env = server_env(home)
    with contextlib.ExitStack() as stack:
        if transport == "stdio":
            argv = [JUPYTER_EXEC, "serve", "--listen", "stdio", "--root", str(root)]

            def connect(handshake: bool) -> contextlib.AbstractContextManager[Client]:
                return stdio_client(argv, root, env, handshake)

        else:
            with _environ(env):  # the server (and Jupyter's daemon) inherit it
                if transport == "standalone":
                    server = stack.enter_context(standalone_server(root))
                elif transport == "jupyter":
                    runtime = base / "jupyter-runtime"
                    runtime.mkdir()
                    token = secrets.token_hex(16)
                    server = stack.enter_context(jupyter_server(root, runtime, token))
                else:
                    raise ValueError(f"unknown transport {transport!r}")

            def connect(handshake: bool) -> contextlib.AbstractContextManager[Client]:
                return ws_client(server.url, handshake)

        client = stack.enter_context(connect(True))
        yield Side(client, root, home, connect)


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
