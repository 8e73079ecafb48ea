"""The Jupyter Server extension: traits, the link to the exec daemon, lifecycle.

Enabled by `jupyter-config/jupyter_server_config.d/jupyter_exec.json`, so a
plain `pip install` makes `jupyter server`/`jupyter lab` serve
`{base_url}api/exec/ws` and the REST mirror (SPEC 1, 8).

The processes live in the user's exec daemon (daemon/), started on first use
in this server's runtime directory, so they outlive this server (SPEC 3
Durability); this extension authenticates and relays. The daemon serves every
front of the user, so this server's own rules (root, `confine_to_root`,
`max_processes`, default lifetime, its environment) are traits here and travel
with each of its daemon connections (`front_rules`); the daemon's settings
(retention, logs, idle exit) are the user's, in `jupyter_exec_daemon.json`.
The traits that used to set those are kept only to say so in the log.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any as AnyValue

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Any, Bool, Enum, Int, TraitError, TraitType, Unicode, validate

from ..config import DEFAULTS, user_daemon_settings_path
from ..wire.errors import ExecError
from ..wire.rules import FrontRules
from ..wire.sandbox import parse_setting
from .relay import DaemonLink

__all__ = ["ACTIVITY_INTERVAL_MS", "DAEMON_SETTINGS", "ExecExtensionApp"]


ACTIVITY_INTERVAL_MS = 30_000

#: Traits that were the daemon's settings: now the user's, in jupyter_exec_daemon.json.
DAEMON_SETTINGS = (
    "retained_bytes_per_process",
    "log_bytes_per_process",
    "log_dir",
    "exited_retention_seconds",
    "session_resume_seconds",
    "daemon_idle_seconds",
)


def _daemon_setting(name: str) -> TraitType[AnyValue, AnyValue]:
    return Any(
        None,
        allow_none=True,
        help=f"Ignored (a warning says so): {name} is a setting of the user's exec daemon, "
        f"shared by every server; set it in jupyter_exec_daemon.json.",
    ).tag(config=True)


class ExecExtensionApp(ExtensionApp):
    """Relays every client of this Jupyter server to the user's exec daemon."""

    name = "jupyter_exec"
    load_other_extensions = True

    max_processes = Int(
        DEFAULTS.max_processes,
        help="Most processes started through this server running at once.",
    ).tag(config=True)
    default_lifetime = Enum(
        ["detached", "connection"],
        "detached",  # SPEC 3: the Jupyter extension's default
        help="Lifetime of a process whose start request names none.",
    ).tag(config=True)
    max_message_bytes = Int(
        DEFAULTS.max_message_bytes,
        help="Largest websocket message this server relays (relay_websockets, TLS); "
        "the exec daemon's own limit is its max_message_bytes setting.",
    ).tag(config=True)
    root_dir = Unicode(
        "",
        help="Default cwd of processes, base of relative cwds (default: the server's root_dir).",
    ).tag(config=True)
    confine_to_root = Bool(
        False,
        help="Refuse process cwds and fs/* paths outside root_dir (symlinks resolved), and "
        "show this server only the processes inside it. Off: fs/* may use any path a process "
        "could, since such a process could write it anyway.",
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
    def _valid_sandbox(self, proposal: dict[str, AnyValue]) -> str:
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
        False,
        help="Stop every process and the exec daemon when this server stops or dies "
        "(the behaviour before processes outlived the server).",
    ).tag(config=True)
    relay_websockets = Bool(
        False,
        help="Relay each websocket's frames through this server instead of handing the "
        "client's connection to the exec daemon (always relayed under TLS).",
    ).tag(config=True)

    retained_bytes_per_process = _daemon_setting("retained_bytes_per_process")
    log_bytes_per_process = _daemon_setting("log_bytes_per_process")
    log_dir = _daemon_setting("log_dir")
    exited_retention_seconds = _daemon_setting("exited_retention_seconds")
    session_resume_seconds = _daemon_setting("session_resume_seconds")
    daemon_idle_seconds = _daemon_setting("daemon_idle_seconds")

    link: DaemonLink
    _activity: PeriodicCallback | None = None

    def front_rules(self) -> FrontRules:
        """This server's rules, sent with each of its daemon connections (SPEC 3)."""
        server = self.serverapp
        assert server is not None
        return FrontRules(
            name=f"Jupyter server {server.connection_url}",
            root_dir=Path(self.root_dir or server.root_dir).expanduser().resolve(),
            confine_to_root=self.confine_to_root,
            max_processes=self.max_processes,
            default_lifetime="connection" if self.default_lifetime == "connection" else "detached",
            env=dict(os.environ),
            default_sandbox=self.default_sandbox,
            agent_sandbox=self.agent_sandbox,
            proxy_base_url=self._proxy_base_url(),
        )

    def _proxy_base_url(self) -> str | None:
        """SPEC 11: `{base_url}proxy/` when jupyter-server-proxy serves this server
        (enabled beside us by jupyter-config/), so listed ports carry their links."""
        server = self.serverapp
        assert server is not None
        enabled = server.jpserver_extensions.get("jupyter_server_proxy", False)
        return f"{server.base_url}proxy/" if enabled else None

    def _warn_daemon_settings(self) -> None:
        for name in DAEMON_SETTINGS:
            if getattr(self, name) is not None:
                self.log.warning(
                    "jupyter-exec: ExecExtensionApp.%s is ignored: it is a setting of the "
                    'user\'s exec daemon, shared by every server; set "%s" in %s instead '
                    "(`jupyter exec daemon config` shows the values in force)",
                    name,
                    name,
                    user_daemon_settings_path(),
                )

    def initialize_settings(self) -> None:
        server = self.serverapp
        assert server is not None
        self._warn_daemon_settings()
        self.link = DaemonLink(
            Path(server.runtime_dir), self.front_rules, self.stop_processes_on_shutdown
        )
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
