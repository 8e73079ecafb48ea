"""The composition root: one place that builds a registry and its service.

Every front (the daemon, the standalone server, the embedded registries of
the CLI and the client) calls `build_service`; none builds a `Registry` or an
`ExecService` itself, so a new setting is wired once. The inner configs have
no defaults: every value comes from the settings (config.py).
"""

from __future__ import annotations

from pathlib import Path

from ..config import (
    CONTROL_QUEUE_BYTES,
    MAX_READ_BYTES,
    MAX_REQUESTS_IN_FLIGHT,
    DaemonSettings,
)
from ..core.registry import Registry, RegistryConfig
from ..wire.rules import FrontRules
from .dispatch import ExecService, ServiceConfig

__all__ = ["build_registry", "build_service"]


def build_registry(
    settings: DaemonSettings | None = None, durable_log_dir: Path | None = None
) -> Registry:
    """A registry with `settings`' limits (default: the daemon's defaults).
    `durable_log_dir` makes logs outlive a crash (the daemon)."""
    settings = settings or DaemonSettings()
    return Registry(
        RegistryConfig(
            retained_bytes_per_process=settings.retained_bytes_per_process,
            log_bytes_per_process=settings.log_bytes_per_process,
            retained_bytes_total=settings.retained_bytes_total,
            logs_max_use=settings.logs_max_use,
            logs_keep_free=settings.logs_keep_free,
            log_dir=durable_log_dir or settings.log_dir,
            exited_retention_seconds=settings.exited_retention_seconds,
            max_read_bytes=MAX_READ_BYTES,
            durable_logs=durable_log_dir is not None,
        )
    )


def build_service(
    settings: DaemonSettings | None = None,
    rules: FrontRules | None = None,
    durable_log_dir: Path | None = None,
) -> ExecService:
    """A service over a fresh registry (`build_registry`).

    `settings` are the registry's own (an `ExecConfig` for an in-process
    service); `rules` are those of connections that bring none (an in-process
    service's one front; the daemon's fallback for a front that sent none;
    default: this process's working directory as root).
    """
    settings = settings or DaemonSettings()
    config = ServiceConfig(
        rules=rules or FrontRules("this exec server", Path.cwd().resolve()),
        session_resume_seconds=settings.session_resume_seconds,
        max_message_bytes=settings.max_message_bytes,
        control_queue_bytes=CONTROL_QUEUE_BYTES,
        max_requests_in_flight=MAX_REQUESTS_IN_FLIGHT,
    )
    return ExecService(build_registry(settings, durable_log_dir), config)
