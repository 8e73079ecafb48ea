"""The `sandbox` param and the front's policies (SPEC 4): parsing, refusals, stricter-only.

Codex's objects are the ones Codex 0.171 sent for each `sandbox_mode`
(recorded through a logging proxy, docs/sandbox.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jupyter_exec.wire.errors import InvalidParamsError
from jupyter_exec.wire.sandbox import SandboxPolicy, from_wire, parse_setting

from .harness import outside_tmp, run, session

ROOT_READ = {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}


def special(kind: str, access: str, subpath: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = (
        {"kind": kind} if subpath is None else {"kind": kind, "subpath": subpath}
    )
    entry: dict[str, Any] = {"path": {"type": "special", "value": value}, "access": access}
    if subpath is not None:
        entry["missing_path_behavior"] = "skip"
    return entry


def codex(entries: list[dict[str, Any]], network: str, roots: list[str]) -> dict[str, Any]:
    return {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "restricted", "entries": entries},
            "network": network,
        },
        "cwd": roots[0] if roots else "file:///",
        "workspaceRoots": roots,
        "windowsSandboxLevel": "disabled",
        "windowsSandboxProxySettingsMode": "reconcile",
        "useLegacyLandlock": False,
    }


WORKSPACE_WRITE = [
    ROOT_READ,
    special("project_roots", "write"),
    special("slash_tmp", "write"),
    special("tmpdir", "write"),
    *(special("project_roots", "read", sub) for sub in (".git", ".agents", ".codex", ".aws")),
]


def test_codex_read_only_maps_to_read_only_without_network() -> None:
    policy = from_wire(codex([ROOT_READ], "restricted", ["file:///w"]))
    assert policy == SandboxPolicy(mode="read-only", network=False, workspace=None, tmp=False,
                                   tmpdir=False)  # fmt: skip


def test_codex_workspace_write_maps_roots_tmp_and_protected_subpaths() -> None:
    policy = from_wire(codex(WORKSPACE_WRITE, "restricted", ["file:///w"]))
    assert policy is not None and policy.mode == "workspace-write" and policy.network is False
    assert policy.writable_roots == ("/w", "/tmp") and policy.tmpdir and policy.workspace is None
    assert policy.read_only == ("/w/.git", "/w/.agents", "/w/.codex", "/w/.aws")


def test_codex_writable_roots_and_network_access() -> None:
    extra = {"path": {"type": "path", "path": "file:///opt"}, "access": "write"}
    entries = [*WORKSPACE_WRITE[:4], extra, *WORKSPACE_WRITE[4:]]
    policy = from_wire(codex(entries, "enabled", ["file:///w", "file:///opt"]))
    assert policy is not None and policy.network is True
    assert policy.writable_roots == ("/w", "/opt", "/tmp")
    assert "/opt/.git" in policy.read_only


def test_codex_write_grant_on_root_reads_and_writes_everywhere_keeping_carve_outs() -> None:
    """`linuxRootWritePreservesDevices`: Codex 0.171's own server runs this (docs/sandbox.md)."""
    entries = [special("root", "write"), *WORKSPACE_WRITE[1:]]
    policy = from_wire(codex(entries, "restricted", ["file:///w"]))
    assert policy is not None and policy.mode == "workspace-write" and policy.network is False
    assert policy.writable_roots == ("/", "/w", "/tmp")
    assert policy.read_only == ("/w/.git", "/w/.agents", "/w/.codex", "/w/.aws")


def test_danger_full_access_sends_null_and_leaves_the_front_policy() -> None:
    assert from_wire(None) is None


def test_server_settings() -> None:
    assert parse_setting("workspace-write", "x") == SandboxPolicy("workspace-write", None, "root")
    assert parse_setting("read-only:network-off", "x").network is False
    with pytest.raises(InvalidParamsError, match="agent_sandbox must be one of"):
        parse_setting("strict", "agent_sandbox")
    with pytest.raises(InvalidParamsError, match="network-on or network-off"):
        parse_setting("read-only:offline", "default_sandbox")


BAD = [
    (42, "sandbox must be a mode name or an object"),
    ("strict", "sandbox must be one of none, workspace-write, read-only, not 'strict'"),
    ({"mode": "read-only", "color": 1}, "sandbox has unknown member 'color'"),
    ({"network": False}, "sandbox.mode must be a string"),
    ({"mode": "read-only", "network": "no"}, "sandbox.network must be true or false"),
    ({"mode": "workspace-write", "writableRoots": ["rel"]}, "must hold absolute paths, not 'rel'"),
    ({"mode": "read-only", "writableRoots": ["/x"]}, "writableRoots needs mode workspace-write"),
    ({"permissions": {"type": "external"}}, "permissions.type 'external' is not supported"),
    (codex([], "restricted", ["file:///w"]), "root must be readable"),
    (codex([ROOT_READ], "proxied", ["file:///w"]), "network 'proxied' is not supported"),
    (codex([ROOT_READ, special("home", "write")], "restricted", []), "is not supported"),
    (codex([ROOT_READ, special("slash_tmp", "deny")], "restricted", []), "access 'deny'"),
]


@pytest.mark.parametrize(("sandbox", "message"), BAD, ids=[m for _, m in BAD])
async def test_bad_sandbox_params_are_invalid_params(
    tmp_path: Path, sandbox: Any, message: str
) -> None:
    async with session(tmp_path) as peer:
        bad = await run(peer, ["true"], sandbox=sandbox)
        assert bad.started["error"]["code"] == -32602
        assert message in bad.started["error"]["message"]
        assert (await peer.call("process/list", {}))["result"]["processes"] == []
        fine = await run(peer, ["echo", "fine"], sandbox="read-only")  # nothing else harmed
        assert fine.output == "fine\n" and fine.sandbox_type == "linuxSeccomp"


async def test_a_request_may_be_stricter_than_the_front_never_looser(tmp_path: Path) -> None:
    async with session(tmp_path, default_sandbox="workspace-write:network-off") as peer:
        plain = await run(peer, ["true"])  # no request: the front's policy
        assert plain.sandbox_type == "linuxSeccomp"
        for looser, why in [
            ("none", "sandbox 'none' is looser than this server's default_sandbox"),
            ({"mode": "workspace-write", "network": True}, "network access is not allowed"),
        ]:
            refused = await run(peer, ["true"], sandbox=looser)
            assert why in refused.started["error"]["message"]
        stricter = await run(
            peer, ["bash", "-c", "touch x"], sandbox="read-only", cwd=str(tmp_path)
        )
        assert "Permission denied" in stricter.output and not (tmp_path / "x").exists()
        listed = (await peer.call("process/list", {}))["result"]["processes"]
        assert [p["sandbox"]["mode"] for p in listed] == ["workspace-write", "read-only"]
        assert all(p["sandbox"]["network"] is False for p in listed)


async def test_the_front_workspace_is_its_root_not_the_cwd(tmp_path: Path) -> None:
    """An agent cannot widen the front's workspace by choosing another cwd."""
    root = tmp_path / "root"
    root.mkdir()
    with outside_tmp() as elsewhere:
        async with session(tmp_path, root_dir=root, default_sandbox="workspace-write") as peer:
            script = f"touch {root}/in; touch {elsewhere}/out"
            done = await run(peer, ["bash", "-c", script], cwd=str(elsewhere))
            assert (root / "in").exists() and not (elsewhere / "out").exists(), done.output
            # Its own workspace-write asks for the cwd: both together leave only the overlap.
            both = await run(
                peer, ["bash", "-c", script], cwd=str(elsewhere), sandbox="workspace-write"
            )
            assert "Permission denied" in both.output and not (elsewhere / "out").exists()
            assert both.started["result"]["sandboxType"] == "linuxSeccomp"


async def test_agents_get_the_agent_sandbox_and_others_do_not(tmp_path: Path) -> None:
    from tests.service import RawPeer, make_service

    service = make_service(tmp_path, agent_sandbox="read-only")
    try:
        for client, codex_fields, expected in [
            ("test", {}, "none"),
            ("codex-environment", {}, "linuxSeccomp"),
            ("jupyter-exec-mcp", {}, "linuxSeccomp"),
            ("someone", {"envPolicy": {"inherit": "all"}}, "linuxSeccomp"),  # Codex's own field
        ]:
            peer = RawPeer(service)
            peer.seen = []
            await peer.call("initialize", {"clientName": client})
            peer.send("initialized", notify=True)
            outcome = await run(peer, ["true"], **codex_fields)
            assert outcome.sandbox_type == expected, client
            await peer.close()
    finally:
        await service.aclose()
