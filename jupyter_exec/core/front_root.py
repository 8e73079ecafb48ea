"""Where a front's request may act: its root, and the one switch that confines to it.

Every front brings its own rules (`wire.rules.FrontRules`, SPEC 3), so the root
a missing or relative `cwd` resolves against, and whether paths must stay
inside it, are the requesting front's, never the daemon's or another front's.

By default file access agrees with process access: ``fs/*`` serves any path
the user can reach, because a process started in any directory could write
there anyway (Codex's own exec-server and Jupyter's terminals do the same).
With ``confine_to_root`` on, the ``cwd`` of ``process/start``, every ``fs/*``
path, and the processes the front sees must lie inside its root once symlinks
are resolved. Each refusal names the setting and the front, so that a user
knows which switch of which server to turn.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..wire.errors import InvalidParamsError
from ..wire.rules import FrontRules

__all__ = ["SETTING", "outside_root", "resolve_cwd", "sees"]


#: The name of the setting: trait ``ExecExtensionApp.confine_to_root``,
#: ``jupyter-exec serve --confine-to-root``, field ``FrontRules.confine_to_root``.
SETTING = "confine_to_root"


def outside_root(real: Path, rules: FrontRules, shown: str) -> str | None:
    """None when the resolved path ``real`` lies inside the front's root; else the refusal.

    ``shown`` is how the message names the path (as the client sent it).
    """
    real_root = Path(os.path.realpath(rules.root_dir))
    if real == real_root or real.is_relative_to(real_root):
        return None
    return f"{shown} is outside the root {real_root} of {rules.name} ({SETTING} is on)"


def sees(rules: FrontRules, cwd: str) -> bool:
    """Whether a front sees a process that runs in ``cwd``: a confined one, only its root's."""
    return not rules.confine_to_root or outside_root(Path(os.path.realpath(cwd)), rules, "") is None


def resolve_cwd(cwd: str | None, rules: FrontRules) -> str:
    """An existing directory: absolute, `file://` URI, or relative to the root (SPEC 4).

    A missing or relative `cwd` needs the front's root: when that root is gone
    (a temp dir deleted), the error says so and names the front, rather than
    blaming a `cwd` the client never sent.
    """
    root = rules.root_dir
    if not cwd:
        path, relative = root, True
    elif cwd.startswith("file://"):
        path, relative = Path(unquote(urlparse(cwd).path)), False
    else:
        path, relative = root / cwd, not os.path.isabs(cwd)  # an absolute cwd replaces the root
    if relative and not root.is_dir():
        given = "no cwd was given" if not cwd else f"cwd {cwd!r} is relative"
        raise InvalidParamsError(
            f"{given}, and the root {root} of {rules.name} does not exist (any more): "
            "pass an absolute cwd, or give that server an existing root_dir"
        )
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise InvalidParamsError(f"cwd {cwd!r} {what}")
    real = Path(os.path.realpath(path))
    if rules.confine_to_root and (refusal := outside_root(real, rules, f"cwd {cwd!r}")):
        raise InvalidParamsError(refusal)
    return str(path)
