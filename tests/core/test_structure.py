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
    "jupyter_exec.codec",
    "jupyter_exec.context",
    "jupyter_exec.sessions",
    "jupyter_exec.outbox",
    "jupyter_exec.process_methods",
    "jupyter_exec.dispatch",
    "jupyter_exec.serve",
    "jupyter_exec.client",
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


def test_method_families_do_not_import_dispatch():
    """STYLE.md next shape: families plug into the table; dispatch imports them, not back."""
    families = ["process_methods", "fs_methods", "environment", "context", "sessions", "outbox"]
    code = (
        "import sys\n"
        + "".join(f"import jupyter_exec.{m}\n" for m in families)
        + "print('jupyter_exec.dispatch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
