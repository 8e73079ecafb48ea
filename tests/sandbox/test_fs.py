"""`fs/*` under a sandbox (docs/sandbox.md): what Codex's `apply_patch` may write and read.

Every method, over real JSON-RPC to an embedded service, in a workspace laid
out with the ways out a patch could take: a path outside, a symlink leading
outside, a dangling symlink, a link into a protected directory, Jupyter's
config inside the workspace, the runtime dir with a token in it, and
`/proc/self/environ`. Each refusal sits beside the same call unsandboxed,
which succeeds, so a test whose call could never succeed would fail. The
last test asks a real sandboxed process and `fs/writeFile` about the same
paths: they must agree.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.wire.errors import SandboxDeniedError, error_from_wire
from tests.service import RawPeer, make_service

from .harness import needs_sandbox, outside_tmp, run
from .test_policy import WORKSPACE_WRITE, codex

pytestmark = pytest.mark.timeout(120)
DATA = base64.b64encode(b"patched\n").decode()
Connect = Callable[..., Awaitable["Fs"]]
EROFS = "Read-only file system (os error 30)"  # Codex's own server's words (docs/sandbox.md)


@dataclass
class Layout:
    root: Path  # the front's root: the workspace
    outside: Path  # outside the root and outside /tmp
    runtime: Path  # JUPYTER_RUNTIME_DIR, inside the root (hidden wins over writable)
    config: Path  # JUPYTER_CONFIG_DIR, inside the root (protected wins over writable)
    data: Path  # JUPYTER_DATA_DIR, protected too, one level further down

    @property
    def token(self) -> Path:
        return self.runtime / "jpserver-1.json"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layout]:
    root = (tmp_path / "root").resolve()
    with outside_tmp() as outside:
        lay = Layout(root, outside, root / "state" / "runtime", root / "jupyter-config",
                     root / "share" / "jupyter")  # fmt: skip
        for path in (lay.runtime, lay.config, lay.data, root / ".git" / "hooks", outside / "dir"):
            path.mkdir(parents=True)
        lay.token.write_text('{"token": "secret"}')
        (root / "in.txt").write_text("in\n")
        (root / "tree" / "sub").mkdir(parents=True)
        (root / "tree" / "sub" / "f.txt").write_text("f\n")
        (outside / "victim.txt").write_text("victim\n")
        (root / "esc").symlink_to(outside)  # a directory link leading out
        (root / "dangling").symlink_to(outside / "new.txt")  # a file link leading out
        (root / "cfg").symlink_to(lay.config)  # a link into a protected directory
        (root / "tok").symlink_to(lay.token)  # a link to a hidden file
        monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(lay.runtime))
        monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(lay.config))
        monkeypatch.setenv("JUPYTER_DATA_DIR", str(lay.data))
        yield lay


class Fs:
    """A connection's `fs/*` calls, each with this connection's `sandbox` param (if any)."""

    def __init__(self, peer: RawPeer, sandbox: Any) -> None:
        self.peer = peer
        self.sandbox = sandbox

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        if self.sandbox is not None:
            params["sandbox"] = self.sandbox
        return await self.peer.call(method, params)

    async def ok(self, method: str, **params: Any) -> Any:
        answer = await self.call(method, **params)
        assert "result" in answer, (method, params, answer)
        return answer["result"]

    async def denied(self, method: str, **params: Any) -> dict[str, Any]:
        """A write the sandbox refuses: -32603 with Codex's words, the path and why."""
        error = (await self.call(method, **params)).get("error")
        assert error is not None and error["code"] == -32603, (method, params, error)
        assert error["message"].startswith(EROFS) and error["data"]["kind"] == "sandboxDenied"
        return dict(error)

    async def absent(self, method: str, **params: Any) -> None:
        error = (await self.call(method, **params)).get("error")
        assert error is not None and error["code"] == -32004, (method, params, error)
        assert "No such file or directory" in error["message"]


@contextlib.asynccontextmanager
async def connections(tmp_path: Path, layout: Layout) -> AsyncIterator[Connect]:
    """`await connect(client, sandbox, **front_rules)`: an `Fs` on a fresh service each."""
    opened: list[tuple[RawPeer, Any]] = []

    async def connect(client: str = "test", sandbox: Any = None, **rules: Any) -> Fs:
        service = make_service(tmp_path, root_dir=layout.root, **rules)
        peer = RawPeer(service)
        opened.append((peer, service))
        peer.seen = []
        await peer.call("initialize", {"clientName": client})
        peer.send("initialized", notify=True)
        return Fs(peer, sandbox)

    try:
        yield connect
    finally:
        for peer, service in opened:
            await peer.close()
            await service.aclose()


#: Four ways the same workspace-write of the root reaches a call.
WAYS = {
    "request": {"sandbox": "workspace-write"},
    "codex-object": {"sandbox": "codex"},  # filled in with the layout's root
    "agent": {"client": "codex-environment"},  # agent_sandbox's default
    "default-sandbox": {"default_sandbox": "workspace-write"},
}


def uri(path: Path | str) -> str:
    return Path(path).as_uri()


async def open_way(connect: Connect, way: str, layout: Layout) -> Fs:
    args = dict(WAYS[way])
    if args.get("sandbox") == "codex":
        args["sandbox"] = codex(WORKSPACE_WRITE, "restricted", [uri(layout.root)])
    return await connect(**args)


@pytest.mark.parametrize("way", list(WAYS))
async def test_writes_land_in_the_workspace_only(tmp_path: Path, layout: Layout, way: str) -> None:
    async with connections(tmp_path, layout) as connect:
        fs = await open_way(connect, way, layout)
        root, outside = layout.root, layout.outside
        # Inside: every write lands.
        await fs.ok("fs/writeFile", path=uri(root / "new.txt"), dataBase64=DATA)
        await fs.ok("fs/createDirectory", path=uri(root / "a" / "b"), recursive=True)
        await fs.ok("fs/copy", sourcePath=uri(root / "in.txt"), destinationPath=uri(root / "c.txt"))
        await fs.ok("fs/copy", sourcePath=uri(root / "tree"), destinationPath=uri(root / "t2"),
                    recursive=True)  # fmt: skip
        await fs.ok("fs/remove", path=uri(root / "c.txt"), recursive=False, force=False)
        await fs.ok("fs/remove", path=uri(root / "esc"))  # the link itself lies inside
        assert (root / "new.txt").read_text() == "patched\n" and (root / "a" / "b").is_dir()
        assert (root / "t2" / "sub" / "f.txt").exists() and not (root / "esc").is_symlink()
        (root / "esc").symlink_to(outside)
        # Outside, directly or through a symlink: refused, and nothing changed there.
        for target in (outside, root / "esc"):
            error = await fs.denied("fs/writeFile", path=uri(target / "x.txt"), dataBase64=DATA)
            assert error["data"]["path"] == str(target / "x.txt")
            assert "outside the sandbox's writable roots" in error["message"]
            raised = error_from_wire(error)  # a Python client gets the same, typed
            assert isinstance(raised, SandboxDeniedError) and raised.message == error["message"]
            await fs.denied("fs/writeFile", path=uri(target / "victim.txt"), dataBase64=DATA)
            await fs.denied("fs/createDirectory", path=uri(target / "d"), recursive=True)
            await fs.denied("fs/createDirectory", path=uri(target / "d"), recursive=False)
            await fs.denied(
                "fs/remove", path=uri(target / "victim.txt"), recursive=False, force=False
            )
            await fs.denied("fs/remove", path=uri(target / "dir"))
            await fs.denied("fs/copy", sourcePath=uri(root / "in.txt"),
                            destinationPath=uri(target / "c.txt"))  # fmt: skip
            await fs.denied("fs/copy", sourcePath=uri(root / "tree"),
                            destinationPath=uri(target / "t"), recursive=True)  # fmt: skip
        await fs.denied("fs/writeFile", path=uri(root / "dangling"), dataBase64=DATA)
        # A link already in a destination tree leads nowhere either.
        (root / "t3").mkdir()
        (root / "t3" / "sub").symlink_to(outside / "dir")
        await fs.denied("fs/copy", sourcePath=uri(root / "tree"), destinationPath=uri(root / "t3"),
                        recursive=True)  # fmt: skip
        assert sorted(p.name for p in outside.iterdir()) == ["dir", "victim.txt"]
        assert list((outside / "dir").iterdir()) == []
        assert (outside / "victim.txt").read_text() == "victim\n"
        # What changes nothing is no write, as in a sandbox: the OS answers.
        await fs.ok("fs/createDirectory", path=uri(outside / "dir"), recursive=True)
        await fs.ok("fs/remove", path=uri(outside / "missing"), force=True)
        await fs.absent("fs/remove", path=uri(outside / "missing"), force=False)
        await fs.absent("fs/writeFile", path=uri(outside / "no" / "x.txt"), dataBase64=DATA)
        # Reading outside is fine: the sandbox reads everywhere.
        read = await fs.ok("fs/readFile", path=uri(root / "esc" / "victim.txt"))
        assert base64.b64decode(read["dataBase64"]) == b"victim\n"


@pytest.mark.parametrize("way", list(WAYS))
async def test_protected_paths_stay_read_only(tmp_path: Path, layout: Layout, way: str) -> None:
    async with connections(tmp_path, layout) as connect:
        fs = await open_way(connect, way, layout)
        root, config = layout.root, layout.config
        startup = "jupyter_server_config.py"
        for target in (config / startup, root / "cfg" / startup):
            error = await fs.denied("fs/writeFile", path=uri(target), dataBase64=DATA)
            assert f"is in {config}, read-only in every sandbox" in error["message"]
        await fs.denied("fs/createDirectory", path=uri(config / "d"))
        await fs.denied(
            "fs/copy", sourcePath=uri(root / "in.txt"), destinationPath=uri(config / "x")
        )
        await fs.denied("fs/remove", path=uri(config))
        await fs.ok("fs/remove", path=uri(config / "missing"), force=True)  # changes nothing
        # Removing what holds a protected directory would remove it too; a link does not.
        error = await fs.denied("fs/remove", path=uri(root / "share"))
        assert f"holds {layout.data}, read-only in every sandbox" in error["message"]
        await fs.ok("fs/remove", path=uri(root / "cfg"))
        assert config.is_dir() and layout.data.is_dir() and not list(config.iterdir())
        if way == "codex-object":  # Codex's protected subpaths of its project roots
            error = await fs.denied("fs/writeFile", path=uri(root / ".git" / "hooks" / "pre-commit"),
                                    dataBase64=DATA)  # fmt: skip
            assert f"is in {root / '.git'}" in error["message"]


@pytest.mark.parametrize("way", list(WAYS))
async def test_hidden_paths_cannot_be_read(tmp_path: Path, layout: Layout, way: str) -> None:
    async with connections(tmp_path, layout) as connect:
        fs = await open_way(connect, way, layout)
        root, token = layout.root, layout.token
        for path in (token, root / "tok", Path("/proc/self/environ")):
            await fs.absent("fs/readFile", path=uri(path))
            await fs.absent("fs/getMetadata", path=uri(path))
            await fs.absent("fs/canonicalize", path=uri(path))
            await fs.absent("fs/copy", sourcePath=uri(path), destinationPath=uri(root / "stolen"))
        await fs.absent("fs/writeFile", path=uri(token), dataBase64=DATA)
        await fs.absent("fs/remove", path=uri(token), force=False)
        # The runtime dir itself is there, and empty, as a sandboxed process sees it.
        listed = await fs.ok("fs/readDirectory", path=uri(layout.runtime))
        assert listed == {"entries": []}
        await fs.ok("fs/copy", sourcePath=uri(root / "state"), destinationPath=uri(root / "copy"),
                    recursive=True)  # fmt: skip
        assert (root / "copy" / "runtime").is_dir() and not list(
            (root / "copy" / "runtime").iterdir()
        )
        assert not (root / "stolen").exists()
        watch = await fs.ok(
            "fs/watchMissing", watchId=1, missing=[uri(layout.runtime / "new.json")]
        )
        assert watch == {"watching": True}  # nothing inside is watched: no news of it either
        await fs.denied("fs/remove", path=uri(root / "state"))  # it holds the runtime dir
        assert token.read_text() == '{"token": "secret"}'


async def test_read_only_writes_nothing(tmp_path: Path, layout: Layout) -> None:
    async with connections(tmp_path, layout) as connect:
        root = layout.root
        for sandbox in ("read-only", codex([WORKSPACE_WRITE[0]], "restricted", [uri(root)])):
            fs = await connect(sandbox=sandbox)
            error = await fs.denied("fs/writeFile", path=uri(root / "new.txt"), dataBase64=DATA)
            assert "(read-only: none)" in error["message"]
            await fs.denied("fs/createDirectory", path=uri(root / "d"))
            await fs.denied("fs/remove", path=uri(root / "in.txt"))
            await fs.denied("fs/copy", sourcePath=uri(root / "in.txt"), destinationPath="/tmp/x")
            await fs.ok("fs/createDirectory", path=uri(root))  # exists: nothing to write
            assert base64.b64decode((await fs.ok("fs/readFile", path=uri(root / "in.txt")))[
                "dataBase64"]) == b"in\n"  # fmt: skip
        assert not (root / "new.txt").exists() and (root / "in.txt").exists()


async def test_unsandboxed_the_same_calls_succeed(tmp_path: Path, layout: Layout) -> None:
    async with connections(tmp_path, layout) as connect:
        fs = await connect()  # an ordinary client, default_sandbox none
        root, outside, token = layout.root, layout.outside, layout.token
        await fs.ok("fs/writeFile", path=uri(root / "esc" / "x.txt"), dataBase64=DATA)
        await fs.ok("fs/writeFile", path=uri(root / "dangling"), dataBase64=DATA)
        await fs.ok("fs/createDirectory", path=uri(outside / "d"))
        await fs.ok("fs/copy", sourcePath=uri(root / "in.txt"), destinationPath=uri(outside / "c"))
        await fs.ok("fs/writeFile", path=uri(root / "cfg" / "x.py"), dataBase64=DATA)
        await fs.ok("fs/remove", path=uri(outside / "victim.txt"), force=False)
        read = await fs.ok("fs/readFile", path=uri(root / "tok"))
        assert base64.b64decode(read["dataBase64"]) == token.read_bytes()
        await fs.ok("fs/readFile", path="/proc/self/environ")
        listed = await fs.ok("fs/readDirectory", path=uri(layout.runtime))
        assert [e["fileName"] for e in listed["entries"]] == [token.name]
        assert sorted(p.name for p in outside.iterdir()) == ["c", "d", "dir", "new.txt", "x.txt"]
        assert (layout.config / "x.py").exists()


async def test_a_looser_sandbox_than_the_front_is_refused(tmp_path: Path, layout: Layout) -> None:
    async with connections(tmp_path, layout) as connect:
        fs = await connect(client="codex-environment", sandbox="none")
        answer = await fs.call("fs/writeFile", path=uri(layout.root / "x"), dataBase64=DATA)
        assert answer["error"]["code"] == -32602
        assert "looser than this server's agent_sandbox" in answer["error"]["message"]
        bad = await (await connect(sandbox="strict")).call("fs/readFile", path=uri(layout.token))
        assert (
            bad["error"]["code"] == -32602 and "sandbox must be one of" in bad["error"]["message"]
        )
        assert not (layout.root / "x").exists()


async def test_files_and_processes_agree(tmp_path: Path, layout: Layout) -> None:
    """The same policy, asked of a real sandboxed process and of fs/writeFile."""
    async with connections(tmp_path, layout) as connect:
        needs_sandbox()
        root = layout.root
        fs = await connect(sandbox="workspace-write")
        targets = [root / "p.txt", layout.outside / "p.txt", root / "esc" / "q.txt",
                   root / "dangling", layout.config / "p.py", root / "cfg" / "q.py",
                   Path("/tmp") / f"jx-agree-{root.parent.name}.txt"]  # fmt: skip
        by_process, by_fs = [], []
        for target in targets:
            done = await run(fs.peer, ["sh", "-c", 'echo x > "$1" && echo wrote', "sh", str(target)],
                             cwd=str(root), sandbox="workspace-write")  # fmt: skip
            by_process.append("wrote" in done.output)
            target.resolve().unlink(missing_ok=True)  # what was written, never a link
            answer = await fs.call("fs/writeFile", path=uri(target), dataBase64=DATA)
            by_fs.append("result" in answer)
            target.resolve().unlink(missing_ok=True)
        assert by_process == by_fs == [True, False, False, False, False, False, True]
