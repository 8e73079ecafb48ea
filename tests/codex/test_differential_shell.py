"""Codex's own exec-server and ours run the same shell commands alike (differential.py).

Shell snapshots (`shellSnapshotV2`): the same profile, the same commands in the
same scopes, on each side in its own workspace and ``HOME``; what each command
printed, its exit code, and which startup files it sourced (the profile logs
itself) must agree, as must the answers to bad snapshots. A write grant on
``/`` (`linuxRootWritePreservesDevices`, `linuxApprovedRootWritePreservesRestrictions`):
the same sandboxed script must find the same things writable.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ..core.shell_profile import BASHRC, PROFILE, SHOW
from .differential import Client, Pair, fill, normalize

pytestmark = pytest.mark.timeout(300)
_IDS = itertools.count(1)


def execute(client: Client, ws: Path, process_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start a process and read it to the end: what must agree about it, `<ws>` for paths."""
    started = client.request("process/start", {"processId": process_id, **fill(params, ws)})
    outcome: dict[str, Any] = {"start": normalize(started, {"<ws>": ws}, None)}
    if "error" in started:
        return outcome
    chunks: dict[int, bytes] = {}
    after = 0
    while True:
        answer = client.request(
            "process/read", {"processId": process_id, "afterSeq": after, "waitMs": 2000}
        )
        result = answer["result"]
        for chunk in result["chunks"]:
            chunks[chunk["seq"]] = base64.b64decode(chunk["chunk"])
        after = max([after, *chunks])
        if result["closed"]:
            break
    text = b"".join(chunks[seq] for seq in sorted(chunks)).decode(errors="replace")
    outcome.update(output=text.replace(str(ws), "<ws>"), exitCode=result["exitCode"])
    log = ws / "home" / "sourced.log"
    outcome["sourced"] = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return outcome


def compare(pair: Pair, name: str, build: Any, commands: list[dict[str, Any]]) -> None:
    """Each command on both sides, in fresh workspaces; every disagreement listed."""
    tag = f"{name}-{next(_IDS)}"  # Codex's side serves every transport: never repeat an id
    sides = []
    for side in (pair.codex, pair.ours):
        ws = side.workspaces / tag
        ws.mkdir()
        build(ws)
        sides.append([execute(side.client, ws, f"{tag}-{i}", c) for i, c in enumerate(commands)])
    problems = [
        f"{command}\n  codex: {want}\n  ours:  {got}"
        for command, want, got in zip(commands, *sides, strict=True)
        if want != got
    ]
    assert not problems, "Codex's server and ours differ:\n" + "\n".join(problems)


def home_with_profile(ws: Path) -> None:
    (ws / "home").mkdir()
    (ws / "home" / ".bash_profile").write_text(PROFILE)
    (ws / "home" / ".bashrc").write_text(BASHRC)
    (ws / "a-file").write_text("")


def bash(command: str, snapshot: Any, **env: str) -> dict[str, Any]:
    return {
        "argv": ["/bin/bash", "-lc", command],
        "cwd": "file://{ws}",
        "env": {"HOME": "{ws}/home", "PATH": os.environ["PATH"], "CALLER": "c1", **env},
        "tty": False,
        "pipeStdin": False,
        "arg0": None,
        "shellSnapshot": snapshot,
    }


def scope(scope_id: str, name: str = "bash", path: str = "/bin/bash") -> dict[str, Any]:
    return {"scopeId": scope_id, "shell": {"name": name, "path": path}}


def test_shell_snapshots_agree(pair: Pair) -> None:
    compare(
        pair,
        "snapshots",
        home_with_profile,
        [
            bash(SHOW, scope("s1")),
            bash(SHOW, scope("s1"), CALLER="c2", FROM_PROFILE="asked"),
            bash(SHOW, scope("s2")),
            bash(SHOW, None),
            bash("echo x", scope("")),
            bash("echo x", scope("x" * 257)),
            bash("echo x", scope("s1", name="fish")),
            bash("echo x", {"scopeId": "s1"}),
            bash("echo $FROM_PROFILE.", scope("s1", path="/usr/bin/bash")),
            {
                **bash("echo $FROM_PROFILE.", scope("s1", name="fish")),
                "argv": ["/bin/bash", "-c", "echo $FROM_PROFILE."],
            },
        ],
    )


def test_a_managed_proxy_is_not_replayed_alike(pair: Pair) -> None:
    """A snapshot taken under a managed network proxy drops that proxy's variables."""

    def build(ws: Path) -> None:
        home_with_profile(ws)
        with (ws / "home" / ".bashrc").open("a") as rc:
            rc.write("export http_proxy=http://from-profile NO_PROXY=x\n")

    show = 'echo "$HTTP_PROXY|$http_proxy|$NO_PROXY|$CODEX_NETWORK_PROXY_ACTIVE|$FROM_RC"'
    proxied = {"CODEX_NETWORK_PROXY_ACTIVE": "1", "HTTP_PROXY": "http://asked"}
    compare(pair, "proxy", build, [bash(show, scope("p"), **proxied), bash(show, scope("p"))])


def test_a_write_grant_on_root_agrees(pair: Pair) -> None:
    outside = Path(tempfile.mkdtemp(prefix="jupyter-exec-diff-", dir="/var/tmp"))
    try:

        def special(kind: str, access: str, sub: str | None = None) -> dict[str, Any]:
            value = {"kind": kind, **({"subpath": sub} if sub else {})}
            entry: dict[str, Any] = {"path": {"type": "special", "value": value}, "access": access}
            return {**entry, "missing_path_behavior": "skip"} if sub else entry

        sandbox = {
            "permissions": {"type": "managed", "network": "restricted", "file_system": {
                "type": "restricted",
                "entries": [special("root", "write"), special("project_roots", "write"),
                            special("slash_tmp", "write"), special("tmpdir", "write"),
                            *(special("project_roots", "read", s) for s in (".git", ".codex"))],
            }},
            "cwd": "file://{ws}", "workspaceRoots": ["file://{ws}"],
            "windowsSandboxLevel": "disabled", "windowsSandboxProxySettingsMode": "reconcile",
            "useLegacyLandlock": False,
        }  # fmt: skip
        script = (
            f'for f in /dev/null /dev/zero "{outside}/$RANDOM" .git/x .codex/x ok; do'
            ' if (echo hi > "$f") 2>/dev/null; then echo "$f: written"; else echo "$f: refused"; fi;'
            ' done | sed "s|/var/tmp/[^:]*|outside|"; head -c 3 /dev/urandom | wc -c;'
            " (exec 3<>/dev/tcp/127.0.0.1/9) 2>/dev/null || echo connect-refused"
        )

        def build(ws: Path) -> None:
            (ws / ".git").mkdir()
            (ws / ".codex").mkdir()

        command = {"argv": ["/bin/bash", "-c", script], "cwd": "file://{ws}",
                   "env": {"PATH": os.environ["PATH"], "HOME": "{ws}"}, "tty": False, "pipeStdin": False,
                   "arg0": None, "sandbox": sandbox}  # fmt: skip
        compare(pair, "root-write", build, [command])
        assert len(list(outside.iterdir())) == 2 * 1  # each side wrote one file outside
    finally:
        shutil.rmtree(outside, ignore_errors=True)
