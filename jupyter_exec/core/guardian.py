"""A watchdog that outlives a crashed server and kills what it left behind.

The registry starts one guardian with a pipe on its stdin. When the pipe reaches
end of file (the server or the exec daemon exited, even by SIGKILL), the
guardian kills every process carrying the registry's marker and deletes the
log directory, except the daemon's: its logs and records stay for the next
daemon, which lists those processes as lost (daemon/persist.py). In its
own session, so a terminal's Ctrl-C aimed at the server does not reach it.
Standard library only, so it starts fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .proctree import kill_verified, marked_processes

__all__ = ["main", "start_guardian", "stop_guardian"]


def start_guardian(registry_id: str, log_dir: Path, keep_logs: bool) -> subprocess.Popen[bytes]:
    """`keep_logs`: the exec daemon's logs outlive it, for the next daemon to list."""
    keep = ["--keep-logs"] if keep_logs else []
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_exec.core.guardian", registry_id, str(log_dir), *keep],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def stop_guardian(guardian: object) -> None:
    """A clean shutdown: the registry already cleaned up, so just let it go."""
    if isinstance(guardian, subprocess.Popen):
        if guardian.stdin is not None:
            guardian.stdin.close()
        try:
            guardian.wait(timeout=5)
        except subprocess.TimeoutExpired:
            guardian.kill()
            guardian.wait()


def main(argv: list[str]) -> int:
    registry_id, log_dir = argv[:2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.read(0, 4096):
        pass
    for _ in range(50):
        found = marked_processes(f"{registry_id}/", prefix=True)
        if not found:
            break
        kill_verified(found, signal.SIGKILL)
        time.sleep(0.02)
    if "--keep-logs" not in argv:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
