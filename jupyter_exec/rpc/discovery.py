"""Capability discovery: ``capabilityRoots/discoverV1`` and ``capabilities/discoverV2``.

Codex (0.171) finds skills (``SKILL.md``), plugin manifests and their MCP and
apps configuration on the executor through these, in one request per batch
of roots, instead of walking the executor's file system itself; under a
restricted sandbox it always does (``capabilityDiscoverySandbox``). Recorded
from Codex's own ``exec-server`` (docs/codex.md, "Capability discovery"):

``capabilityRoots/discoverV1 {roots: [{id, path, sandbox?}]}`` (at most 128
roots, else -32600) → ``{roots: [{id, path, plugin, skills,
namespaceManifests, warnings, error}]}``, in the order asked. Each root is
walked (`fs_walk`: depth 6, 2,000 directories, 20,000 entries, following
directory links, hidden directories included) and these files are read, each
as ``{path, contents}``:

- ``plugin``: the root's own manifest, the first of
  `PLUGIN_MANIFEST_PATHS` that exists, with ``mcpConfig`` (the file the
  manifest's ``mcpServers`` names as ``./…``, else ``.mcp.json``; none when
  ``mcpServers`` is inline) and ``appsConfig`` (the file ``apps`` names);
  ``null`` without a manifest.
- ``skills``: every ``SKILL.md`` found, sorted by path, as ``{instructions,
  metadata}`` (metadata: the skill's ``agents/openai.yaml``, or null).
- ``namespaceManifests``: the root's manifest or else the nearest ancestor's,
  then one manifest per plugin directory found below, by directory.
- ``warnings`` for what could not be read (not UTF-8, over 1 MiB, over the
  root's 16 MiB, a walk cut short); ``error`` when the root is missing or
  not a directory (the other roots are still answered).

``capabilities/discoverV2 {cwd, sandbox?}`` → ``{plugins: [], skills,
warnings}``: the skills installed for the user, in ``$CODEX_HOME/skills``
(``.system`` included) and ``~/.agents/skills``, each ``{name, description,
shortDescription, path, discoveryRoot: {id, path}, dependencies, policy}``
from its front matter. ``$CODEX_HOME`` and ``~`` are the front's (SPEC 3).

Every read goes through the same `Access` as the other ``fs/*`` methods, so
a sandbox (the root's own ``sandbox``, or the request's) and root
confinement hide here what they hide there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ..wire.errors import ExecError, InvalidRequestError
from ..wire.protocol import Params, Sandbox, parse_params
from .context import READ, Method
from .fs_methods import Access, FsParams, file_uri, parse_path
from .fs_walk import WalkOptions, os_message, walk_tree

if TYPE_CHECKING:
    from .context import CallContext

__all__ = [
    "CAPABILITIES",
    "DISCOVERY_METHODS",
    "MAX_FILE_BYTES",
    "MAX_ROOTS",
    "MAX_ROOT_BYTES",
    "PLUGIN_MANIFEST_PATHS",
    "SCAN",
    "DiscoverV1Params",
    "DiscoverV2Params",
    "Inventory",
    "Reader",
    "Root",
    "discover_installed",
    "discover_root",
    "discover_v1",
    "discover_v2",
    "skill_roots",
]


MAX_ROOTS = 128
MAX_FILE_BYTES = 1 << 20
MAX_ROOT_BYTES = 16 << 20
PLUGIN_MANIFEST_PATHS = (
    ".codex-plugin/plugin.json",
    ".claude-plugin/plugin.json",
    ".cursor-plugin/plugin.json",
)
_MANIFEST_DIRS = tuple(path.split("/")[0] for path in PLUGIN_MANIFEST_PATHS)
SCAN = WalkOptions(
    max_depth=6, max_entries=20_000, max_directories=2_000, follow_directory_symlinks=True
)

#: Merged into the advertised capabilities (environment/info).
CAPABILITIES: dict[str, Any] = {"capabilityDiscoverySandbox": True, "capabilityDiscoveryV2": True}


class Root(Params):
    id: str
    path: str
    sandbox: Sandbox = None


class DiscoverV1Params(Params):
    roots: Annotated[list[Root], Field(strict=True)]


class DiscoverV2Params(FsParams):
    cwd: str


# -- reading files ------------------------------------------------------------


def _utf8_problem(exc: UnicodeDecodeError) -> str:
    """Rust's words for bad UTF-8, which Codex's warnings carry."""
    if exc.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {exc.start}"
    return f"invalid utf-8 sequence of {exc.end - exc.start} bytes from index {exc.start}"


@dataclass
class Reader:
    """Reads one root's files: within its access and its byte budget, noting warnings."""

    access: Access
    warnings: list[str] = field(default_factory=list)
    spent: int = 0

    def text(self, path: Path) -> dict[str, str] | None:
        """``{path, contents}``, or None if absent, not a file, or unreadable (warned)."""
        shown = file_uri(path)
        try:
            real = self.access.real(path)
            st = os.stat(real)
        except (OSError, ExecError) as exc:
            if not isinstance(exc, OSError) or exc.errno in (2, 20):
                return None  # absent (or hidden: absent to this sandbox)
            self.warnings.append(f"failed to inspect capability file {shown}: {os_message(exc)}")
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > MAX_FILE_BYTES:
            self.warnings.append(f"capability file {shown} exceeds the {MAX_FILE_BYTES}-byte limit")
            return None
        if self.spent + st.st_size > MAX_ROOT_BYTES:
            self.warnings.append(f"capability root bundle exceeds the {MAX_ROOT_BYTES}-byte limit")
            return None
        try:
            with open(real, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self.warnings.append(f"failed to read capability file {shown}: {os_message(exc)}")
            return None
        if len(data) > MAX_FILE_BYTES or self.spent + len(data) > MAX_ROOT_BYTES:
            self.warnings.append(f"capability file {shown} exceeded its read limit")
            return None
        try:
            contents = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.warnings.append(f"capability file {shown} is not UTF-8: {_utf8_problem(exc)}")
            return None
        self.spent += len(data)
        return {"path": shown, "contents": contents}

    def first_manifest(self, directory: Path) -> dict[str, str] | None:
        for relative in PLUGIN_MANIFEST_PATHS:
            found = self.text(directory / relative)
            if found is not None:
                return found
        return None


# -- capabilityRoots/discoverV1 -------------------------------------------------


def _manifest_rank(path: Path) -> int | None:
    """Where a ``plugin.json`` stands in `PLUGIN_MANIFEST_PATHS`, or None if it is not one."""
    if path.name != "plugin.json" or path.parent.name not in _MANIFEST_DIRS:
        return None
    return _MANIFEST_DIRS.index(path.parent.name)


def _declared(root: Path, name: str, value: Any, manifest: str, warnings: list[str]) -> Path | None:
    """The file a manifest's `name` member names (``./…`` below the root), or None."""
    if not isinstance(value, str):
        return None
    if not value.startswith("./"):
        warnings.append(f"ignoring {name} in {manifest}: path must start with `./`")
        return None
    relative = value[2:]
    if not relative or ".." in re.split(r"[/\\]", relative):
        warnings.append(
            f"ignoring {name} in {manifest}: path must remain below the capability root"
        )
        return None
    return Path(os.path.normpath(root / relative))


def _plugin(root: Path, manifest: dict[str, str], reader: Reader) -> dict[str, Any]:
    try:
        declared = json.loads(manifest["contents"])
    except ValueError:
        declared = None
    if not isinstance(declared, dict):
        declared = {}
    warnings = reader.warnings
    mcp = declared.get("mcpServers")
    mcp_path = None
    if not isinstance(mcp, dict):
        mcp_path = _declared(root, "mcpServers", mcp, manifest["path"], warnings)
        mcp_path = mcp_path or root / ".mcp.json"
    apps_path = _declared(root, "apps", declared.get("apps"), manifest["path"], warnings)
    return {
        "manifest": manifest,
        "mcpConfig": None if mcp_path is None else reader.text(mcp_path),
        "appsConfig": None if apps_path is None else reader.text(apps_path),
    }


def discover_root(access: Access, root_id: str, root: Path) -> dict[str, Any]:
    """One root's discovery (blocking)."""
    shown = file_uri(root)
    found: dict[str, Any] = {
        "id": root_id, "path": shown, "plugin": None, "skills": [],
        "namespaceManifests": [], "warnings": [], "error": None,
    }  # fmt: skip
    try:
        is_dir = stat.S_ISDIR(os.stat(access.real(root)).st_mode)
    except (OSError, ExecError) as exc:
        problem = os_message(exc) if isinstance(exc, OSError) else str(exc)
        found["error"] = f"failed to inspect capability root {shown}: {problem}"
        return found
    if not is_dir:
        found["error"] = f"capability root {shown} is not a directory"
        return found
    try:
        walked = walk_tree(access, root, SCAN)
    except ExecError as exc:
        found["error"] = f"failed to scan capability root {shown}: {exc}"
        return found
    reader = Reader(access, found["warnings"])
    reader.warnings.extend(
        f"failed to scan capability path {e['path']}: {e['message']}" for e in walked.errors
    )
    if walked.truncated:
        reader.warnings.append(f"capability scan reached its traversal limit (root: {shown})")
    files = [Path(parse_path(e["path"])) for e in walked.entries if e["kind"] == "file"]
    skills = sorted((p for p in files if p.name == "SKILL.md"), key=file_uri)
    manifests = sorted(
        (p for p in files if _manifest_rank(p) is not None),
        key=lambda p: (file_uri(p.parent.parent), _manifest_rank(p)),
    )
    own = reader.first_manifest(root)
    inherited = own
    for ancestor in root.parents:  # up to / itself
        if inherited is not None:
            break
        inherited = reader.first_manifest(ancestor)
    seen: set[str] = set()
    if inherited is not None:
        seen.add(file_uri(Path(parse_path(inherited["path"])).parent.parent))
        found["namespaceManifests"].append(inherited)
    for path in manifests:
        plugin_root = file_uri(path.parent.parent)
        if plugin_root in seen:
            continue
        seen.add(plugin_root)
        manifest = reader.text(path)
        if manifest is not None:
            found["namespaceManifests"].append(manifest)
    if own is not None:
        found["plugin"] = _plugin(root, own, reader)
    for path in skills:
        instructions = reader.text(path)
        if instructions is not None:
            metadata = reader.text(path.parent / "agents" / "openai.yaml")
            found["skills"].append({"instructions": instructions, "metadata": metadata})
    return found


async def discover_v1(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(DiscoverV1Params, params)
    if len(p.roots) > MAX_ROOTS:
        raise InvalidRequestError(f"capability root discovery accepts at most {MAX_ROOTS} roots")
    jobs = [
        (
            root.id,
            parse_path(root.path),
            Access.of(ctx, FsParams.model_construct(sandbox=root.sandbox)),
        )
        for root in p.roots
    ]

    def run() -> list[dict[str, Any]]:
        return [discover_root(access, root_id, path) for root_id, path, access in jobs]

    return {"roots": await asyncio.to_thread(run)}


# -- capabilities/discoverV2 -----------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


def _front_matter(text: str) -> dict[str, Any] | None:
    """The YAML front matter of a ``SKILL.md`` (a small subset: scalars and one level of
    nesting), or None without one."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        return None
    fields: dict[str, Any] = {}
    section: dict[str, Any] | None = None
    for line in match.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            return None
        value = _scalar(value.strip())
        if line[:1] in (" ", "\t") and section is not None:
            section[key.strip()] = value
        elif value == "":
            section = fields[key.strip()] = {}
        else:
            section = None
            fields[key.strip()] = value
    return fields


def _scalar(value: str) -> Any:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _skill(path: Path, text: str) -> dict[str, Any] | None:
    fields = _front_matter(text)
    if fields is None:
        return None
    name, description = fields.get("name"), fields.get("description")
    if not isinstance(name, str) or not isinstance(description, str) or not name:
        return None
    metadata = fields.get("metadata")
    short = metadata.get("short-description") if isinstance(metadata, dict) else None
    return {
        "name": name,
        "description": description,
        "shortDescription": short if isinstance(short, str) else None,
        "path": file_uri(path),
        "discoveryRoot": None,
        "dependencies": None,
        "policy": None,
    }


def _codex_home(env: Mapping[str, str]) -> Path:
    configured = env.get("CODEX_HOME")
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    return Path(os.path.abspath(configured)) if configured else home / ".codex"


def skill_roots(env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """Where the user's skills are installed, as Codex's server looks for them."""
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    return [
        ("codex-home-skills", _codex_home(env) / "skills"),
        ("user-agent-skills", Path(os.path.abspath(home / ".agents" / "skills"))),
    ]


@dataclass
class Inventory:
    """What ``capabilities/discoverV2`` found; `incomplete` when a skill could not be read."""

    access: Access
    incomplete: bool = False

    def skills(self, root: Path, label: Any) -> list[dict[str, Any]]:
        """The skills below `root`; each named by `label(front matter name)`."""
        try:
            if not os.path.isdir(self.access.real(root)):
                return []
            walked = walk_tree(self.access, root, SCAN)
        except ExecError:
            return []
        reader = Reader(self.access)
        files = [parse_path(e["path"]) for e in walked.entries if e["kind"] == "file"]
        found = []
        for path in sorted((p for p in files if p.name == "SKILL.md"), key=file_uri):
            text = reader.text(path)
            skill = None if text is None else _skill(path, text["contents"])
            if skill is None:
                self.incomplete = True
            else:
                skill["name"] = label(skill["name"])
                found.append(skill)
        self.incomplete = self.incomplete or bool(reader.warnings)
        return found

    def plugins(self, cache: Path) -> list[dict[str, Any]]:
        """Installed plugins: ``CACHE/MARKETPLACE/NAME/VERSION/`` with a manifest."""
        found = []
        for version_dir in sorted(cache.glob("*/*/*"), key=str):
            marketplace, name, version = version_dir.parts[-3:]
            reader = Reader(self.access)
            manifest = reader.first_manifest(version_dir)
            if manifest is None:
                continue
            try:
                declared = json.loads(manifest["contents"])
            except ValueError:
                declared = {}
            plugin_name = declared.get("name") if isinstance(declared, dict) else None
            plugin_name = plugin_name if isinstance(plugin_name, str) else name
            skills = self.skills(version_dir, lambda skill, n=plugin_name: f"{n}:{skill}")
            for skill in skills:
                del skill["discoveryRoot"]
            found.append(
                {
                    "id": f"{name}@{marketplace}",
                    "displayName": plugin_name,
                    "remotePluginId": None,
                    "version": version,
                    "root": file_uri(version_dir),
                    "files": _plugin(version_dir, manifest, reader),
                    "skills": skills,
                }
            )
        return found


def discover_installed(access: Access, env: Mapping[str, str]) -> dict[str, Any]:
    """``capabilities/discoverV2``'s answer (blocking)."""
    inventory = Inventory(access)
    plugins = inventory.plugins(_codex_home(env) / "plugins" / "cache")
    skills = []
    for root_id, root in skill_roots(env):
        for skill in inventory.skills(root, lambda skill: skill):
            skill["discoveryRoot"] = {"id": root_id, "path": file_uri(root)}
            skill["dependencies"], skill["policy"] = skill.pop("dependencies"), skill.pop("policy")
            skills.append(skill)
    warnings = (
        ["some capability metadata could not be loaded; discovery may be incomplete"]
        if inventory.incomplete
        else []
    )
    return {"plugins": plugins, "skills": skills, "warnings": warnings}


async def discover_v2(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(DiscoverV2Params, params)
    parse_path(p.cwd, "cwd")
    access = Access.of(ctx, p)
    env = os.environ if ctx.rules.env is None else ctx.rules.env
    return await asyncio.to_thread(discover_installed, access, env)


DISCOVERY_METHODS: dict[str, Method] = {
    "capabilityRoots/discoverV1": Method(discover_v1, READ),
    "capabilities/discoverV2": Method(discover_v2, READ),
}
