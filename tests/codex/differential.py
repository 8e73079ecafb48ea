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

Our server is reached over stdio (`our_stdio`), the standalone websocket
server and the Jupyter extension (harness.standalone_server /
harness.jupyter_server, then `ws_peer`). Every peer has done the handshake
(``initialize`` + ``initialized``) before a case runs.

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

from tests.wire import stop_process

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
def stdio_client(argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Client]:
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = Client(StdioPeer(process))
        client.handshake()
        yield client
    finally:
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        stop_process(process)


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env["CODEX_HOME"] = str(home)
    return env


@contextlib.contextmanager
def codex_stdio(launcher: Path, cwd: Path, codex_home: Path) -> Iterator[Client]:
    """Codex's own ``codex exec-server --listen stdio``, with its own ``CODEX_HOME``."""
    codex_home.mkdir(parents=True, exist_ok=True)
    argv = [str(launcher), "exec-server", "--listen", "stdio"]
    with stdio_client(argv, cwd, _clean_env(codex_home)) as client:
        yield client


@contextlib.contextmanager
def our_stdio(root: Path, codex_home: Path, *extra_args: str) -> Iterator[Client]:
    """``jupyter-exec serve --listen stdio --root ROOT``."""
    codex_home.mkdir(parents=True, exist_ok=True)
    argv = [JUPYTER_EXEC, "serve", "--listen", "stdio", "--root", str(root), *extra_args]
    with stdio_client(argv, root, _clean_env(codex_home)) as client:
        yield client


@dataclass
class WsPeer:
    ws: Any

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=ANSWER_TIMEOUT))
        return message


@contextlib.contextmanager
def ws_client(url: str) -> Iterator[Client]:
    """A connection to our websocket server (standalone or in Jupyter), handshake done."""
    with connect(url, open_timeout=10, max_size=None) as ws:
        client = Client(WsPeer(ws))
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


def normalize(answer: dict[str, Any], ws: Path, pick: Callable[[Any], Any] | None) -> Any:
    """What must agree: ``{"error": code}`` or ``{"result": picked result}``, ``<ws>`` for paths."""
    if "error" in answer:
        return {"error": answer["error"].get("code")}
    result = answer.get("result")
    if pick is not None:
        result = pick(result)
    return {"result": _unpath(result, ws)}


def _unpath(value: Any, ws: Path) -> Any:
    if isinstance(value, str):
        return value.replace(ws.as_uri(), "<ws>").replace(str(ws), "<ws>")
    if isinstance(value, list):
        return [_unpath(item, ws) for item in value]
    if isinstance(value, dict):
        return {key: _unpath(item, ws) for key, item in value.items()}
    return value


def run(client: Client, case: Case, ws: Path) -> list[tuple[Any, dict[str, Any]]]:
    """Build the workspace, send every step; per step its normalized and its raw answer."""
    ws.mkdir(parents=True)
    case.build(ws)
    answers = []
    for step in case.steps:
        params = fill(step.params, ws)
        if step.notification:
            client.notify(step.method, params)
            continue
        raw = client.request(step.method, params)
        answers.append((normalize(raw, ws, step.pick), raw))
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
class Pair:
    """Codex's server and one of ours, each with a directory for the cases' workspaces."""

    codex: Client
    codex_dir: Path
    ours: Client
    our_dir: Path

    def compare(self, case: Case) -> list[str]:
        """Run `case` on both sides in fresh workspaces; the differences (empty: none)."""
        n = next(_CASE_NUMBERS)  # Codex's side outlives one Pair: names never repeat
        slug = "".join(c if c.isalnum() else "-" for c in case.name)
        name = f"{n:03d}-{slug}"
        return diff(
            case,
            run(self.codex, case, self.codex_dir / name),
            run(self.ours, case, self.our_dir / name),
        )

    def assert_same(self, *cases: Case) -> None:
        problems = [problem for case in cases for problem in self.compare(case)]
        assert not problems, "Codex's server and ours answer differently:\n" + "\n".join(problems)


# -- both sides ----------------------------------------------------------------------

#: Where our server is reached: ``jupyter-exec serve`` over stdio and ws, and Jupyter.
TRANSPORTS = ("stdio", "standalone", "jupyter")


@contextlib.contextmanager
def codex_side(launcher: Path, base: Path) -> Iterator[tuple[Client, Path]]:
    """Codex's server and the directory its cases' workspaces go in (also its cwd)."""
    workspaces = base / "codex-ws"
    workspaces.mkdir(parents=True)
    with codex_stdio(launcher, workspaces, base / "codex-home") as client:
        yield client, workspaces


@contextlib.contextmanager
def our_side(transport: str, base: Path) -> Iterator[tuple[Client, Path]]:
    """Our server over `transport` (one of `TRANSPORTS`) and its root, where workspaces go."""
    root = (base / f"ours-{transport}").resolve()
    root.mkdir(parents=True)
    if transport == "stdio":
        with our_stdio(root, base / "our-codex-home") as client:
            yield client, root
        return
    with contextlib.ExitStack() as stack:
        if transport == "standalone":
            server = stack.enter_context(standalone_server(root))
        elif transport == "jupyter":
            runtime = base / "jupyter-runtime"
            runtime.mkdir()
            server = stack.enter_context(jupyter_server(root, runtime, secrets.token_hex(16)))
        else:
            raise ValueError(f"unknown transport {transport!r}")
        yield stack.enter_context(ws_client(server.url)), root
