"""The ``fs/*`` methods Codex clients call, wherever its processes may run.

Codex (0.171) reads ``AGENTS.md``, walks up looking for ``.git``, and runs its
``apply_patch`` and ``view_image`` tools through these methods; without them it
still runs commands but loses those tools. Shapes follow Codex's own
exec-server (docs/codex.md, appendix):

================== ============================================== ======================
method             params                                         result
================== ============================================== ======================
fs/getMetadata     path                                           isDirectory, isFile,
                                                                  isSymlink, size,
                                                                  createdAtMs,
                                                                  modifiedAtMs
fs/readFile        path                                           dataBase64
fs/writeFile       path, dataBase64                               {}
fs/createDirectory path, recursive (default true)                 {}
fs/readDirectory   path                                           entries: [fileName,
                                                                  isDirectory, isFile]
fs/remove          path, recursive, force (both default true)     {}
fs/copy            sourcePath, destinationPath, recursive         {}
fs/canonicalize    path                                           path
fs/watchMissing    watchId, missing: [path], present: path|null   watching
================== ============================================== ======================

Paths are ``file://`` URIs or absolute paths; results use ``file://`` URIs.

Access (SPEC 4): by default any path the server's user can reach, as for the
``cwd`` of ``process/start``: an agent that runs commands in a directory can
patch files there (a process could write them anyway). With ``confine_to_root``
on (core/front_root.py), a path is served only if it lies inside the root after
symlinks are resolved, so neither ``..`` nor a symlink leads out. The link
itself may point outside (``fs/getMetadata`` reports it; ``fs/remove`` removes
the link), but nothing is read or written through it.

Sandbox (docs/sandbox.md): a call runs under the same policies as a process
started on its connection would (the front's ``default_sandbox``, its
``agent_sandbox`` for agents, and the call's own ``sandbox`` param, which
Codex sends on its writes), resolved by the registry into the `Confinement`
the process sandbox enforces, with the front's root as the workspace. The
daemon itself is not sandboxed, so it asks that object, with symlinks
resolved: a write it refuses is `SandboxDeniedError`, and what a sandboxed
process cannot see (the runtime dir's tokens and sockets, the output logs,
``/proc/PID``) is absent (-32004); a hidden directory lists empty. Only
writes that would change something are refused, as in a sandbox: an
existing directory may be "created" again, a missing path "removed" with
``force``, and a missing parent is -32004 first.

Errors, chosen for how Codex's client reads them (it maps -32004 to
``NotFound`` and -32600 to ``InvalidInput``):

- -32004 ``FsError``: the path does not exist (ENOENT, ENOTDIR), or, confined,
  lies outside the root. Codex probes ``.git`` up to ``/`` and treats these as
  absent, which is what a path outside the root is to a confined server.
- -32600 ``InvalidRequestError``: any other OS failure (permission denied, not
  a file, directory not empty, ...) with the OS message and the path; and,
  confined, a write outside the root (the message names ``confine_to_root``).
- -32603 ``SandboxDeniedError``: a write the sandbox refuses, with the
  code and words of Codex's own server (``Read-only file system (os error
  30)``), then the path and why.
- -32602 ``InvalidParamsError``: malformed params (relative path, bad URI,
  bad base64, bad ``sandbox``), or a ``sandbox`` looser than the front's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import os
import shutil
import stat
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field

from ..core.front_root import outside_root
from ..core.sandbox import Confinement
from ..wire.errors import FsError, InvalidParamsError, InvalidRequestError, SandboxDeniedError
from ..wire.protocol import Params, Sandbox, notification, parse_params
from .context import EXECUTE, READ, Method

if TYPE_CHECKING:
    from .context import CallContext, Outlet

__all__ = [
    "CAPABILITIES",
    "FS_METHODS",
    "MAX_READ_BYTES",
    "MAX_WATCHED_PATHS",
    "WATCH_POLL_SECONDS",
    "Access",
    "CopyParams",
    "CreateDirectoryParams",
    "FsParams",
    "MissingWatch",
    "PathParams",
    "RemoveParams",
    "WatchMissingParams",
    "WriteFileParams",
    "canonicalize",
    "copy",
    "create_directory",
    "file_uri",
    "get_metadata",
    "os_error",
    "parse_path",
    "read_directory",
    "read_file",
    "remove",
    "watch_missing",
    "write_file",
]

T = TypeVar("T")

#: Largest file ``fs/readFile`` returns (base64 grows it by a third on the wire).
MAX_READ_BYTES = 64 * 1024 * 1024
#: How often an ``fs/watchMissing`` watch looks at its paths.
WATCH_POLL_SECONDS = 1.0
#: Most paths one watch looks at (Codex sends a handful).
MAX_WATCHED_PATHS = 256

_NOT_FOUND = frozenset({errno.ENOENT, errno.ENOTDIR})

#: Merged into the advertised capabilities (environment/info and initialize).
CAPABILITIES: dict[str, Any] = {"fsWatchMissing": True}


# -- params -----------------------------------------------------------------


class FsParams(Params):
    #: Codex sends its own object on writes and null on reads; ours as on process/start.
    sandbox: Sandbox = None


class PathParams(FsParams):
    path: str


class WriteFileParams(PathParams):
    data_base64: str

    def data(self) -> bytes:
        try:
            return base64.b64decode(self.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParamsError("dataBase64 is not valid base64") from None


class CreateDirectoryParams(PathParams):
    recursive: bool | None = None


class RemoveParams(PathParams):
    recursive: bool | None = None
    force: bool | None = None


class CopyParams(FsParams):
    source_path: str
    destination_path: str
    recursive: bool = False


class WatchMissingParams(FsParams):
    watch_id: Annotated[int, Field(strict=True, ge=0)]
    missing: Annotated[list[str], Field(max_length=MAX_WATCHED_PATHS)] = []
    present: str | None = None


# -- paths ------------------------------------------------------------------


def parse_path(raw: str, field_name: str = "path") -> Path:
    """A ``file://`` URI or absolute path as a normalized absolute Path (no I/O)."""
    text = raw
    if raw.startswith("file:"):
        parts = urlsplit(raw)
        if parts.netloc not in ("", "localhost"):
            raise InvalidParamsError(f"{field_name} must be a local file URI, got {raw!r}")
        text = unquote(parts.path)
    elif "://" in raw:
        raise InvalidParamsError(f"{field_name} must be a file:// URI or absolute path: {raw!r}")
    if "\x00" in text:
        raise InvalidParamsError(f"{field_name} contains a NUL byte")
    if not os.path.isabs(text):
        raise InvalidParamsError(f"{field_name} must be absolute: {raw!r}")
    return Path(os.path.normpath(text))


def file_uri(path: Path | str) -> str:
    return Path(path).as_uri()


@dataclass(frozen=True)
class Access:
    """Where one call may read and write: its front's root confinement and its sandbox."""

    ctx: CallContext
    sandbox: Confinement | None

    @classmethod
    def of(cls, ctx: CallContext, p: FsParams) -> Access:
        policies = ctx.sandbox_policies(p.sandbox)
        env = os.environ if ctx.rules.env is None else ctx.rules.env
        return cls(ctx, ctx.registry.confinement(policies, str(ctx.root_dir), ctx.rules, env))

    def real(self, path: Path, *, follow: bool = True, writing: bool = False) -> Path:
        """The real path to operate on, or an error if this call may not reach it.

        With ``follow=False`` the last component is kept as is (the link itself,
        for ``lstat`` and ``remove``); only its parent is resolved. Confined,
        reading outside the root is -32004 (absent, to a client of a confined
        server); writing is -32600, so that Codex reports the message instead of
        trying to create parent directories. Hidden from the sandbox: -32004.
        """
        if follow:
            real = Path(os.path.realpath(path))
        else:
            real = Path(os.path.realpath(path.parent)) / path.name if path.name else path
        rules = self.ctx.rules
        if rules.confine_to_root and (refusal := outside_root(real, rules, f"path {path}")):
            raise InvalidRequestError(refusal) if writing else FsError(refusal)
        if self.sandbox is not None and self.sandbox.hides(str(real)):
            raise os_error(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)), path)
        return real

    def check_write(self, real: Path, shown: Path | str, *, tree: bool = False) -> None:
        """Refuse a write (with `tree`, a removal or replacement of all below) at `real`."""
        rules = self.ctx.rules
        if rules.confine_to_root and (refusal := outside_root(real, rules, f"path {shown}")):
            raise InvalidRequestError(refusal)
        if self.sandbox is not None:
            reason = self.sandbox.write_refusal(str(real), tree=tree)
            if reason is not None:
                raise SandboxDeniedError(str(shown), reason)

    def shows_empty(self, real: Path) -> bool:
        """Whether a directory is hidden from the sandbox: it lists empty, copies empty."""
        return self.sandbox is not None and str(real) in self.sandbox.hidden


def os_error(exc: OSError, path: Path) -> FsError | InvalidRequestError:
    message = f"{exc.strerror or exc}: {path}"
    if exc.errno in _NOT_FOUND:
        return FsError(message)
    return InvalidRequestError(message)


async def _run(func: Callable[[], T], path: Path) -> T:
    """Run blocking file I/O in a worker thread, mapping OS errors (see module doc)."""
    try:
        return await asyncio.to_thread(func)
    except OSError as exc:
        raise os_error(exc, path) from None


# -- methods ----------------------------------------------------------------


async def get_metadata(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(PathParams, params)
    path = parse_path(p.path)
    access = Access.of(ctx, p)
    link = access.real(path, follow=False)
    target = access.real(path)

    def metadata() -> dict[str, Any]:
        link_st = os.lstat(link)
        st = os.stat(target)
        return {
            "isDirectory": stat.S_ISDIR(st.st_mode),
            "isFile": stat.S_ISREG(st.st_mode),
            "isSymlink": stat.S_ISLNK(link_st.st_mode),
            "size": st.st_size,
            "createdAtMs": _birth_ms(st),
            "modifiedAtMs": int(st.st_mtime * 1000),
        }

    return await _run(metadata, path)


def _birth_ms(st: os.stat_result) -> int:
    """Creation time where the OS reports one (macOS, BSD); 0 elsewhere, as Codex's server."""
    birth = getattr(st, "st_birthtime", None)
    return int(birth * 1000) if birth else 0


async def read_file(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(PathParams, params)
    path = parse_path(p.path)
    real = Access.of(ctx, p).real(path)

    def read() -> bytes:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on files).
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidRequestError(f"path {path} is not a file")
            if st.st_size > MAX_READ_BYTES:
                raise InvalidRequestError(
                    f"file {path} is {st.st_size} bytes; fs/readFile serves at most "
                    f"{MAX_READ_BYTES}"
                )
            return f.read(MAX_READ_BYTES + 1)

    data = await _run(read, path)
    return {"dataBase64": base64.b64encode(data).decode("ascii")}


async def write_file(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Create or replace a file. Like Codex's server, a missing parent is -32004
    (Codex then calls ``fs/createDirectory`` and retries)."""
    p = parse_params(WriteFileParams, params)
    path = parse_path(p.path)
    data = p.data()
    access = Access.of(ctx, p)
    real = access.real(path, writing=True)

    def write() -> None:
        if real.parent.is_dir():  # else the OS's ENOENT comes first, as in a sandbox
            access.check_write(real, path)
        real.write_bytes(data)

    await _run(write, path)
    return {}


async def create_directory(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(CreateDirectoryParams, params)
    path = parse_path(p.path)
    access = Access.of(ctx, p)
    real = access.real(path, writing=True)
    recursive = p.recursive is not False

    def mkdir() -> None:
        if not real.is_dir() and (recursive or real.parent.is_dir()):
            access.check_write(real, path)
        if recursive:
            os.makedirs(real, exist_ok=True)
        else:
            os.mkdir(real)

    await _run(mkdir, path)
    return {}


async def read_directory(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(PathParams, params)
    path = parse_path(p.path)
    access = Access.of(ctx, p)
    real = access.real(path)

    def entries() -> list[dict[str, Any]]:
        with os.scandir(real) as it:
            if access.shows_empty(real):
                return []
            return [
                {
                    "fileName": entry.name,
                    "isDirectory": entry.is_dir(),
                    "isFile": entry.is_file(),
                }
                for entry in it
            ]

    return {"entries": await _run(entries, path)}


async def remove(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Remove a file, link or directory. ``force`` (default true) makes a missing
    path a success; ``recursive`` (default true) allows non-empty directories."""
    p = parse_params(RemoveParams, params)
    path = parse_path(p.path)
    access = Access.of(ctx, p)
    real = access.real(path, follow=False, writing=True)
    if real == ctx.root_dir:
        raise InvalidRequestError(f"refusing to remove the root {real} of {ctx.rules.name}")
    recursive = p.recursive is not False
    force = p.force is not False

    def rm() -> None:
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            if force:
                return
            raise
        access.check_write(real, path, tree=True)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(real)
        elif recursive:
            shutil.rmtree(real)
        else:
            os.rmdir(real)

    await _run(rm, path)
    return {}


async def copy(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Copy a file, or a directory tree with ``recursive: true``. Symlinks inside
    a copied tree are copied as links, never followed. Each file and directory
    is checked where it lands (symlinks resolved), so a link already in the
    destination leads nowhere the call may not write."""
    p = parse_params(CopyParams, params)
    source = parse_path(p.source_path, "sourcePath")
    destination = parse_path(p.destination_path, "destinationPath")
    access = Access.of(ctx, p)
    real_source = access.real(source)
    real_destination = access.real(destination, writing=True)

    def landing(target: str) -> None:
        access.check_write(Path(os.path.realpath(target)), target)

    def copy_file(src: str, dst: str) -> None:
        landing(dst)
        shutil.copy2(src, dst)

    def ignore(directory: str, names: list[str]) -> list[str]:
        landing(os.path.join(real_destination, os.path.relpath(directory, real_source)))
        return names if access.shows_empty(Path(os.path.realpath(directory))) else []

    def cp() -> None:
        if real_destination.parent.is_dir() or real_source.is_dir():
            access.check_write(real_destination, destination)
        if os.path.isdir(real_source):
            if not p.recursive:
                raise InvalidRequestError(
                    "fs/copy requires recursive: true when sourcePath is a directory"
                )
            if real_destination.is_relative_to(real_source):
                raise InvalidRequestError(f"cannot copy {source} into itself ({destination})")
            shutil.copytree(real_source, real_destination, symlinks=True, ignore=ignore,
                            copy_function=copy_file, dirs_exist_ok=True)  # fmt: skip
        else:
            shutil.copyfile(real_source, real_destination)

    await _run(cp, source)
    return {}


async def canonicalize(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(PathParams, params)
    path = parse_path(p.path)
    real = Access.of(ctx, p).real(path)
    await _run(lambda: os.stat(real), path)
    return {"path": file_uri(real)}


# -- fs/watchMissing ----------------------------------------------------------


@dataclass
class MissingWatch:
    """One session's ``fs/watchMissing`` watch (Codex keeps at most one per connection).

    Observed behaviour of Codex's server, which this follows: a new watch
    replaces the previous one if its ``watchId`` is higher (else the answer is
    ``watching: false`` and the old one stays); the answer is also ``false``
    when a ``missing`` path exists already or ``present`` does not, so the
    client looks again at once. Otherwise a single ``fs/missingChanged
    {watchId}`` notification is sent when a missing path, or any missing
    directory on the way to it, appears, or when ``present`` disappears; then
    the watch ends. A confined server never serves paths outside the root,
    so it does not watch them. Changes are found by polling every ``WATCH_POLL_SECONDS``.
    """

    notify: Callable[[str, dict[str, Any]], None]
    watch_id: int = -1
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def replace(self, watch_id: int, missing: list[Path], present: Path | None) -> bool:
        if watch_id <= self.watch_id:
            return False
        await self.aclose()
        self.watch_id = watch_id
        snapshot = await asyncio.to_thread(_snapshot, missing, present)
        if any(depth == _EXISTS for depth in snapshot[0]) or snapshot[1] is False:
            return False
        if not missing and present is None:
            return True  # nothing to watch (confined: all outside): nothing will change
        self.task = asyncio.create_task(self._watch(watch_id, missing, present, snapshot))
        return True

    async def _watch(
        self,
        watch_id: int,
        missing: list[Path],
        present: Path | None,
        before: tuple[list[int], bool | None],
    ) -> None:
        while True:
            await asyncio.sleep(WATCH_POLL_SECONDS)
            if await asyncio.to_thread(_snapshot, missing, present) != before:
                break
        self.task = None
        self.notify("fs/missingChanged", {"watchId": watch_id})

    async def aclose(self) -> None:
        """Stop the current watch, if any; the session calls this when it ends."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


_EXISTS = 1 << 30


def _snapshot(missing: list[Path], present: Path | None) -> tuple[list[int], bool | None]:
    """For each missing path, how many of its components exist (``_EXISTS`` if all)."""
    depths = [_existing_depth(path) for path in missing]
    return depths, (None if present is None else os.path.lexists(present))


def _existing_depth(path: Path) -> int:
    if os.path.lexists(path):
        return _EXISTS
    depth = 0
    for ancestor in reversed(path.parents):
        if not os.path.lexists(ancestor):
            break
        depth += 1
    return depth


#: Each connection's watch; the connection's close hook stops it and drops it.
_WATCHES: weakref.WeakKeyDictionary[Outlet, MissingWatch] = weakref.WeakKeyDictionary()


async def watch_missing(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(WatchMissingParams, params)
    access = Access.of(ctx, p)
    missing = _servable(access, [parse_path(raw, "missing") for raw in p.missing])
    present = None
    if p.present is not None:
        found = _servable(access, [parse_path(p.present, "present")])
        present = found[0] if found else None
    return {"watching": await _watch_of(ctx.connection).replace(p.watch_id, missing, present)}


def _watch_of(connection: Outlet) -> MissingWatch:
    watch = _WATCHES.get(connection)
    if watch is None:
        watch = MissingWatch(lambda method, params: connection.notify(notification(method, params)))
        _WATCHES[connection] = watch

        async def stop() -> None:
            _WATCHES.pop(connection, None)
            await watch.aclose()

        connection.on_close(stop)
    return watch


def _servable(access: Access, paths: list[Path]) -> list[Path]:
    """The paths this call may see: all of them, unless confined to the root or hidden."""
    inside = []
    for path in paths:
        with contextlib.suppress(FsError):
            inside.append(access.real(path, follow=False))
    return inside


FS_METHODS: dict[str, Method] = {
    "fs/getMetadata": Method(get_metadata, READ),
    "fs/readFile": Method(read_file, READ),
    "fs/writeFile": Method(write_file, EXECUTE),
    "fs/createDirectory": Method(create_directory, EXECUTE),
    "fs/readDirectory": Method(read_directory, READ),
    "fs/remove": Method(remove, EXECUTE),
    "fs/copy": Method(copy, EXECUTE),
    "fs/canonicalize": Method(canonicalize, READ),
    "fs/watchMissing": Method(watch_missing, READ),
}
