"""jupyter-exec: processes on the Jupyter server, over a small JSON-RPC protocol.

Importing this package is cheap: tornado, jupyter_server and IPython load only
when the server extension or the magics are actually used.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .core.linux import require_linux

    require_linux("the jupyter-exec server extension")
    from .jupyter.app import ExecExtensionApp

    return [{"module": "jupyter_exec.jupyter.app", "app": ExecExtensionApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-exec"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_exec``: register the magics."""
    from .core.linux import require_linux

    require_linux("%load_ext jupyter_exec")
    from .frontends.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .frontends.magics import unload_ipython_extension as unload

    unload(ipython)
