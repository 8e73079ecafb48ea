"""``environment/info`` and ``environmentConfig/read``: what Codex asks about the executor.

Codex (0.169) reads the executor's description from the ``environmentInfo``
member of the ``initialize`` result, or, when that is absent, calls
``environment/info`` (params ``null``) right after ``initialized``. It takes
the executor's capabilities from that description's ``capabilities`` member,
not from the top level of the ``initialize`` result, and calls
``fs/watchMissing`` and ``environmentConfig/read`` only when they are
advertised there (``fsWatchMissing``, ``environmentConfigRead``). So
``advertised_capabilities()`` lists exactly what this server implements.

``environmentConfig/read`` asks for the executor's own Codex configuration
layers (``$CODEX_HOME/config.toml`` on a Codex executor). This server hosts
no Codex configuration, so both stacks are empty and the client's own
configuration applies unchanged.

Both describe the requesting front (SPEC 3): its root is the `cwd`, its
environment's `SHELL` and `CODEX_HOME` are used, not the daemon's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..wire.protocol import Params, parse_params
from .context import READ, Method
from .discovery import CAPABILITIES as DISCOVERY_CAPABILITIES
from .fs_methods import CAPABILITIES as FS_CAPABILITIES
from .fs_methods import file_uri, parse_path
from .fs_stream import CAPABILITIES as STREAM_CAPABILITIES
from .http_methods import CAPABILITIES as HTTP_CAPABILITIES
from .network_proxy import CAPABILITIES as NETWORK_CAPABILITIES
from .transparent_tcp import capabilities as transparent_tcp_capabilities

if TYPE_CHECKING:
    from .context import CallContext

__all__ = [
    "CAPABILITIES",
    "ENVIRONMENT_METHODS",
    "EnvironmentConfigReadParams",
    "advertised_capabilities",
    "environment_info",
    "get_environment_info",
    "get_environment_status",
    "login_shell",
    "platform_os",
    "provider_id",
    "read_environment_config",
]

CAPABILITIES: dict[str, Any] = {
    "environmentConfigRead": True,
    # A write grant on `/` runs, with devices usable and the read-only carve-outs kept
    # (wire/sandbox.py `from_codex`, docs/sandbox.md).
    "linuxRootWritePreservesDevices": True,
    "linuxApprovedRootWritePreservesRestrictions": True,
    # `process/start` `shellSnapshot`: the profile sourced once per scope (core/shell_snapshot.py).
    "shellSnapshotV2": True,
}

#: Shells Codex knows how to drive (it runs ``SHELL -lc CMD``).
_SHELL_NAMES = ("bash", "zsh", "sh")


def advertised_capabilities() -> dict[str, Any]:
    """Everything this server implements beyond ``process/*``, as Codex names it."""
    return {
        **FS_CAPABILITIES,
        **CAPABILITIES,
        **STREAM_CAPABILITIES,
        **DISCOVERY_CAPABILITIES,
        **HTTP_CAPABILITIES,
        **NETWORK_CAPABILITIES,
        **transparent_tcp_capabilities(),
    }


def login_shell(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The shell commands should run in: ``$SHELL`` (of `env`, default ours), the
    account's shell, bash, sh."""
    candidates = [(os.environ if env is None else env).get("SHELL", "")]
    with contextlib.suppress(KeyError):
        candidates.append(pwd.getpwuid(os.getuid()).pw_shell)
    candidates += ["/bin/bash", "/usr/bin/bash", "/bin/sh"]
    for path in candidates:
        name = os.path.basename(path)
        if name in _SHELL_NAMES and os.path.isfile(path) and os.access(path, os.X_OK):
            return {"name": name, "path": path}
    return {"name": "sh", "path": "/bin/sh"}


def platform_os() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    return sys.platform


def environment_info(ctx: CallContext) -> dict[str, Any]:
    """The ``environmentInfo`` object; ``cwd`` is the front's root directory."""
    return {
        "shell": login_shell(ctx.rules.env),
        "executorVersion": __version__,
        "providerId": provider_id(ctx.root_dir),
        "cwd": file_uri(ctx.root_dir),
        "userHomeDir": file_uri(Path.home()),
        "platformOs": platform_os(),
        "prependPathDirs": [],
        "temporaryDirectories": [],
        "tempDir": file_uri(tempfile.gettempdir()),
        "capabilities": advertised_capabilities(),
    }


async def get_environment_info(ctx: CallContext, params: Any) -> dict[str, Any]:
    return environment_info(ctx)


def provider_id(root: Path) -> str:
    """Which executor this is, as ``sha256:HEX``: the same for every connection to a front.

    Codex's own server answers one fixed value whatever its home, user, host
    name, machine id or binary path (docs/codex.md): it names the kind of
    executor, not the machine. Ours names jupyter-exec and the front's root,
    so fronts with different roots are never taken for one another.
    """
    digest = hashlib.sha256(b"jupyter-exec\0" + os.fsencode(root)).hexdigest()
    return f"sha256:{digest}"


async def get_environment_status(ctx: CallContext, params: Any) -> dict[str, Any]:
    """``environment/status``: ``ready`` whenever a handshaken client asks (dispatch
    refuses it before ``initialize`` with -32600, as Codex's server does)."""
    return {"status": "ready"}


class EnvironmentConfigReadParams(Params):
    cwd: str | None = None
    config_paths: list[list[str]] = []
    requirements_paths: list[list[str]] = []


def _codex_home(env: Mapping[str, str] | None) -> Path:
    configured = (os.environ if env is None else env).get("CODEX_HOME")
    return Path(configured) if configured else Path.home() / ".codex"


async def read_environment_config(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(EnvironmentConfigReadParams, params)
    if p.cwd is not None:
        parse_path(p.cwd, "cwd")
    return {
        "userHomeDir": file_uri(Path.home()),
        "codexHomeDir": file_uri(_codex_home(ctx.rules.env).absolute()),
        "hostname": socket.gethostname(),
        "config": {"layers": [], "cloudInsertionIndex": 0},
        "requirements": {"layers": [], "cloudInsertionIndex": 0},
    }


ENVIRONMENT_METHODS: dict[str, Method] = {
    "environment/info": Method(get_environment_info, READ),
    "environment/status": Method(get_environment_status, READ),
    "environmentConfig/read": Method(read_environment_config, READ),
}
