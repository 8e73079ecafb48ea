"""The Jupyter Server extension: traits, building the registry, lifecycle.

Enabled by `jupyter-config/jupyter_server_config.d/jupyter_exec.json`, so a
plain `pip install` makes `jupyter server`/`jupyter lab` serve
`{base_url}api/exec/ws` and the REST mirror (SPEC 1, 8). Every limit of the
spec is a configurable trait, e.g. `c.ExecExtensionApp.max_processes = 64`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Enum, Float, Int, Unicode

from .dispatch import ExecService, ServiceConfig
from .registry import Registry, RegistryConfig

SERVICE_KEY = "jupyter_exec_service"
ACTIVITY_INTERVAL_MS = 30_000


class ExecExtensionApp(ExtensionApp):
    """Hosts one process registry shared by every client of this Jupyter server."""

    name = "jupyter_exec"
    load_other_extensions = True

    retained_bytes_per_process = Int(
        1 << 20, help="Recent output kept in memory per process, in bytes."
    ).tag(config=True)
    log_bytes_per_process = Int(
        1 << 30, help="Output kept in the on-disk log per process, in bytes (0: no log)."
    ).tag(config=True)
    log_dir = Unicode(
        "", help="Directory for output logs (default: jupyter-exec under the runtime directory)."
    ).tag(config=True)
    exited_retention_seconds = Float(
        3600.0, help="How long a finished process stays readable after it closed."
    ).tag(config=True)
    session_resume_seconds = Float(
        60.0, help="How long a disconnected session may be resumed with resumeSessionId."
    ).tag(config=True)
    max_processes = Int(256, help="Most processes running at once.").tag(config=True)
    default_lifetime = Enum(
        ["detached", "connection"],
        "detached",
        help="Lifetime of a process whose start request names none.",
    ).tag(config=True)
    max_message_bytes = Int(16 << 20, help="Largest websocket message accepted, in bytes.").tag(
        config=True
    )
    root_dir = Unicode(
        "",
        help="Default cwd of processes, base of relative cwds (default: the server's root_dir).",
    ).tag(config=True)
    confine_to_root = Bool(
        False,
        help="Refuse process cwds and fs/* paths outside root_dir (symlinks resolved). Off: "
        "fs/* may use any path a process could, since such a process could write it anyway.",
    ).tag(config=True)

    busy_while_running = Bool(
        True,
        help="Count running processes as server activity, so idle culling "
        "(JupyterHub's culler) spares a server whose jobs are still running.",
    ).tag(config=True)

    service: ExecService
    _activity: PeriodicCallback | None = None

    def initialize_settings(self) -> None:
        server = self.serverapp
        assert server is not None
        root = Path(self.root_dir or server.root_dir).expanduser().resolve()
        log_dir = Path(self.log_dir or Path(server.runtime_dir) / "jupyter-exec")
        registry = Registry(
            RegistryConfig(
                root_dir=root,
                retained_bytes_per_process=self.retained_bytes_per_process,
                log_bytes_per_process=self.log_bytes_per_process,
                log_dir=log_dir,
                exited_retention_seconds=self.exited_retention_seconds,
                max_processes=self.max_processes,
                confine_to_root=self.confine_to_root,
            )
        )
        self.service = ExecService(
            registry,
            ServiceConfig(
                default_lifetime="connection"
                if self.default_lifetime == "connection"
                else "detached",
                session_resume_seconds=self.session_resume_seconds,
                max_message_bytes=self.max_message_bytes,
            ),
        )
        self.settings[SERVICE_KEY] = self.service
        if self.busy_while_running:
            self._activity = PeriodicCallback(self._report_activity, ACTIVITY_INTERVAL_MS)
            self._activity.start()

    def _report_activity(self) -> None:
        # jupyter_server's last_activity() takes the max of every `*_last_activity` setting.
        if self.service.registry.running() and self.serverapp is not None:
            self.serverapp.web_app.settings["exec_last_activity"] = datetime.now(timezone.utc)

    def initialize_handlers(self) -> None:
        from .handlers import handlers

        self.handlers.extend(handlers(self.service))

    async def stop_extension(self) -> None:
        """Server shutdown: terminate and await every process, delete the logs."""
        if self._activity is not None:
            self._activity.stop()
        from .mcp_http import stop_endpoint

        if self.serverapp is not None:
            await stop_endpoint(self.serverapp.web_app.settings)
        await self.service.aclose()
