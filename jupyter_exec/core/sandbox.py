"""Sandboxed children (SPEC 4 `process/start` `sandbox`; docs/sandbox.md).

A policy (wire/sandbox.py) is resolved against one start (`confine`: its cwd,
the front's root, the child's ``$TMPDIR``) into a `Confinement`: the real
paths it may write and whether it has the network. `Sandbox.preexec` then
applies it in the forked child before exec, for tty and pipe children alike,
and every descendant inherits it:

1. a user namespace (the same uid and gid inside) with its own mount, PID
   and network namespaces: it sees only its own processes (pidns.py: the
   forked child stays outside as the pid we report and ends as the program
   did), and with the network on, its one way out is a managed proxy that
   refuses local addresses (sandbox_net.py), so no listener of ours is
   reachable whatever token it finds; its own listeners are reached from
   the host through ports the daemon forwards (`bridge`);
2. mounts, private to the child: read-only binds over protected paths inside
   writable roots (Jupyter's and IPython's config and data, so that nothing
   written in the sandbox runs unsandboxed at the next kernel or server start;
   their parents are pinned by self-binds, so no rename can move them away),
   an empty read-only tmpfs over the Jupyter runtime directory and the output
   logs (daemon sockets, server and kernel tokens, other processes' output),
   and in read-only mode a private tmpfs as ``$TMPDIR``; then, from inside the
   PID namespace, a ``/proc`` of its own;
3. Landlock: read everywhere, write only in the writable roots, the private
   tmp and ``/dev/null``-like devices; without the network, TCP bind and
   connect denied (ABI 4+); signals and abstract unix sockets scoped to the
   sandbox (ABI 6+); ptrace of anything outside it denied (any ABI), so
   ``/proc/PID/environ`` of the server cannot be read. Landlock also forbids
   mount and umount from then on, so the mounts above cannot be undone.

The daemon's ``fs/*`` methods ask the same `Confinement` about each path
(`Confinement.write_refusal`, `hides`), so a patch and a command agree.

Credentials for reaching this server (``JUPYTER_TOKEN``, ...) are removed from
a sandboxed child's environment (`scrub_env`). Where Landlock or user
namespaces are missing, a requested sandbox is an error that says which
(`unavailable`), never a silent ``none``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import jupyter_runtime_dir
from ..wire.errors import InvalidParamsError
from ..wire.sandbox import MODES, SandboxMode, SandboxPolicy
from . import landlock, pidns
from .landlock import (
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)
from .sandbox_net import Bridge, proxy_ports

__all__ = [
    "CREDENTIALS",
    "DENIAL_WORDS",
    "DEVICES",
    "Confinement",
    "Mount",
    "Sandbox",
    "capabilities",
    "check_available",
    "confine",
    "hidden_dirs",
    "likely_denied",
    "preexec_chain",
    "prepare_protected",
    "private_tmp_mountpoint",
    "protected_dirs",
    "scrub_env",
    "unavailable",
]


#: Writable in every sandbox: the devices programs write to without meaning a file.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
           "/dev/ptmx", "/dev/pts")  # fmt: skip
#: Removed from a sandboxed child's environment: each would let it call back into us.
CREDENTIALS = ("JUPYTER_TOKEN", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "JUPYTER_EXEC_TOKEN")
#: `sandboxDenied` (SPEC 5 `process/exited`): the words Codex's own server looks for.
DENIAL_WORDS = ("operation not permitted", "permission denied", "read-only file system",
                "seccomp", "sandbox", "landlock", "failed to write file")  # fmt: skip
#: Exit codes that mean the shell's own trouble (misuse, not executable, not found).
_NOT_DENIALS = (2, 126, 127)
#: What the sandbox's ptrace rule keeps from it (and so ``fs/*`` under a sandbox):
#: other processes' ``/proc/PID`` entries (environ, mem, fd, ...); the daemon's own too.
_PROC_ENTRY = re.compile(r"/proc/(\d+|self|thread-self)(/|$)")
#: `mount(2)`'s arguments: source, target, filesystem type, flags, data.
Mount = tuple[bytes | None, bytes, bytes | None, int, bytes | None]


@dataclass(frozen=True)
class Confinement:
    """A policy resolved for one start or one ``fs/*`` call: what it may write and see.

    The process sandbox enforces it in the child (`Sandbox`); the daemon's
    ``fs/*`` methods, which run unsandboxed, ask `write_refusal` and `hides` with
    symlinks resolved. Both read the same fields, so they agree. All paths are
    real (symlinks resolved).
    """

    mode: SandboxMode
    network: bool
    writable: tuple[str, ...]
    #: Read-only even inside a writable root (Jupyter's config, Codex's `.git`, ...).
    read_only: tuple[str, ...] = ()
    #: Seen as empty read-only directories (the runtime dir, the output logs).
    hidden: tuple[str, ...] = ()

    def wire(self) -> dict[str, Any]:
        """As `ProcessInfo.sandbox` lists it."""
        return {"mode": self.mode, "network": self.network, "writableRoots": list(self.writable)}

    def record(self) -> dict[str, Any]:
        """Everything, for a process record on disk (`from_record` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Confinement:
        """What `record` wrote, also by a daemon before `hidden` was recorded."""
        paths = (tuple(data.get(key, ())) for key in ("writable", "read_only", "hidden"))
        return cls(data["mode"], bool(data["network"]), *paths)

    def hides(self, real: str) -> bool:
        """Whether `real` cannot be seen: inside a hidden directory (which itself shows,
        empty), or another process's ``/proc`` entry (ptrace-guarded in the sandbox)."""
        return _PROC_ENTRY.match(real) is not None or any(
            real != path and _inside(real, path) for path in self.hidden
        )

    def write_refusal(self, real: str, *, tree: bool = False) -> str | None:
        """Why `real` may not be created, written or removed (None: it may); with `tree`,
        everything below it too (removing a directory removes what a cover protects)."""
        if real in DEVICES or _inside(real, "/dev/pts"):
            return None
        if self.hides(real):
            return "is hidden from sandboxed processes"
        if not _inside_any(real, self.writable):
            roots = ", ".join(self.writable) or "none"
            return f"is outside the sandbox's writable roots ({self.mode}: {roots})"
        for path in (*self.read_only, *self.hidden):
            if _inside(real, path):
                return f"is in {path}, read-only in every sandbox"
            if tree and _inside(path, real):
                return f"holds {path}, read-only in every sandbox"
        return None


def confine(
    policies: Iterable[SandboxPolicy], cwd: str, root: Path, env: Mapping[str, str]
) -> Confinement | None:
    """The child runs under every policy at once: the strictest of each, writes where all allow."""
    result: Confinement | None = None
    for policy in policies:
        resolved = _resolve(policy, cwd, root, env)
        if resolved is not None:
            result = resolved if result is None else _intersect(result, resolved)
    return result


def _resolve(
    policy: SandboxPolicy, cwd: str, root: Path, env: Mapping[str, str]
) -> Confinement | None:
    if policy.mode == "none":
        return None
    network = policy.network is not False
    if policy.mode == "read-only":
        return Confinement("read-only", network, ())
    wanted = list(policy.writable_roots)
    if policy.workspace is not None:
        wanted.append(cwd if policy.workspace == "cwd" else str(root))
    if policy.tmp:
        wanted.append("/tmp")
    if policy.tmpdir:
        wanted.append(env.get("TMPDIR") or tempfile.gettempdir())
    writable = _real_dirs(wanted)
    read_only = [p for p in _real_dirs(policy.read_only) if _inside_any(p, writable)]
    return Confinement("workspace-write", network, writable, tuple(read_only))


def _intersect(a: Confinement, b: Confinement) -> Confinement:
    mode = max(a.mode, b.mode, key=MODES.index)
    writable: list[str] = []
    if mode != "read-only":
        for x in a.writable:
            for y in b.writable:
                deeper = x if _inside(x, y) else y if _inside(y, x) else None
                if deeper is not None and deeper not in writable:
                    writable.append(deeper)
    read_only = tuple(dict.fromkeys(a.read_only + b.read_only))
    return Confinement(mode, a.network and b.network, tuple(writable), read_only)


def _real_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """Existing directories, symlinks resolved (Landlock rules hold on what they point to)."""
    found = (os.path.realpath(p) for p in paths)
    return tuple(dict.fromkeys(p for p in found if os.path.isdir(p)))


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _inside_any(path: str, parents: Iterable[str]) -> bool:
    return any(_inside(path, p) for p in parents)


# -- what the sandbox keeps from the child ------------------------------------------


def protected_dirs(environ: Mapping[str, str] | None = None) -> list[str]:
    """Jupyter's and IPython's config and data: code there runs at the next (unsandboxed) start."""
    environ = os.environ if environ is None else environ
    home = environ.get("HOME") or os.path.expanduser("~")
    data = environ.get("JUPYTER_DATA_DIR") or os.path.join(
        environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "jupyter"
    )
    config = environ.get("JUPYTER_CONFIG_DIR") or os.path.join(home, ".jupyter")
    ipython = environ.get("IPYTHONDIR") or os.path.join(home, ".ipython")
    return [data, config, ipython]


def hidden_dirs(log_dirs: Iterable[Path | None]) -> list[str]:
    """Directories a sandboxed child sees empty: the runtime dir (sockets, tokens) and logs."""
    found = [str(jupyter_runtime_dir()), *(str(d) for d in log_dirs if d is not None)]
    dirs = _real_dirs(found)
    return [d for d in dirs if not any(d != o and _inside(d, o) for o in dirs)]  # outermost


def scrub_env(env: dict[str, str]) -> None:
    for name in CREDENTIALS:
        env.pop(name, None)


def likely_denied(exit_code: int, output_tail: bytes) -> bool:
    """Codex's `sandboxDenied` rule: a failure whose output reads like a sandbox refusal."""
    if exit_code == 0 or exit_code in _NOT_DENIALS:
        return False
    text = output_tail.decode("utf-8", "replace").lower()
    return any(word in text for word in DENIAL_WORDS) or exit_code == 128 + 31  # SIGSYS


# -- availability -------------------------------------------------------------------


@functools.cache
def unavailable() -> str | None:
    """Why no sandbox can be enforced here, or None (a real sandboxed child is tried once)."""
    if not sys.platform.startswith("linux"):
        return f"sandboxes need Linux (Landlock and user namespaces), not {sys.platform}"
    if landlock.abi() == 0:
        return "Landlock is not available in this kernel (Linux 5.13+ with landlock in lsm=)"
    probe_dir = tempfile.mkdtemp(prefix="jupyter-exec-probe-")
    try:
        conf = Confinement("workspace-write", False, (probe_dir,))
        sandbox = Sandbox(conf, cwd=probe_dir)
        try:
            subprocess.run(["/bin/sh", "-c", "true"], cwd=probe_dir, preexec_fn=sandbox.preexec,
                           check=True, timeout=30, capture_output=True)  # fmt: skip
        finally:
            sandbox.close()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"a sandboxed process could not start here ({exc}); user namespaces may be disabled"
    finally:
        os.rmdir(probe_dir)
    return None


def capabilities() -> dict[str, Any]:
    """The `sandbox` member of the `initialize` capabilities (SPEC 2)."""
    reason = unavailable()
    version = landlock.abi()
    return {
        "sandbox": {
            "modes": list(MODES) if reason is None else ["none"],
            "network": reason is None,
            "landlockAbi": version,
            "scopedSignals": reason is None and version >= 6,
            "unavailable": reason,
        }
    }


def check_available() -> None:
    reason = unavailable()
    if reason is not None:
        raise InvalidParamsError(f"sandbox cannot be enforced on this server: {reason}")


# -- applying it in the child ----------------------------------------------------------


@functools.cache
def private_tmp_mountpoint() -> str:
    """An empty directory each read-only child mounts its own tmpfs on (so it stays empty)."""
    path = os.path.join(tempfile.gettempdir(), f"jupyter-exec-{os.getuid()}-private-tmp")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        info = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or info.st_uid != os.getuid():
            raise InvalidParamsError(f"{path} is not ours: refusing it as a private tmp") from None
    return path


class Sandbox:
    """A `Confinement` made ready in the parent; `preexec` applies it in the child.

    The ruleset and the mount plan are built here, where a bad path is an
    ordinary exception; the child runs a fixed list of syscalls. `close` the
    parent's copy of the ruleset once the child has started.
    """

    def __init__(
        self,
        conf: Confinement,
        cwd: str,
        env: dict[str, str] | None = None,
        in_namespace: Callable[[], None] | None = None,
    ) -> None:
        for path in conf.hidden:
            if _inside(os.path.realpath(cwd), path):
                raise InvalidParamsError(
                    f"cwd {cwd!r} is inside {path}, which sandboxed processes cannot see"
                )
        self.conf = conf
        self.tmp = private_tmp_mountpoint() if conf.mode == "read-only" else None
        self._cwd = cwd.encode()
        self._maps = (f"{os.getuid()} {os.getuid()} 1".encode(),
                      f"{os.getgid()} {os.getgid()} 1".encode())  # fmt: skip
        self._mounts = self._plan()
        self._flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
        #: Run in the child's own network namespace before the mounts (transparent TCP,
        #: whose relay then is its way out and serves the proxy's ports itself).
        self._in_namespace = in_namespace
        #: Else, with the network on, the way out of its network namespace (sandbox_net.py).
        self._bridge = (
            Bridge(proxy_ports(env if env is not None else {}))
            if conf.network and in_namespace is None
            else None
        )
        ruleset = landlock.Ruleset(conf.network)
        try:
            ruleset.allow("/", landlock.READ)
            ruleset.allow_all(DEVICES, landlock.WRITE_DEVICE)
            ruleset.allow_all(conf.writable, landlock.fs_rights())
        except BaseException:
            ruleset.close()
            raise
        self._ruleset = ruleset
        #: Where the child says why it failed (a preexec's exception does not cross exec).
        self._why, self._why_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    @property
    def bridge(self) -> Bridge | None:
        """With the network on: its listeners reached from the host (`TreeUsage.netns`)."""
        return self._bridge

    @property
    def keep_fds(self) -> tuple[int, ...]:
        """Descriptors the child needs until exec (a spawn that closes the others keeps them)."""
        bridge = (self._bridge.child_end.fileno(),) if self._bridge is not None else ()
        return (self._ruleset.fd, self._why_w, *bridge)

    def failure(self) -> str | None:
        """What went wrong setting the sandbox up in the child, after a spawn failed."""
        try:
            return "sandbox: " + os.read(self._why, 4096).decode(errors="replace")
        except BlockingIOError:
            return None

    def _plan(self) -> list[Mount]:
        # A mount point cannot be renamed: pinning every directory between a writable
        # root and a covered path keeps the sandbox from moving the cover away.
        pins = dict.fromkeys(
            pin
            for path in (*self.conf.read_only, *self.conf.hidden)
            for pin in _between(path, self.conf.writable)
        )
        mounts: list[Mount] = [(p.encode(), p.encode(), None, MS_BIND | MS_REC, None) for p in pins]
        for path in self.conf.read_only:
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | landlock.mount_flags(path)
            mounts.append((path.encode(), path.encode(), None, MS_BIND | MS_REC, None))
            mounts.append((None, path.encode(), None, flags, None))
        if self.tmp is not None:
            flags = MS_NOSUID | MS_NODEV
            mounts.append((b"tmpfs", self.tmp.encode(), b"tmpfs", flags, b"mode=0700"))
        for path in self.conf.hidden:
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            mounts.append((b"tmpfs", path.encode(), b"tmpfs", flags, b"mode=0,size=4k"))
        return mounts

    def preexec(self) -> None:
        """In the forked child, before exec: namespaces, mounts, Landlock (see the module doc)."""
        try:
            self._confine()
        except OSError as exc:
            os.write(self._why_w, str(exc).encode())
            raise

    def _confine(self) -> None:
        landlock.unshare(self._flags)
        for name, data in ((b"setgroups", b"deny"), (b"uid_map", self._maps[0]),
                           (b"gid_map", self._maps[1])):  # fmt: skip
            fd = os.open(b"/proc/self/" + name, os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        if self._bridge is not None:
            self._bridge.open_listeners()
        if self._in_namespace is not None:
            self._in_namespace()
        for mount in self._mounts:
            landlock.mount(*mount)
        if self._bridge is None:
            pidns.split(self._inside)  # returns in the program only (pidns.py)
        else:
            control = self._bridge.child_end.fileno()
            pidns.split(self._inside, (control,), (control, self._bridge.answer))
        for fd in self.keep_fds:  # a spawn with pass_fds made them inheritable
            os.close(fd)

    def _inside(self) -> None:
        """In the PID namespace's init: a /proc that shows only the sandbox's processes,
        then Landlock (init and program share its domain: init may signal the program)."""
        landlock.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        if self.tmp is not None:  # a rule holds on the tmpfs, not on the dir it covers
            self._ruleset.allow(self.tmp, landlock.fs_rights())
        os.chdir(self._cwd)  # through the new mounts: no way around them from the cwd
        landlock.restrict_self(self._ruleset.fd)

    def close(self) -> None:
        """After the spawn (or its failure): the parent's copies go; a bridge starts serving."""
        self._ruleset.close()
        for fd in (self._why, self._why_w):
            os.close(fd)
        if self._bridge is not None:
            self._bridge.serve()


def _between(path: str, roots: Iterable[str]) -> list[str]:
    """The directories from the outermost writable root holding `path` to `path`'s parent."""
    holder = min((r for r in roots if _inside(path, r)), key=len, default=None)
    if holder is None:
        return []
    pins = []
    parent = os.path.dirname(path)
    while _inside(parent, holder) and parent != "/":
        pins.append(parent)
        if parent == holder:
            break
        parent = os.path.dirname(parent)
    return pins[::-1]


def prepare_protected(conf: Confinement, *environs: Mapping[str, str] | None) -> Confinement:
    """`conf` with Jupyter's and IPython's dirs read-only where they lie in a writable root.

    Each environment names its own (the daemon's, the front's); None is this process's.

    A missing one is created (empty, 0700) so that it can be protected: else the
    sandbox could create it, with a startup file in it.
    """
    extra = []
    for path in (p for environ in environs or (None,) for p in protected_dirs(environ)):
        real = os.path.realpath(path)
        if _inside_any(real, conf.writable) and real not in extra:
            os.makedirs(real, mode=0o700, exist_ok=True)
            extra.append(real)
    if not extra:
        return conf
    return dataclasses.replace(conf, read_only=tuple(dict.fromkeys(conf.read_only + tuple(extra))))


def preexec_chain(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    """One preexec running each given step in order (None when there is none)."""
    present = [s for s in steps if s is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def run() -> None:
        for step in present:
            step()

    return run
