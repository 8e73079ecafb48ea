"""Layering (STYLE.md): the core never loads tornado, jupyter_server or IPython."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "jupyter_exec",
    "jupyter_exec.errors",
    "jupyter_exec.models",
    "jupyter_exec.protocol",
    "jupyter_exec.registry",
    "jupyter_exec.dispatch",
    "jupyter_exec.serve",
    "jupyter_exec.client",
    "jupyter_exec.config",
    "jupyter_exec.service",
    "jupyter_exec.daemon.server",
    "jupyter_exec.daemon.start",
    "jupyter_exec.relay",
    "jupyter_exec.unix_transport",
]


def test_core_modules_do_not_import_server_or_ipython():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "bad = [m for m in ('tornado', 'jupyter_server', 'IPython', 'traitlets') if m in sys.modules]\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_have_one_code_table():
    from jupyter_exec import errors

    codes = {e.value for e in errors.ErrorCode}
    assert codes == {-32700, -32600, -32601, -32602, -32603, -32004}
    for cls in (
        errors.ParseError,
        errors.InvalidRequestError,
        errors.MethodNotFoundError,
        errors.InvalidParamsError,
        errors.InternalError,
        errors.FsError,
    ):
        assert issubclass(cls, errors.ExecError) and cls.code in errors.ErrorCode


def test_loading_the_magics_does_not_load_the_server():
    code = (
        "import sys\n"
        "import jupyter_exec.magics\n"
        "heavy = ('tornado', 'jupyter_server', 'jupyter_exec.app', 'jupyter_exec.registry')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
