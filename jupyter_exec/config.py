"""Configuration, split by whose it is: the daemon's (the user's) and a front's.

`DaemonSettings` belong to the user's exec daemon: its memory, disk and
timers, shared by every front it serves (retention, logs, session resume,
message size, idle exit). The daemon reads them at start from one place,
`jupyter_exec_daemon.json` in the Jupyter config path (`load_daemon_settings`);
which front starts it changes nothing. A front's own rules (root, confinement,
`max_processes`, lifetime, environment) are `wire.rules.FrontRules`, sent with
each connection.

`ExecConfig` is both at once, for a service that is its own daemon and its own
front: the standalone server and the embedded registries (cli.py,
embedded.py). The Jupyter traits (app.py) and serve's options read
their defaults from here, so a default is written once: the inner configs
(`core.registry.RegistryConfig`, `rpc.dispatch.ServiceConfig`) have none, and
`rpc.service.build_service` fills them from these settings and the constants
below (tunables that are no user's setting).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .wire.errors import JupyterExecError
from .wire.models import Lifetime
from .wire.rules import DEFAULT_MAX_PROCESSES, FrontRules

__all__ = [
    "DAEMON_SETTINGS_FILE",
    "DEFAULTS",
    "DaemonSettings",
    "DaemonSettingsError",
    "ExecConfig",
    "daemon_settings_paths",
    "jupyter_data_dir",
    "jupyter_runtime_dir",
    "load_daemon_settings",
    "user_daemon_settings_path",
]


#: The daemon settings file, looked up in every directory of the Jupyter config path.
DAEMON_SETTINGS_FILE = "jupyter_exec_daemon.json"

#: Cap of one `process/read` response when the client gives no `maxBytes`, so a
#: response stays far below `max_message_bytes` after base64.
MAX_READ_BYTES = 4 << 20
#: Responses (and watchers' events) waiting for one client beyond which the
#: transport stops reading its requests (SPEC 5; output is never queued).
CONTROL_QUEUE_BYTES = 8 << 20
#: Requests of one connection running at once; beyond it its transport stops reading.
MAX_REQUESTS_IN_FLIGHT = 256


@dataclass
class DaemonSettings:
    """The user's exec daemon: one per user and runtime dir, whoever starts it."""

    retained_bytes_per_process: int = 1 << 20
    log_bytes_per_process: int = 1 << 30
    #: Memory for the recent output of all processes together (core/retention.py):
    #: past it, finished processes' output is read back from their logs.
    retained_bytes_total: int = 64 << 20
    #: All logs together, as journald's SystemMaxUse= and SystemKeepFree=: bytes,
    #: or a percentage of the filesystem the logs are on. None (in code only, not in
    #: a settings file): no disk budget at all, the logs grow until the disk is full.
    logs_max_use: int | str | None = "10%"
    logs_keep_free: int | str = "15%"
    #: Where output logs go (None: a temporary directory, or the daemon's state dir).
    log_dir: Path | None = None
    exited_retention_seconds: float = 3600.0
    session_resume_seconds: float = 60.0
    max_message_bytes: int = 16 << 20
    #: The exec daemon exits after this long with no process and no client.
    daemon_idle_seconds: float = 60.0

    def to_wire(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["log_dir"] = None if self.log_dir is None else str(self.log_dir)
        return data


@dataclass
class ExecConfig(DaemonSettings):
    """A whole in-process service: its daemon settings and the rules of its one front."""

    #: Default cwd of processes and root of fs/* (None: the current directory).
    root_dir: Path | None = None
    max_processes: int = DEFAULT_MAX_PROCESSES
    #: Refuse process cwds and fs/* paths outside `root_dir` (core/front_root.py, SPEC 4).
    confine_to_root: bool = False
    #: SPEC 3: the standalone server and embedded registries default to
    #: "connection"; the Jupyter extension's trait overrides it with "detached".
    default_lifetime: Lifetime = "connection"
    #: The sandbox of every process, and the one of processes agents start (MCP,
    #: Codex clients): MODE or MODE:network-off (wire/sandbox.py `parse_setting`).
    default_sandbox: str = "none"
    agent_sandbox: str = "workspace-write"

    def front_rules(self, name: str) -> FrontRules:
        """The rules this service gives its own connections (its environment: this process's)."""
        return FrontRules(
            name=name,
            root_dir=(self.root_dir or Path.cwd()).expanduser().resolve(),
            confine_to_root=self.confine_to_root,
            max_processes=self.max_processes,
            default_lifetime=self.default_lifetime,
            default_sandbox=self.default_sandbox,
            agent_sandbox=self.agent_sandbox,
        )


DEFAULTS = ExecConfig()


class DaemonSettingsError(JupyterExecError, ValueError):
    """A daemon settings file that cannot be used; the message names the file and key."""


def daemon_settings_paths() -> list[Path]:
    """Where `jupyter_exec_daemon.json` may be, highest priority first (`jupyter --paths`):
    the user's config dir, the environment's, the system's (an admin's defaults)."""
    try:
        from jupyter_core.paths import jupyter_config_path
    except ImportError:
        return [user_daemon_settings_path()]
    return [Path(d) / DAEMON_SETTINGS_FILE for d in jupyter_config_path()]


def user_daemon_settings_path() -> Path:
    """The user's own settings file (`JUPYTER_CONFIG_DIR`, default ~/.jupyter): the one
    place to write a setting."""
    try:
        from jupyter_core.paths import jupyter_config_dir
    except ImportError:
        home = os.environ.get("JUPYTER_CONFIG_DIR") or os.path.expanduser("~/.jupyter")
        return Path(home) / DAEMON_SETTINGS_FILE
    return Path(jupyter_config_dir()) / DAEMON_SETTINGS_FILE


def load_daemon_settings(
    paths: list[Path] | None = None,
) -> tuple[DaemonSettings, dict[str, str]]:
    """The effective settings and where each came from (a file's path, or "default").

    Files earlier in `paths` win, as Jupyter's own config files do. An unknown
    key or a value of the wrong type is a `DaemonSettingsError`: a daemon that
    silently ignored a setting would be worse than one that does not start.
    """
    settings = DaemonSettings()
    sources = {f.name: "default" for f in dataclasses.fields(DaemonSettings)}
    for path in reversed(daemon_settings_paths() if paths is None else paths):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise DaemonSettingsError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DaemonSettingsError(f"{path}: must hold one JSON object")
        for key, value in data.items():
            setattr(settings, key, _setting(path, key, value))
            sources[key] = str(path)
    return settings, sources


def _setting(path: Path, key: str, value: object) -> Any:
    """One value of a settings file, checked against DaemonSettings' field of that name."""
    kinds = {f.name: f.type for f in dataclasses.fields(DaemonSettings)}
    if key not in kinds:
        raise DaemonSettingsError(f"{path}: unknown setting {key!r} (known: {', '.join(kinds)})")
    if key == "log_dir":
        if value is None or (isinstance(value, str) and value):
            return None if value is None else Path(value).expanduser()
        raise DaemonSettingsError(f"{path}: {key} must be a directory path or null")
    if key in ("logs_max_use", "logs_keep_free"):
        if isinstance(value, str) and _PERCENT.match(value) and float(value[:-1]) <= 100:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        why = 'must be a number of bytes or a percentage ("10%")'
        raise DaemonSettingsError(f"{path}: {key} {why}")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kinds[key] == "int" and not (isinstance(value, int) and number):
        raise DaemonSettingsError(f"{path}: {key} must be an integer")
    if not number or value < 0:  # type: ignore[operator]
        raise DaemonSettingsError(f"{path}: {key} must be a number >= 0")
    return value


_PERCENT = re.compile(r"^\d+(\.\d+)?%$")


def jupyter_runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Jupyter's runtime directory, as jupyter_core computes it when available."""
    environ = os.environ if environ is None else environ
    if environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(environ["JUPYTER_RUNTIME_DIR"])
    if environ is os.environ:
        try:
            from jupyter_core.paths import jupyter_runtime_dir as core_runtime_dir
        except ImportError:
            pass
        else:
            return Path(core_runtime_dir())
    return jupyter_data_dir(environ) / "runtime"


def jupyter_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Jupyter's data directory (``JUPYTER_DATA_DIR``, else the XDG default), as
    jupyter_core computes it on Linux; sandboxes may read it but never write it."""
    environ = os.environ if environ is None else environ
    data = environ.get("JUPYTER_DATA_DIR") or os.path.join(
        environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter"
    )
    return Path(data)
