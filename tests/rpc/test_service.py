"""The composition root: every default comes from config.py, for tests as for production."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from jupyter_exec.config import DEFAULTS, DaemonSettings
from jupyter_exec.core.registry import RegistryConfig
from jupyter_exec.rpc.dispatch import ServiceConfig
from jupyter_exec.rpc.service import build_service
from tests.service import make_service


def test_inner_configs_have_no_defaults_of_their_own() -> None:
    """A default written twice disagreed (retention 3600 vs 600 s, resume 60 vs 30 s)."""
    for config in (RegistryConfig, ServiceConfig):
        defaulted = [
            f.name
            for f in dataclasses.fields(config)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        ]
        assert defaulted == [], f"{config.__name__} has defaults: {defaulted}"


def test_the_test_service_runs_with_production_defaults(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    production = build_service(DaemonSettings())
    try:
        for name in ("exited_retention_seconds", "retained_bytes_total", "logs_max_use"):
            assert getattr(service.registry.config, name) == getattr(DEFAULTS, name), name
            assert getattr(production.registry.config, name) == getattr(DEFAULTS, name), name
        assert service.registry.config.exited_retention_seconds == 3600.0
        assert service.config.session_resume_seconds == DEFAULTS.session_resume_seconds == 60.0
        assert production.config == dataclasses.replace(
            service.config, rules=production.config.rules
        )
    finally:
        asyncio.run(service.aclose())
        asyncio.run(production.aclose())


def test_a_test_override_reaches_the_registry_and_the_service(tmp_path: Path) -> None:
    service = make_service(tmp_path, exited_retention_seconds=5, session_resume_seconds=2)
    try:
        assert service.registry.config.exited_retention_seconds == 5
        assert service.config.session_resume_seconds == 2
        assert service.registry.config.log_dir == tmp_path / "logs"
    finally:
        asyncio.run(service.aclose())
