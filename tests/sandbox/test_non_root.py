"""The same sandbox for an ordinary user (tests run as root here: this one drops to nobody).

A forked child becomes uid nobody, then starts `/bin/sh` in a sandbox built by
the real `Sandbox` (what the registry uses), and reports what the shell could
do. Root and nobody differ where it matters: a user namespace maps nobody to
itself, and Landlock must hold without any capability.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import pytest

from jupyter_exec.core.sandbox import Confinement, Sandbox

from .harness import needs_sandbox, outside_tmp

NOBODY = 65534
SCRIPT = """
echo in > "$1/inside.txt" && echo wrote-inside
echo out > "$2/outside.txt" || echo outside-refused
ls "$3" | wc -l
cat /proc/$4/environ > /dev/null 2>&1 || echo environ-refused
kill -0 $4 2>/dev/null || echo signal-refused
id -u
"""


def as_nobody(conf: Confinement | None, argv: list[str], cwd: str) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            # Like a process started as nobody (a uid change makes it undumpable, and then
            # its /proc/self files are root's: no uid_map could be written).
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
            box = None
            box = Sandbox(conf, cwd) if conf is not None else None
            done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=30,
                                  preexec_fn=box.preexec if box else None)  # fmt: skip
            os.write(write_end, done.stdout + done.stderr)
            code = 0
        except BaseException as exc:
            why = box.failure() if box is not None else None
            os.write(write_end, f"child failed: {exc!r} {why}".encode())
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return text


def test_an_ordinary_user_is_confined_the_same_way() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")
    needs_sandbox()
    with outside_tmp() as top:  # pytest's tmp_path is root's alone
        os.chmod(top, 0o755)
        check_as_nobody(top)


def check_as_nobody(top: Path) -> None:
    inside, outside, hidden = top / "inside", top / "outside", top / "hidden"
    for path in (inside, outside, hidden):
        path.mkdir()
        os.chown(path, NOBODY, NOBODY)
    (hidden / "token.json").write_text("secret")
    victim = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", "sleep", "60"])  # fmt: skip
    try:
        argv = ["/bin/sh", "-c", SCRIPT, "sh", str(inside), str(outside), str(hidden),
                str(victim.pid)]  # fmt: skip
        free = as_nobody(None, argv, str(inside))
        assert free.split() == ["wrote-inside", "1", str(NOBODY)], free
        (inside / "inside.txt").unlink()
        (outside / "outside.txt").unlink()
        conf = Confinement("workspace-write", False, (str(inside),), hidden=(str(hidden),))
        boxed = as_nobody(conf, argv, str(inside))
        assert (inside / "inside.txt").exists() and not (outside / "outside.txt").exists(), boxed
        lines = [line for line in boxed.splitlines() if "Permission denied" not in line]
        assert lines == ["wrote-inside", "outside-refused", "0", "environ-refused",
                         "signal-refused", str(NOBODY)], boxed  # fmt: skip
    finally:
        victim.kill()
        victim.wait()
