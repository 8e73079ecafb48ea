"""jupyter-exec runs on Linux only, and says so at start-up instead of failing deep.

The core uses what only Linux has: pidfds to follow a process without pid
reuse races, `splice` for output, `SO_PEERCRED` on the daemon's socket,
Landlock and namespaces for sandboxes, `/proc` for process trees. Every way
in (the server extension, the daemon, the CLI, the magics, the standalone
server) calls `require_linux` first, before it imports any of that.
"""

from __future__ import annotations

import sys

from ..wire.errors import UnsupportedPlatformError

__all__ = ["linux_refusal", "require_linux"]


def linux_refusal(what: str) -> str | None:
    """None on Linux; elsewhere the sentence that says `what` (the part that was
    starting) cannot run here, for a command line to print."""
    if sys.platform.startswith("linux"):
        return None
    return (
        f"{what} runs on Linux only (it needs pidfd, splice, SO_PEERCRED, Landlock "
        f"and /proc), not on {sys.platform}"
    )


def require_linux(what: str) -> None:
    """Raise `UnsupportedPlatformError` (`linux_refusal`'s sentence) on any OS but Linux."""
    refusal = linux_refusal(what)
    if refusal is not None:
        raise UnsupportedPlatformError(refusal)
