"""One configuration for every front: its defaults are the traits' and the CLI's.

`ExecConfig` holds every limit of SPEC 3-7 and the daemon's own settings. The
Jupyter traits (app.py), the standalone server's options (serve.py) and the
embedded registries (cli.py, client.py) read their defaults from here, so a
default is written once. `service.build_service` turns it into a running
service; the daemon receives it as JSON (`to_json`/`from_json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .wire.models import Lifetime


@dataclass
class ExecConfig:
    #: Default cwd of processes and root of fs/* (None: the current directory).
    root_dir: Path | None = None
    retained_bytes_per_process: int = 1 << 20
    log_bytes_per_process: int = 1 << 30
    #: Where output logs go (None: a temporary directory, or the daemon's state dir).
    log_dir: Path | None = None
    exited_retention_seconds: float = 3600.0
    session_resume_seconds: float = 60.0
    max_processes: int = 256
    #: Refuse process cwds and fs/* paths outside `root_dir` (confinement.py, SPEC 4).
    confine_to_root: bool = False
    #: SPEC 3: the standalone server and embedded registries default to
    #: "connection"; the Jupyter extension's trait overrides it with "detached".
    default_lifetime: Lifetime = "connection"
    max_message_bytes: int = 16 << 20
    #: The exec daemon exits after this long with no process and no client.
    daemon_idle_seconds: float = 60.0
    #: Jupyter only: stop every process and the daemon when the server stops.
    stop_processes_on_shutdown: bool = False
    #: The sandbox of every process, and the one of processes agents start (MCP,
    #: Codex clients): MODE or MODE:network-off (wire/sandbox.py `parse_setting`).
    default_sandbox: str = "none"
    agent_sandbox: str = "workspace-write"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for key in ("root_dir", "log_dir"):
            if data[key] is not None:
                data[key] = str(data[key])
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ExecConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("root_dir", "log_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


DEFAULTS = ExecConfig()


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
    data = environ.get("JUPYTER_DATA_DIR") or os.path.join(
        environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "jupyter"
    )
    return Path(data) / "runtime"
