"""The one switch that confines processes and files to the root (SPEC 4).

By default file access agrees with process access: ``fs/*`` serves any path
the server's user can reach, because a process started in any directory could
write there anyway (Codex's own exec-server and Jupyter's terminals do the
same). With ``confine_to_root`` on, the ``cwd`` of ``process/start`` and every
``fs/*`` path must lie inside the root once symlinks are resolved; each
refusal names the setting so that a user knows which switch to turn.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The name of the setting: trait ``ExecExtensionApp.confine_to_root``,
#: ``jupyter-exec serve --confine-to-root``, field ``RegistryConfig.confine_to_root``.
SETTING = "confine_to_root"


def outside_root(real: Path, root: Path, shown: str) -> str | None:
    """None when the resolved path ``real`` lies inside ``root``; else the refusal.

    ``shown`` is how the message names the path (as the client sent it).
    """
    real_root = Path(os.path.realpath(root))
    if real == real_root or real.is_relative_to(real_root):
        return None
    return f"{shown} is outside the root {real_root} ({SETTING} is on)"
