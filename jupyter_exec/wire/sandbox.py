"""Sandbox policies as plain data (SPEC 4 `process/start` `sandbox`): ours and Codex's.

A policy says what a process may write and whether it may use the network;
reading is allowed everywhere except where the server hides its own secrets
(core/sandbox.py). Three modes, from loosest to strictest:

- ``none``: no sandbox.
- ``workspace-write``: write inside the workspace (the process's cwd for a
  request, the front's root for a server policy), the extra
  ``writableRoots``, ``/tmp`` and ``$TMPDIR``.
- ``read-only``: write nowhere but ``/dev/null``-like devices and a private
  tmp directory (``$TMPDIR``) that vanishes with the process.

Each may have the network on or off. The wire form is a mode name, or
``{"mode", "network"?, "writableRoots"?}``, or Codex's own ``sandbox`` object
(``{"permissions": {...}, "workspaceRoots": [...], ...}``), which
`from_wire` maps onto the same policy. A request runs under its own policy
and under every policy of its front (`default_sandbox`, `agent_sandbox`):
it may ask for a stricter one, never a looser one (`looser_than`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlparse

from .errors import InvalidParamsError

__all__ = [
    "MODES",
    "SandboxMode",
    "SandboxPolicy",
    "Workspace",
    "from_codex",
    "from_wire",
    "looser_than",
    "parse_mode",
    "parse_setting",
    "shorthand",
]


SandboxMode = Literal["none", "workspace-write", "read-only"]
Workspace = Literal["cwd", "root"]
MODES: tuple[SandboxMode, ...] = get_args(SandboxMode)
#: The special path kinds Codex 0.171 sends (recorded in docs/sandbox.md).
_CODEX_KINDS = ("root", "project_roots", "slash_tmp", "tmpdir")


@dataclass(frozen=True)
class SandboxPolicy:
    mode: SandboxMode = "none"
    #: None: not said (a request then keeps its front's setting; alone, on).
    network: bool | None = None
    #: workspace-write: which directory is the workspace (None: only `writable_roots`).
    workspace: Workspace | None = "cwd"
    #: workspace-write: absolute directories writable besides the workspace.
    writable_roots: tuple[str, ...] = ()
    #: workspace-write: whether `/tmp`, and `$TMPDIR`, are writable.
    tmp: bool = True
    tmpdir: bool = True
    #: Absolute paths that stay read-only inside writable roots (Codex's `.git`, ...).
    read_only: tuple[str, ...] = ()

    @property
    def rank(self) -> int:
        return MODES.index(self.mode)

    def wire(self) -> dict[str, Any]:
        """Our wire form (what `from_wire` reads back)."""
        result: dict[str, Any] = {"mode": self.mode}
        if self.network is not None:
            result["network"] = self.network
        if self.writable_roots:
            result["writableRoots"] = list(self.writable_roots)
        return result


def parse_mode(value: str, where: str = "sandbox") -> SandboxMode:
    if value not in MODES:
        raise InvalidParamsError(f"{where} must be one of {', '.join(MODES)}, not {value!r}")
    return value


def parse_setting(value: str, where: str) -> SandboxPolicy:
    """A server setting (`default_sandbox`, `agent_sandbox`): MODE, optionally `:network-off`."""
    mode, _, network = value.partition(":")
    if network not in ("", "network-on", "network-off"):
        raise InvalidParamsError(f"{where}: {network!r} is not network-on or network-off")
    return SandboxPolicy(
        mode=parse_mode(mode, where),
        network=None if not network else network == "network-on",
        workspace="root",
    )


def shorthand(text: str) -> str | dict[str, Any]:
    """The CLI's, magics' and MCP tools' ``MODE[:network-off]`` as the wire param (ValueError)."""
    mode, _, network = text.strip().partition(":")
    if mode not in MODES or network not in ("", "network-on", "network-off"):
        raise ValueError(
            f"sandbox {text!r} is not one of {', '.join(MODES)}, "
            "optionally followed by :network-off or :network-on"
        )
    return {"mode": mode, "network": network == "network-on"} if network else mode


def from_wire(value: Any) -> SandboxPolicy | None:
    """The policy a `process/start` asks for; None when it asks for none in particular."""
    if value is None:
        return None
    if isinstance(value, str):
        return SandboxPolicy(mode=parse_mode(value))
    if not isinstance(value, dict):
        raise InvalidParamsError("sandbox must be a mode name or an object")
    if "permissions" in value:
        return from_codex(value)
    unknown = set(value) - {"mode", "network", "writableRoots"}
    if unknown:
        raise InvalidParamsError(f"sandbox has unknown member {sorted(unknown)[0]!r}")
    mode = value.get("mode")
    if not isinstance(mode, str):
        raise InvalidParamsError("sandbox.mode must be a string")
    network = value.get("network")
    if network is not None and not isinstance(network, bool):
        raise InvalidParamsError("sandbox.network must be true or false")
    roots = _absolute_paths(value.get("writableRoots", []), "sandbox.writableRoots")
    policy = SandboxPolicy(mode=parse_mode(mode, "sandbox.mode"), network=network)
    if roots and policy.mode != "workspace-write":
        raise InvalidParamsError("sandbox.writableRoots needs mode workspace-write")
    return dataclasses.replace(policy, writable_roots=roots)


def from_codex(value: Mapping[str, Any]) -> SandboxPolicy:
    """Codex's `sandbox` object (recorded from Codex 0.171 in docs/sandbox.md) as our policy.

    A read entry on `root` means read everywhere (what we enforce); write
    entries become the writable roots; `project_roots` are the object's
    `workspaceRoots`; read entries with a `subpath` stay read-only inside
    them. Anything we cannot enforce as asked is an error, never ignored.
    """
    permissions = _member(value, "permissions", dict, "sandbox")
    if permissions.get("type") != "managed":
        raise InvalidParamsError(
            f"sandbox.permissions.type {permissions.get('type')!r} is not supported (managed is)"
        )
    network = permissions.get("network")
    if network not in ("restricted", "enabled"):
        raise InvalidParamsError(f"sandbox.permissions.network {network!r} is not supported")
    file_system = _member(permissions, "file_system", dict, "sandbox.permissions")
    projects = _absolute_paths(value.get("workspaceRoots", []), "sandbox.workspaceRoots")
    fs_type = file_system.get("type")
    if fs_type == "unrestricted":  # writes anywhere: only the network can be restricted
        if network == "enabled":
            return SandboxPolicy(mode="none", network=True)
        return SandboxPolicy(mode="workspace-write", network=False, workspace=None,
                             writable_roots=("/",), tmp=False, tmpdir=False)  # fmt: skip
    if fs_type != "restricted":
        raise InvalidParamsError(
            f"sandbox.permissions.file_system.type {fs_type!r} is not supported"
        )
    writable: list[str] = []
    read_only: list[str] = []
    reads_root = tmpdir = False
    for entry in _member(file_system, "entries", list, "sandbox.permissions.file_system"):
        paths, is_tmpdir, is_root = _codex_paths(entry, projects)
        access = entry.get("access")
        if access not in ("read", "write"):
            raise InvalidParamsError(f"sandbox entry access {access!r} is not supported")
        reads_root |= is_root  # a write grant on `root` reads it too
        if access == "read":
            read_only += paths
        else:
            tmpdir |= is_tmpdir
            writable += ["/"] if is_root else paths
    if not reads_root:
        raise InvalidParamsError(
            "sandbox: reading only some paths is not supported (root must be readable)"
        )
    return SandboxPolicy(
        mode="workspace-write" if writable or tmpdir else "read-only",
        network=network == "enabled",
        workspace=None,
        writable_roots=tuple(dict.fromkeys(writable)),
        tmp=False,  # `/tmp` is writable when Codex lists it (`slash_tmp`)
        tmpdir=tmpdir,
        read_only=tuple(dict.fromkeys(read_only)),
    )


def _codex_paths(entry: Any, projects: tuple[str, ...]) -> tuple[list[str], bool, bool]:
    """An entry's absolute paths, whether it is `tmpdir`, whether it is `root`."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), dict):
        raise InvalidParamsError("sandbox entries must be objects with a path")
    path = entry["path"]
    if path.get("type") == "path":
        return list(_absolute_paths([path.get("path")], "sandbox entry path")), False, False
    special = path.get("value") if path.get("type") == "special" else None
    kind = special.get("kind") if isinstance(special, dict) else None
    if kind not in _CODEX_KINDS:
        raise InvalidParamsError(f"sandbox entry path {path!r} is not supported")
    assert isinstance(special, dict)
    subpath = special.get("subpath")
    if subpath is not None and (kind != "project_roots" or not isinstance(subpath, str)):
        raise InvalidParamsError(f"sandbox entry subpath {subpath!r} is not supported")
    if kind == "project_roots":
        return [f"{p.rstrip('/')}/{subpath}" if subpath else p for p in projects], False, False
    if kind == "slash_tmp":
        return ["/tmp"], False, False
    return [], kind == "tmpdir", kind == "root"


def looser_than(request: SandboxPolicy, policy: SandboxPolicy, setting: str) -> str | None:
    """Why `request` asks for more than the server's `policy` allows, or None."""
    if request.rank < policy.rank:
        return (
            f"sandbox {request.mode!r} is looser than this server's {setting} "
            f"({policy.mode!r}); ask for the same or stricter"
        )
    if request.network and policy.network is False:
        return f"sandbox network access is not allowed by this server's {setting} (network off)"
    return None


def _member(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        article = "an object" if kind is dict else "a list"
        raise InvalidParamsError(f"{where}.{key} must be {article}")
    return value


def _absolute_paths(values: Any, where: str) -> tuple[str, ...]:
    """Absolute paths or `file://` URIs, as absolute paths."""
    if not isinstance(values, list):
        raise InvalidParamsError(f"{where} must be a list of absolute paths")
    paths = []
    for value in values:
        if isinstance(value, str) and value.startswith("file://"):
            value = unquote(urlparse(value).path)
        if not isinstance(value, str) or not value.startswith("/"):
            raise InvalidParamsError(f"{where} must hold absolute paths, not {value!r}")
        paths.append(value)
    return tuple(paths)
