"""The composition root: one place that builds a registry and its service.

Every front (the daemon, the standalone server, the embedded registries of
the CLI and the client) calls `build_service`; none builds a `Registry` or an
`ExecService` itself, so a new setting is wired once.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DaemonSettings
from ..core.registry import Registry, RegistryConfig
from ..wire.rules import FrontRules
from .dispatch import ExecService, ServiceConfig

__all__ = ["build_service"]


def build_service(
    settings: DaemonSettings | None = None,
    rules: FrontRules | None = None,
    durable_log_dir: Path | None = None,
) -> ExecService:
    """A service over a fresh registry.

    `settings` are the registry's own (an `ExecConfig` for an in-process
    service); `rules` are those of connections that bring none (an in-process
    service's one front; the daemon's fallback for a front that sent none).
    `durable_log_dir` makes logs outlive a crash (the daemon).
    """
    settings = settings or DaemonSettings()
    registry = Registry(
        RegistryConfig(
            retained_bytes_per_process=settings.retained_bytes_per_process,
            log_bytes_per_process=settings.log_bytes_per_process,
            retained_bytes_total=settings.retained_bytes_total,
            logs_max_use=settings.logs_max_use,
            logs_keep_free=settings.logs_keep_free,
            log_dir=durable_log_dir or settings.log_dir,
            exited_retention_seconds=settings.exited_retention_seconds,
            durable_logs=durable_log_dir is not None,
        )
    )
    config = ServiceConfig(
        session_resume_seconds=settings.session_resume_seconds,
        max_message_bytes=settings.max_message_bytes,
    )
    if rules is not None:
        config.rules = rules
    return ExecService(registry, config)
