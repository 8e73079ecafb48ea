"""Codex's own exec-server and ours answer the same fs, discovery and environment requests alike.

One Codex server and one of ours per transport for the whole module
(differential.py); each case builds its workspace fresh on both sides. The
requests are the ones recorded in docs/codex.md, bad ones included.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .differential import Case, Pair, Side, Step


@pytest.fixture(scope="module")
def setup_home() -> Callable[[Path], None]:
    """Both sides' ``CODEX_HOME`` get the same skills and plugins."""
    return install


def install(codex_home: Path) -> None:
    """Skills and plugins installed in a ``CODEX_HOME`` (for ``capabilities/discoverV2``)."""
    for name, text in {
        "alpha": "---\nname: alpha\ndescription: first\nmetadata:\n"
        "  short-description: short a\n---\nDo alpha.\n",
        ".system/sys": "---\nname: sys\ndescription: 'system skill'\n---\nx\n",
        "plain": "no front matter\n",
    }.items():
        (codex_home / "skills" / name).mkdir(parents=True)
        (codex_home / "skills" / name / "SKILL.md").write_text(text)
    for layout in ("mkt/myplug/1.0.0", "mkt2/other/local"):
        plugin = codex_home / "plugins" / "cache" / layout
        (plugin / ".codex-plugin").mkdir(parents=True)
        manifest = {"name": layout.split("/")[1], "version": "1.0.0", "mcpServers": "./m.json"}
        (plugin / ".codex-plugin" / "plugin.json").write_text(json.dumps(manifest))
        (plugin / "m.json").write_text("{}")
        (plugin / "skills" / "s1").mkdir(parents=True)
        (plugin / "skills" / "s1" / "SKILL.md").write_text(
            "---\nname: s1\ndescription: plugin skill\n---\nx\n"
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tree(ws: Path) -> None:
    """Nested directories, files, a hidden directory, a FIFO, links to a file, a directory,
    nowhere and back up (a loop when followed)."""
    (ws / "a" / "b" / "c" / "d").mkdir(parents=True)
    (ws / "z").mkdir()
    (ws / ".hidden" / "x").mkdir(parents=True)
    (ws / "loop").mkdir()
    (ws / "a" / "f.txt").write_text("hello\n")
    (ws / "a" / "b" / "g").write_text("g\n")
    (ws / "a" / "b" / "c" / "h").write_text("h\n")
    (ws / "m.txt").write_text("m\n")
    (ws / "a" / "to-file").symlink_to("f.txt")
    (ws / "a" / "to-dir").symlink_to("b")
    (ws / "a" / "to-z").symlink_to(ws / "z")
    (ws / "a" / "dangling").symlink_to("nowhere")
    (ws / "loop" / "up").symlink_to("..")
    (ws / "z" / "to-f").symlink_to("../a/f.txt")
    os.mkfifo(ws / "z" / "fifo")


def test_existing_fs_methods_agree(pair: Pair) -> None:
    """Methods both servers had before: the driver compares what it should."""
    pair.assert_same(
        Case(
            "metadata and reads",
            [
                Step("fs/readFile", {"path": "file://{ws}/a/f.txt", "sandbox": None}),
                Step("fs/readFile", {"path": "file://{ws}/missing", "sandbox": None}),
                Step(
                    "fs/getMetadata",
                    {"path": "file://{ws}/a/to-file", "sandbox": None},
                    pick=lambda r: {k: r[k] for k in ("isDirectory", "isFile", "isSymlink")},
                ),
                Step("fs/canonicalize", {"path": "file://{ws}/a/to-dir", "sandbox": None}),
            ],
            tree,
        )
    )


def test_a_difference_is_reported(pair: Pair) -> None:
    """The comparison can fail: a file that differs between the sides is caught."""
    counter = iter(range(2))

    def differing(ws: Path) -> None:
        (ws / "f").write_text(f"side {next(counter)}")

    problems = pair.compare(
        Case("differs", [Step("fs/readFile", {"path": "file://{ws}/f"})], differing)
    )
    assert len(problems) == 1 and "fs/readFile" in problems[0]


# -- environment ----------------------------------------------------------------------

#: Every capability Codex 0.171's own server offers on Linux (environment/info): ours
#: must offer each of them too.
IMPLEMENTED = (
    "networkProxyLaunch",
    "networkProxyReviewDomains",
    "networkProxyTransparentTcp",
    "credentialMasking",
    "credentialMaskingCustomProviders",
    "capabilityDiscoverySandbox",
    "capabilityDiscoveryV2",
    "fsWatchMissing",
    "environmentConfigRead",
    "httpHeaderEnvVars",
    "sandboxedFileStreaming",
    "fileWriteStreaming",
    "shellSnapshotV2",
    "linuxRootWritePreservesDevices",
    "linuxApprovedRootWritePreservesRestrictions",
)


def _info(result: dict[str, Any]) -> dict[str, Any]:
    provider = result["providerId"]
    return {
        "capabilities": {name: result["capabilities"].get(name) for name in IMPLEMENTED},
        "others": sorted(
            name for name, on in result["capabilities"].items() if on and name not in IMPLEMENTED
        ),
        "providerId": (provider[:7], len(provider)),
    }


def test_environment_status_and_info(pair: Pair) -> None:
    pair.assert_same(
        Case(
            "status and info",
            [
                Step("environment/status", None),
                Step("environment/status", {}),
                Step("environment/info", None, pick=_info),
            ],
        )
    )


def test_environment_status_before_initialize(pair: Pair) -> None:
    for side in (pair.codex, pair.ours):
        with side.connect(False) as fresh:
            answer = fresh.request("environment/status", None)
            assert answer["error"]["code"] == -32600, answer
            fresh.request("initialize", {"clientName": "differential-test"})
            fresh.notify("initialized")
            assert fresh.request("environment/status", None)["result"] == {"status": "ready"}


def test_provider_id_is_stable(pair: Pair) -> None:
    """The same on every connection to a server (Codex's: whatever its home)."""
    first = pair.ours.client.request("environment/info", None)["result"]["providerId"]
    with pair.ours.connect(True) as again:
        assert again.request("environment/info", None)["result"]["providerId"] == first


# -- fs/walk --------------------------------------------------------------------------


def walk(path: str = "", **options: Any) -> Step:
    opts = {"maxDepth": 5, "maxEntries": 100, "maxDirectories": 100}
    opts["followDirectorySymlinks"] = False
    opts.update(options)
    return Step("fs/walk", {"path": "file://{ws}" + path, "options": opts, "sandbox": None})


def test_walk(pair: Pair) -> None:
    pair.assert_same(
        Case(
            "walk",
            [
                walk(maxDepth=0),
                walk(maxDepth=1),
                walk(),
                walk(followDirectorySymlinks=True),
                walk(followDirectorySymlinks=True, pruneHiddenDirectories=True),
                walk("/loop", followDirectorySymlinks=True, maxDepth=3),
                walk("/a/to-z"),
                walk("/a/to-z", followDirectorySymlinks=True),
                walk("/m.txt"),
                walk(maxEntries=4),
                walk(maxEntries=3, maxDepth=0),
                walk(maxDirectories=1),
                walk(maxDirectories=2),
                walk(maxDirectories=1, maxDepth=0),
            ],
            tree,
        )
    )


def test_walk_bad_input(pair: Pair) -> None:
    pair.assert_same(
        Case(
            "walk errors",
            [
                walk("/missing"),
                walk(maxEntries=0),
                walk(maxDirectories=0),
                walk(maxDepth=65),
                walk(maxEntries=50_001),
                walk(maxDepth=-1),
                Step("fs/walk", {"path": "file://{ws}"}),
                Step("fs/walk", {"path": "file://{ws}", "options": {}}),
                Step("fs/walk", {"path": "relative", "options": {}}),
                walk(),  # the server goes on
            ],
            tree,
        )
    )


# -- file streaming ---------------------------------------------------------------------


def open_(handle: str, path: str, mode: str | None = "read") -> Step:
    params: dict[str, Any] = {"handleId": handle, "path": "file://{ws}" + path, "sandbox": None}
    if mode is not None:
        params["mode"] = mode
    return Step("fs/open", params)


def read(handle: str, offset: int, length: int) -> Step:
    return Step("fs/readBlock", {"handleId": handle, "offset": offset, "len": length})


def write(handle: str, offset: int, data: bytes | str) -> Step:
    chunk = data if isinstance(data, str) else b64(data)
    return Step("fs/writeBlock", {"handleId": handle, "offset": offset, "chunk": chunk})


def close(handle: str) -> Step:
    return Step("fs/close", {"handleId": handle})


def digits(ws: Path) -> None:
    (ws / "f.txt").write_bytes(b"0123456789")
    (ws / "d").mkdir()
    (ws / "link").symlink_to("f.txt")
    (ws / "big").write_bytes(bytes(range(256)) * 8192)  # 2 MiB


def test_read_in_blocks(pair: Pair) -> None:
    pair.assert_same(
        Case(
            "read blocks",
            [
                open_("r", "/f.txt"),
                read("r", 0, 4),
                read("r", 8, 4),
                read("r", 10, 4),
                read("r", 100, 4),
                read("r", 0, 1 << 20),
                close("r"),
                open_("default mode", "/link", mode=None),
                read("default mode", 2, 3),
                open_("big", "/big"),
                read("big", 0, 1 << 20),
                read("big", 1 << 20, 1 << 20),
                read("big", 2 << 20, 1 << 20),
                close("big"),
                close("default mode"),
                open_("", "/f.txt"),
                open_("é" * 16, "/f.txt"),
                read("é" * 16, 9, 1),
                close(""),
                close("é" * 16),
            ],
            digits,
        )
    )


def test_write_in_blocks(pair: Pair) -> None:
    pair.assert_same(
        Case(
            "write blocks",
            [
                open_("w", "/new.txt", "replace"),
                Step("fs/readFile", {"path": "file://{ws}/new.txt"}),  # created at open
                write("w", 0, b"hello"),
                write("w", 10, b"X"),
                write("w", 5, b" world"),
                write("w", 0, b"J"),
                Step("fs/readFile", {"path": "file://{ws}/new.txt"}),  # written in place
                close("w"),
                Step("fs/readFile", {"path": "file://{ws}/new.txt"}),
                open_("t", "/f.txt", "replace"),  # truncates at once
                Step("fs/readFile", {"path": "file://{ws}/f.txt"}),
                write("t", 0, b"\x00" * (1 << 20)),
                close("t"),
                Step("fs/getMetadata", {"path": "file://{ws}/f.txt"}, pick=lambda r: r["size"]),
                open_("through link", "/link", "replace"),
                write("through link", 0, b"via"),
                close("through link"),
                Step("fs/readFile", {"path": "file://{ws}/f.txt"}),
            ],
            digits,
        )
    )


def test_streaming_bad_input(pair: Pair) -> None:
    """Every refusal, each with Codex's code; the other handle is unharmed throughout."""
    pair.assert_same(
        Case(
            "streaming errors",
            [
                open_("keep", "/f.txt"),
                open_("keep", "/f.txt"),  # already open
                open_("x" * 33, "/f.txt"),  # id over 32 bytes
                open_("é" * 17, "/f.txt"),
                Step("fs/open", {"handleId": 5, "path": "file://{ws}/f.txt", "mode": "read"}),
                open_("m", "/missing"),
                open_("m", "/d"),  # a directory, to read
                open_("m", "/d", "replace"),  # ... to replace
                open_("m", "/no/such/dir", "replace"),
                open_("m", "/f.txt", "write"),
                Step("fs/open", {"handleId": "m", "path": "relative", "mode": "read"}),
                read("keep", 0, 0),
                read("keep", 0, (1 << 20) + 1),
                read("keep", -1, 4),
                read("nope", 0, 4),
                Step("fs/readBlock", {"handleId": "keep", "offset": 0}),
                write("keep", 0, b"a"),  # a read handle: EBADF, and it stays open
                read("keep", 0, 4),
                open_("w", "/out", "replace"),
                write("w", 0, "!!not base64"),
                write("w", 0, ""),
                write("w", 0, b"x" * ((1 << 20) + 1)),
                write("w", 2**63 - 1, b"a"),
                write("nope", 0, b"a"),
                write("w", 0, b"still open"),
                read("w", 0, 4),  # a replace handle: EBADF, and it is closed
                write("w", 0, b"a"),
                read("keep", 2**64 - 1, 4),  # EINVAL: closed too
                read("keep", 0, 4),
                close("nope"),
                Step("fs/close", {}),
                Step("fs/close", None),
                Step("fs/readFile", {"path": "file://{ws}/out"}),
            ],
            digits,
        )
    )


def test_handles_are_bounded_per_connection(pair: Pair) -> None:
    """128 open handles per connection; closing one makes room; another connection has its own."""
    many = [open_(f"h{i}", "/f.txt") for i in range(129)]
    pair.assert_same(
        Case(
            "handle limit",
            [*many, close("h0"), open_("again", "/f.txt"), open_("again2", "/f.txt")]
            + [close(f"h{i}") for i in range(1, 128)]
            + [close("again")],
            digits,
        )
    )


def test_handles_close_with_the_connection(pair: Pair) -> None:
    """A handle is the connection's: another cannot use it, and closing the connection
    frees it (the file can be removed and replaced)."""
    ws = pair.ours.workspaces / "closed-with-connection"
    ws.mkdir()
    digits(ws)
    with pair.ours.connect(True) as other:
        opened = other.request("fs/open", {"handleId": "mine", "path": (ws / "f.txt").as_uri()})
        assert opened["result"] == {"handleId": "mine"}
        theirs = {"handleId": "mine", "offset": 0, "len": 2}
        assert pair.ours.client.request("fs/readBlock", theirs)["error"]["code"] == -32004
        assert other.request("fs/readBlock", theirs)["result"]["chunk"] == b64(b"01")
    deadline = time.monotonic() + 10
    while _open_fds(ws / "f.txt") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _open_fds(ws / "f.txt")


def _open_fds(path: Path) -> list[str]:
    """Descriptors of any process of ours that point at `path` (the servers run as us)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    found.append(f"{pid}/{fd}")
            except OSError:
                continue
    return found


# -- capability discovery ---------------------------------------------------------------


def plugins(ws: Path) -> None:
    """A plugin with manifests of two kinds, declared MCP and apps files, two skills (one
    with metadata), a nested plugin, a skill that is not UTF-8, a file as root."""
    p = ws / "plug"
    (p / ".codex-plugin").mkdir(parents=True)
    (p / ".claude-plugin").mkdir()
    (p / ".codex-plugin" / "plugin.json").write_text(
        '{"name": "p", "mcpServers": "./mcp.json", "apps": "./apps.json"}'
    )
    (p / ".claude-plugin" / "plugin.json").write_text('{"name": "claude"}')
    (p / "mcp.json").write_text('{"mcpServers": {}}')
    (p / "apps.json").write_text('{"apps": []}')
    (p / ".mcp.json").write_text('{"default": true}')
    hello = p / "skills" / "hello"
    (hello / "agents").mkdir(parents=True)
    (hello / "SKILL.md").write_text("---\nname: hello\ndescription: says hi\n---\nSay hi.\n")
    (hello / "agents" / "openai.yaml").write_text("interface:\n  display_name: Hi\n")
    (p / "skills" / "bye").mkdir()
    (p / "skills" / "bye" / "SKILL.md").write_text("bye")
    inner = p / "sub" / "inner" / ".cursor-plugin"
    inner.mkdir(parents=True)
    (inner / "plugin.json").write_text('{"name": "inner"}')
    (ws / "bare" / "skills" / "x").mkdir(parents=True)
    (ws / "bare" / "skills" / "x" / "SKILL.md").write_bytes(b"\xff\xfe")
    (ws / "bare" / "a.txt").write_text("x")
    bad = ws / "badplug" / ".codex-plugin"
    bad.mkdir(parents=True)
    (bad / "plugin.json").write_text('{"mcpServers": "mcp.json", "apps": "./../up.json"}')
    (ws / "badplug" / ".mcp.json").write_text("{}")
    inline = ws / "inline" / ".claude-plugin"
    inline.mkdir(parents=True)
    (inline / "plugin.json").write_text('{"mcpServers": {"s": {}}}')
    (ws / "inline" / ".mcp.json").write_text("{}")


def root(root_id: str, path: str) -> dict[str, Any]:
    return {"id": root_id, "path": "file://{ws}" + path}


def test_discover_v1(pair: Pair) -> None:
    roots = [
        root("plugin", "/plug"),
        root("below a plugin", "/plug/skills"),
        root("bare", "/bare"),
        root("missing", "/missing"),
        root("a file", "/bare/a.txt"),
        root("bad declarations", "/badplug"),
        root("inline mcp", "/inline"),
    ]
    pair.assert_same(
        Case(
            "discover v1",
            [
                Step("capabilityRoots/discoverV1", {"roots": []}),
                Step("capabilityRoots/discoverV1", {"roots": roots}),
                Step("capabilityRoots/discoverV1", {"roots": [root("r", "")] * 129}),
                Step("capabilityRoots/discoverV1", {}),
                Step("capabilityRoots/discoverV1", {"roots": [{"path": "file://{ws}"}]}),
                Step("capabilityRoots/discoverV1", {"roots": [{"id": 1, "path": "file://{ws}"}]}),
                Step("capabilityRoots/discoverV1", {"roots": [{"id": "r", "path": "rel"}]}),
            ],
            plugins,
        )
    )


def test_discover_v2(pair: Pair) -> None:
    """Skills and plugins installed in ``CODEX_HOME`` (`install`, each side's own home)."""
    pair.assert_same(
        Case(
            "discover v2",
            [
                Step("capabilities/discoverV2", {"cwd": "file://{ws}"}),
                Step("capabilities/discoverV2", {"cwd": "file://{ws}", "sandbox": None}),
                Step("capabilities/discoverV2", {}),
            ],
        )
    )
    found = pair.ours.client.request(
        "capabilities/discoverV2", {"cwd": pair.ours.workspaces.as_uri()}
    )
    assert [p["id"] for p in found["result"]["plugins"]] == ["myplug@mkt", "other@mkt2"]
    home_skills = [
        s for s in found["result"]["skills"] if s["discoveryRoot"]["id"] == "codex-home-skills"
    ]
    assert [s["name"] for s in home_skills] == ["sys", "alpha"]


# -- sandboxDenied in process/read --------------------------------------------------------


def codex_sandbox(ws_uri: str) -> dict[str, Any]:
    """Codex's ``workspace-write`` sandbox object (ENVIRONMENT.md records its shape)."""

    def special(kind: str, access: str) -> dict[str, Any]:
        return {"path": {"type": "special", "value": {"kind": kind}}, "access": access}

    entries = [special("root", "read"), special("project_roots", "write")]
    entries += [special("slash_tmp", "write"), special("tmpdir", "write")]
    return {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "restricted", "entries": entries},
            "network": "restricted",
        },
        "cwd": ws_uri,
        "workspaceRoots": [ws_uri],
        "windowsSandboxLevel": "disabled",
        "windowsSandboxProxySettingsMode": "reconcile",
        "useLegacyLandlock": False,
    }


def finish(side: Side, ws: Path, process_id: str, script: str) -> dict[str, Any]:
    """Start `script` in Codex's sandbox, read until it has exited: the last read's result."""
    start = {
        "processId": process_id,
        "argv": ["/bin/sh", "-c", script],
        "cwd": ws.as_uri(),
        "env": {"PATH": "/usr/bin:/bin"},
        "tty": False,
        "arg0": None,
        "sandbox": codex_sandbox(ws.as_uri()),
    }
    assert "result" in side.client.request("process/start", start)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        read = {"processId": process_id, "afterSeq": 0, "maxBytes": 65536, "waitMs": 500}
        result: dict[str, Any] = side.client.request("process/read", read)["result"]
        if result["exited"]:
            return result
    raise AssertionError(f"{process_id} did not exit")


def test_sandbox_denied_in_process_read(pair: Pair) -> None:
    """Sandboxed, non-zero exit and denial words in the output: true; any one missing: false."""
    target = Path("/usr/local") / f"jupyter-exec-denied-{os.getpid()}"
    scripts = {
        "denied": f"echo x > {target}; exit 1",
        "denied-but-succeeded": f"echo x > {target}; exit 0",
        "failed-without-denial": "exit 3",
        "allowed": "echo x > inside.txt && cat inside.txt",
    }
    answers: dict[str, list[tuple[Any, Any]]] = {}
    try:
        for name, side in (("codex", pair.codex), ("ours", pair.ours)):
            ws = side.workspaces / f"sandbox-denied-{next(_RUNS)}"
            ws.mkdir()
            answers[name] = []
            for process_id, script in scripts.items():
                result = finish(side, ws, f"{process_id}-{ws.name}", script)
                answers[name].append((result["exitCode"], result["sandboxDenied"]))
    finally:
        target.unlink(missing_ok=True)
    assert answers["ours"] == answers["codex"] == [(1, True), (0, False), (3, False), (0, False)]


_RUNS = iter(range(1_000_000))


def tree_and_plugins(ws: Path) -> None:
    tree(ws)
    plugins(ws)


def test_fs_calls_under_codex_sandbox(pair: Pair) -> None:
    """Walks, streams and discovery with Codex's ``workspace-write`` object: a replace
    outside the workspace is refused alike (-32603), the rest is served alike."""
    box = codex_sandbox("file://{ws}")
    denied = Path(f"/usr/local/jupyter-exec-denied-{os.getpid()}")

    def boxed(step: Step, **params: Any) -> Step:
        return Step(step.method, {**step.params, **params, "sandbox": box})

    try:
        pair.assert_same(
            Case(
                "sandboxed",
                [
                    boxed(walk()),
                    boxed(open_("out", "", "replace"), path=denied.as_uri()),
                    boxed(open_("in", "/new", "replace")),
                    write("in", 0, b"inside"),
                    close("in"),
                    Step("fs/readFile", {"path": "file://{ws}/new"}),
                    boxed(open_("r", ""), path="file:///etc/hostname"),
                    close("r"),
                    Step(
                        "capabilityRoots/discoverV1",
                        {"roots": [{**root("plugin", "/plug"), "sandbox": box}]},
                    ),
                ],
                tree_and_plugins,
            )
        )
    finally:
        assert not denied.exists()
