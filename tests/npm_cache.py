"""npm tools the tests need (Codex, configurable-http-proxy), installed once into a cache.

The cache is `$JUPYTER_EXEC_TEST_CACHE` or `~/.cache/jupyter-exec-test`; CI starts
without it, so the first test that needs a tool installs it from the npm registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def cache_dir() -> Path:
    configured = os.environ.get("JUPYTER_EXEC_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "jupyter-exec-test"


def npm_tool(subdir: str, package: str, command: str, timeout: float = 600) -> Path:
    """The launcher of `command` from `package`, npm-installed under the cache's `subdir`."""
    prefix = cache_dir() / subdir
    launcher = prefix / "node_modules" / ".bin" / command
    if not launcher.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"npm is needed to install {package} for these tests")
        prefix.mkdir(parents=True, exist_ok=True)
        install = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", package]
        subprocess.run(install, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return launcher
