"""Layering (STYLE.md): what imports what, read from the source and from real imports.

- no import cycle anywhere in jupyter_exec, counting imports inside functions
  and under ``TYPE_CHECKING`` (a cycle there is still two modules that cannot
  be understood, or split, one without the other);
- no module over ~700 lines;
- the core never loads tornado, jupyter_server or IPython; the client and the
  CLI path (``jupyter exec ps`` against a real server) load no server module
  and no pydantic either; the magics are the only IPython importer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jupyter_exec

from ..service import standalone

PACKAGE = Path(jupyter_exec.__file__).parent
MAX_LINES = 700

CORE = [
    "jupyter_exec",
    "jupyter_exec.wire.errors",
    "jupyter_exec.wire.models",
    "jupyter_exec.wire.protocol",
    "jupyter_exec.core.registry",
    "jupyter_exec.wire.codec",
    "jupyter_exec.rpc.context",
    "jupyter_exec.rpc.sessions",
    "jupyter_exec.rpc.outbox",
    "jupyter_exec.rpc.process_methods",
    "jupyter_exec.rpc.dispatch",
    "jupyter_exec.transports.serve",
    "jupyter_exec.client",
    "jupyter_exec.config",
    "jupyter_exec.rpc.service",
    "jupyter_exec.daemon.server",
    "jupyter_exec.daemon.start",
    "jupyter_exec.jupyter.relay",
    "jupyter_exec.client.unix_transport",
]
#: What a client or the CLI must never pay for.
SERVER_SIDE = (
    "tornado",
    "jupyter_server",
    "IPython",
    "traitlets",
    "pydantic",
    "jupyter_exec.wire.protocol",
    "jupyter_exec.rpc.dispatch",
    "jupyter_exec.core.registry",
    "jupyter_exec.embedded",
    "jupyter_exec.jupyter.app",
)


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The jupyter_exec modules ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base += f".{node.module}" if node.module else ""
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_every_kind_of_import() -> None:
    """The cycle test can fail: a lazy, a relative and a TYPE_CHECKING import all count."""
    graph = import_graph()
    cli, client = "jupyter_exec.frontends.cli", "jupyter_exec.client.exec_client"
    assert client in graph[cli]  # lazy, inside a function
    assert "jupyter_exec.jupyter.app" in graph["jupyter_exec"]  # lazy, in an entry point
    assert "jupyter_exec.render.terminal" in graph["jupyter_exec.render.presentation"]
    assert client in graph["jupyter_exec.frontends.shared"]  # TYPE_CHECKING
    looped = {**graph, client: graph[client] | {cli}}
    assert any({cli, client} <= set(c) for c in cycles(looped))


def test_no_import_cycle_anywhere() -> None:
    assert cycles(import_graph()) == []


def layer_of(module: str) -> str:
    """A module's layer: its subpackage, or itself for a module at the top."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = {}
    for module, targets in graph.items():
        layers.setdefault(layer_of(module), set()).update(
            layer_of(t) for t in targets if layer_of(t) != layer_of(module)
        )
    return layers


def test_no_two_subpackages_import_each_other() -> None:
    """STYLE.md: arrows between the folders run one way, directly or in a circle."""
    layers = layer_graph(import_graph())
    assert {"jupyter_exec.wire", "jupyter_exec.core", "jupyter_exec.daemon"} <= set(layers)
    assert cycles(layers) == []
    assert layers["jupyter_exec.wire"] == set()  # the bottom imports nothing of ours


def test_the_layer_check_can_fail() -> None:
    graph = import_graph()
    wire, core = "jupyter_exec.wire.models", "jupyter_exec.core.child"
    looped = {**graph, wire: graph[wire] | {core}}
    assert any(
        {"jupyter_exec.wire", "jupyter_exec.core"} <= set(c) for c in cycles(layer_graph(looped))
    )


def test_at_most_twelve_modules_at_the_top() -> None:
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 12, top


def test_method_families_do_not_import_dispatch() -> None:
    """STYLE.md next shape: families plug into the table; dispatch imports them, not back."""
    families = ["process_methods", "fs_methods", "environment", "context", "sessions", "outbox"]
    code = (
        "import sys\n"
        + "".join(f"import jupyter_exec.rpc.{m}\n" for m in families)
        + "print('jupyter_exec.rpc.dispatch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_is_over_700_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in module_names().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_only_the_magics_import_ipython() -> None:
    importers = set()
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(m == "IPython" or m.startswith("IPython.") for m in modules):
                importers.add(name)
    assert importers == {"jupyter_exec.frontends.magics"}


def loaded_after(code: str) -> list[str]:
    """Which of SERVER_SIDE a fresh interpreter has loaded after running ``code``."""
    probe = (
        f"{code}\nimport sys\nprint('LOADED', *(m for m in {SERVER_SIDE!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.rsplit("LOADED", 1)[1].split()


def test_core_modules_do_not_import_server_or_ipython() -> None:
    loaded = loaded_after("".join(f"import {m}\n" for m in CORE))
    assert [m for m in loaded if m in ("tornado", "jupyter_server", "IPython", "traitlets")] == []


def test_the_client_path_loads_no_server_code_and_no_pydantic() -> None:
    modules = (
        "client",
        "frontends.cli",
        "wire.schema",
        "wire.errors",
        "wire.models",
        "frontends.shared",
        "frontends.handle",
        "frontends.view",
    )
    assert loaded_after("".join(f"import jupyter_exec.{m}\n" for m in modules)) == []


def test_cli_ps_against_a_real_server_loads_no_server_code_and_no_pydantic() -> None:
    with standalone() as server:
        code = (
            "from jupyter_exec.frontends.cli import main\n"
            f"assert main(['--url', {server.bare_url!r}, '--token', {server.token!r}, 'ps']) == 0"
        )
        assert loaded_after(code) == []


def test_errors_have_one_code_table() -> None:
    from jupyter_exec.wire import errors

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


def test_loading_the_magics_does_not_load_the_server() -> None:
    code = (
        "import sys\n"
        "import jupyter_exec.frontends.magics\n"
        "heavy = ('tornado', 'jupyter_server', 'jupyter_exec.jupyter.app', 'jupyter_exec.core.registry')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_error_of_the_package_has_one_root() -> None:
    """websockets' exceptions.py: catching the root catches everything, connection loss too.
    Every exception class a module of ours defines (private ones aside) is a
    `JupyterExecError`, and the tree in wire/errors.py's docstring names it."""
    import importlib

    from jupyter_exec.wire import errors

    found = {}
    for name in module_names():
        if name.endswith("__main__"):
            continue  # importing it would run it
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional extra (IPython, mcp) under test-core
            assert not (exc.name or "").startswith("jupyter_exec"), exc
            continue
        for attr, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
            ):
                found[attr] = value
    assert {"ConnectionLostError", "DaemonHandshakeError", "DaemonStartError"} <= set(found)
    outside = sorted(n for n, cls in found.items() if not issubclass(cls, errors.JupyterExecError))
    assert outside == [], f"errors outside the root JupyterExecError: {outside}"
    tree = errors.__doc__ or ""
    unnamed = sorted(
        n for n in found if n not in tree and not issubclass(found[n], errors.ExecError)
    )
    assert unnamed == [], f"missing from the tree in wire/errors.py: {unnamed}"
    # The second bases keep the callers' `except` sites working.
    for name, base in (
        ("ConnectionLostError", ConnectionError),
        ("DaemonHandshakeError", ConnectionError),
        ("DaemonStartError", RuntimeError),
        ("ProcessExitedError", RuntimeError),
        ("DaemonSettingsError", ValueError),
    ):
        assert issubclass(found[name], base), name
    assert issubclass(found["DaemonHandshakeError"], found["ConnectionLostError"])


def test_client_imports_no_rpc() -> None:
    """client/ is a leaf over wire/ (and the daemon's names): the in-process client that
    needs the server's modules is jupyter_exec.embedded, above both."""
    layers = layer_graph(import_graph())
    assert "jupyter_exec.rpc" not in layers["jupyter_exec.client"]
    assert "jupyter_exec.core" not in layers["jupyter_exec.client"]


def test_the_wire_does_no_io() -> None:
    """wire/ is plain data: reading and writing streams is core/'s (core/line_pump.py)."""
    io = {"asyncio", "socket", "selectors", "subprocess", "threading"}
    found = {}
    for name, path in module_names().items():
        if name.startswith("jupyter_exec.wire"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    used = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    used = {(node.module or "").split(".")[0]}
                else:
                    continue
                if used & io:
                    found[name] = sorted(used & io)
    assert found == {}


def test_every_package_docstring_names_its_modules() -> None:
    """Someone opening a folder reads what each of its modules is for in one place."""
    missing = {}
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        modules = [p.stem for p in sorted(init.parent.glob("*.py")) if not p.stem.startswith("_")]
        unnamed = [m for m in modules if f"`{m}`" not in doc]
        if unnamed:
            missing[init.parent.name] = unnamed
    assert missing == {}
