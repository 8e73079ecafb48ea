"""Every module of jupyter_exec says what it exports (``__all__``), and says it truly.

As websockets' tests/test_exports.py: each module has an ``__all__`` of names it
really has, and what a package exports resolves from the package itself. A
package ``__init__`` that re-exports nothing has an empty ``__all__``: its
modules are imported by name. ``__main__`` modules are read, never imported.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import jupyter_exec

PACKAGE = Path(jupyter_exec.__file__).parent
#: rpc/dispatch.py is being reworked on another branch (its Connection is renamed
#: there); its ``__all__`` lands with that change. Empty this set then.
PENDING = {"jupyter_exec.rpc.dispatch"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def declared_all(source: str) -> list[str] | None:
    """The ``__all__`` a module assigns at its top level (its value if literal, else
    ``["..."]``: the import tells the rest), or None."""
    for node in ast.parse(source).body:
        target = (
            node.targets[0]
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            else node.target
            if isinstance(node, ast.AnnAssign)
            else None
        )
        if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return ["..."]
    return None


def test_the_reader_finds_a_missing_or_a_real_all() -> None:
    assert declared_all('"""doc"""\nX = 1\n') is None
    assert declared_all('__all__ = ["X"]\nX = 1\n') == ["X"]
    assert declared_all("__all__: list[str] = []\n") == []
    assert declared_all("from . import m\n__all__ = m.__all__\n") == ["..."]


@pytest.mark.parametrize("name", sorted(set(modules()) - PENDING))
def test_every_module_has_an_all_of_names_it_has(name: str) -> None:
    exported = declared_all(modules()[name].read_text(encoding="utf-8"))
    assert exported is not None, f"{name} has no __all__"
    if name.rsplit(".", 1)[-1] == "__main__":
        assert exported == []
        return
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}: a name twice in __all__"
    assert [n for n in exported if not hasattr(module, n)] == []


@pytest.mark.parametrize("name", sorted(n for n, p in modules().items() if p.name == "__init__.py"))
def test_what_a_package_exports_resolves_from_it(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    package = importlib.import_module(name)
    for exported in package.__all__:
        assert namespace[exported] is getattr(package, exported)
