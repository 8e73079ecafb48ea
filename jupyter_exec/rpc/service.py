"""The composition root: one place that builds a registry and its service.

Every front (the daemon, the standalone server, the embedded registries of
the CLI and the client) calls `build_service`; none builds a `Registry` or an
`ExecService` itself, so a new setting is wired once.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ExecConfig
from ..core.registry import Registry, RegistryConfig
from ..wire.sandbox import parse_setting
from .dispatch import ExecService, ServiceConfig


def build_service(
    config: ExecConfig | None = None, durable_log_dir: Path | None = None
) -> ExecService:
    """A service over a fresh registry; `durable_log_dir` makes logs outlive a crash (daemon)."""
    config = config or ExecConfig()
    registry = Registry(
        RegistryConfig(
            root_dir=(config.root_dir or Path.cwd()).expanduser().resolve(),
            retained_bytes_per_process=config.retained_bytes_per_process,
            log_bytes_per_process=config.log_bytes_per_process,
            log_dir=durable_log_dir or config.log_dir,
            exited_retention_seconds=config.exited_retention_seconds,
            max_processes=config.max_processes,
            confine_to_root=config.confine_to_root,
            durable_logs=durable_log_dir is not None,
        )
    )
    return ExecService(
        registry,
        ServiceConfig(
            default_lifetime=config.default_lifetime,
            session_resume_seconds=config.session_resume_seconds,
            max_message_bytes=config.max_message_bytes,
            default_sandbox=parse_setting(config.default_sandbox, "default_sandbox"),
            agent_sandbox=parse_setting(config.agent_sandbox, "agent_sandbox"),
        ),
    )
