"""The Jupyter Server extension: traits, the link to the exec daemon, lifecycle.

Enabled by `jupyter-config/jupyter_server_config.d/jupyter_exec.json`, so a
plain `pip install` makes `jupyter server`/`jupyter lab` serve
`{base_url}api/exec/ws` and the REST mirror (SPEC 1, 8). Every limit of the
spec is a configurable trait, e.g. `c.ExecExtensionApp.max_processes = 64`;
their defaults are `config.ExecConfig`'s.

The processes live in a per-user exec daemon (daemon/), started on first use
in this server's runtime directory, so they outlive this server (SPEC 3
Durability); this extension authenticates and relays. The daemon takes the
settings of whoever started it; a server that finds one running uses it as is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, validate

from ..config import DEFAULTS, ExecConfig
from ..wire.errors import ExecError
from ..wire.sandbox import parse_setting
from .relay import DaemonLink

ACTIVITY_INTERVAL_MS = 30_000


class ExecExtensionApp(ExtensionApp):
    """Relays every client of this Jupyter server to the user's exec daemon."""

    name = "jupyter_exec"
    load_other_extensions = True

    retained_bytes_per_process = Int(
        DEFAULTS.retained_bytes_per_process,
        help="Recent output kept in memory per process, in bytes.",
    ).tag(config=True)
    log_bytes_per_process = Int(
        DEFAULTS.log_bytes_per_process,
        help="Output kept in the on-disk log per process, in bytes (0: no log).",
    ).tag(config=True)
    log_dir = Unicode(
        "", help="Directory for output logs (default: the exec daemon's state directory)."
    ).tag(config=True)
    exited_retention_seconds = Float(
        DEFAULTS.exited_retention_seconds,
        help="How long a finished process stays readable after it closed.",
    ).tag(config=True)
    session_resume_seconds = Float(
        DEFAULTS.session_resume_seconds,
        help="How long a disconnected session may be resumed with resumeSessionId.",
    ).tag(config=True)
    max_processes = Int(DEFAULTS.max_processes, help="Most processes running at once.").tag(
        config=True
    )
    default_lifetime = Enum(
        ["detached", "connection"],
        "detached",  # SPEC 3: the Jupyter extension's default
        help="Lifetime of a process whose start request names none.",
    ).tag(config=True)
    max_message_bytes = Int(
        DEFAULTS.max_message_bytes, help="Largest websocket message accepted, in bytes."
    ).tag(config=True)
    root_dir = Unicode(
        "",
        help="Default cwd of processes, base of relative cwds (default: the server's root_dir).",
    ).tag(config=True)
    confine_to_root = Bool(
        False,
        help="Refuse process cwds and fs/* paths outside root_dir (symlinks resolved). Off: "
        "fs/* may use any path a process could, since such a process could write it anyway.",
    ).tag(config=True)
    default_sandbox = Unicode(
        DEFAULTS.default_sandbox,
        help="Sandbox of every process: none, read-only or workspace-write (writes in the "
        "root and tmp), optionally :network-off (docs/sandbox.md). Requests may be stricter.",
    ).tag(config=True)
    agent_sandbox = Unicode(
        DEFAULTS.agent_sandbox,
        help="Sandbox of what agents start (the MCP face, Codex clients), on top of "
        "default_sandbox; same values.",
    ).tag(config=True)

    @validate("default_sandbox", "agent_sandbox")
    def _valid_sandbox(self, proposal: dict[str, Any]) -> str:
        try:
            parse_setting(proposal["value"], proposal["trait"].name)
        except ExecError as exc:
            raise TraitError(exc.message) from None
        return str(proposal["value"])

    busy_while_running = Bool(
        True,
        help="Count running processes as server activity, so idle culling "
        "(JupyterHub's culler) spares a server whose jobs are still running.",
    ).tag(config=True)
    stop_processes_on_shutdown = Bool(
        DEFAULTS.stop_processes_on_shutdown,
        help="Stop every process and the exec daemon when this server stops or dies "
        "(the behaviour before processes outlived the server).",
    ).tag(config=True)
    daemon_idle_seconds = Float(
        DEFAULTS.daemon_idle_seconds,
        help="The exec daemon exits after this long with no process and no client.",
    ).tag(config=True)

    relay_websockets = Bool(
        False,
        help="Relay each websocket's frames through this server instead of handing the "
        "client's connection to the exec daemon (always relayed under TLS).",
    ).tag(config=True)

    link: DaemonLink
    _activity: PeriodicCallback | None = None

    def exec_config(self) -> ExecConfig:
        server = self.serverapp
        assert server is not None
        return ExecConfig(
            root_dir=Path(self.root_dir or server.root_dir).expanduser().resolve(),
            retained_bytes_per_process=self.retained_bytes_per_process,
            log_bytes_per_process=self.log_bytes_per_process,
            log_dir=Path(self.log_dir) if self.log_dir else None,
            exited_retention_seconds=self.exited_retention_seconds,
            session_resume_seconds=self.session_resume_seconds,
            max_processes=self.max_processes,
            confine_to_root=self.confine_to_root,
            default_lifetime="connection" if self.default_lifetime == "connection" else "detached",
            max_message_bytes=self.max_message_bytes,
            daemon_idle_seconds=self.daemon_idle_seconds,
            stop_processes_on_shutdown=self.stop_processes_on_shutdown,
            default_sandbox=self.default_sandbox,
            agent_sandbox=self.agent_sandbox,
        )

    def initialize_settings(self) -> None:
        server = self.serverapp
        assert server is not None
        self.link = DaemonLink(Path(server.runtime_dir), self.exec_config())
        if self.busy_while_running:
            self._activity = PeriodicCallback(self._report_activity, ACTIVITY_INTERVAL_MS)
            self._activity.start()

    async def _report_activity(self) -> None:
        # jupyter_server's last_activity() takes the max of every `*_last_activity` setting.
        try:
            busy = await self.link.any_running()
        except Exception as exc:
            self.log.debug("jupyter-exec: activity check failed: %s", exc)
            return
        if busy and self.serverapp is not None:
            self.serverapp.web_app.settings["exec_last_activity"] = datetime.now(timezone.utc)

    def initialize_handlers(self) -> None:
        from .handlers import handlers

        self.handlers.extend(handlers(self.link, self.max_message_bytes, self.relay_websockets))

    async def stop_extension(self) -> None:
        """Server shutdown: the processes keep running, unless told to stop them too."""
        if self._activity is not None:
            self._activity.stop()
        from .mcp_http import stop_endpoint

        if self.serverapp is not None:
            await stop_endpoint(self.serverapp.web_app.settings)
        if self.stop_processes_on_shutdown:
            await self.link.shutdown()
        await self.link.aclose()
