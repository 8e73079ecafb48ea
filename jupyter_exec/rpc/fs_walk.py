"""``fs/walk``: a bounded, breadth-first listing of a directory tree, as Codex's server does it.

Codex (0.171) uses it to find files below a root in one request instead of a
``fs/readDirectory`` per directory (capability discovery walks with it too).
Recorded from Codex's own ``exec-server`` (docs/codex.md, "fs/walk"):

- params ``{path, options: {maxDepth, maxEntries, maxDirectories,
  followDirectorySymlinks, pruneHiddenDirectories?}, sandbox?}``; result
  ``{entries: [{path, kind: "file" | "directory"}], errors: [{path, message}],
  truncated}``, paths as ``file://`` URIs joined below the given path (never
  resolved).
- breadth-first; each directory's entries sorted by name; ``maxDepth`` 0 lists
  the root's children only. Symlinks to files, dangling links and anything
  neither file nor directory are left out (but counted against
  ``maxEntries``); a symlink to a directory is listed, and entered, only with
  ``followDirectorySymlinks``, and a directory already entered (by its real
  path, when following) is not entered again. ``pruneHiddenDirectories``
  lists dot-directories but does not enter them.
- ``truncated``: ``maxEntries`` entries were looked at and more were left, a
  directory could not be entered because ``maxDirectories`` (the root
  included) were, or the answer reached its size budget.
- a limit of 0 is -32600, as is one above 64 / 10,000 / 50,000; a missing
  root is -32004; a root that is a file, or a symlink when not following,
  gives an empty answer. A directory that cannot be read below the root is an
  entry in ``errors``, and the walk goes on.

Access: the same `Access` object as the other ``fs/*`` methods (sandbox and
root confinement): what the call may not see is left out like a dangling link.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ..wire.errors import ExecError, InvalidRequestError
from ..wire.protocol import Params, parse_params
from .context import READ, Method
from .fs_methods import Access, FsParams, file_uri, os_error, parse_path

if TYPE_CHECKING:
    from .context import CallContext

__all__ = [
    "MAX_WALK_DEPTH",
    "MAX_WALK_DIRECTORIES",
    "MAX_WALK_ENTRIES",
    "MAX_WALK_RESPONSE_BYTES",
    "WALK_ITEM_OVERHEAD_BYTES",
    "WALK_METHODS",
    "Count",
    "Walk",
    "WalkOptions",
    "WalkParams",
    "os_message",
    "walk",
    "walk_tree",
]


MAX_WALK_DEPTH = 64
MAX_WALK_DIRECTORIES = 10_000
MAX_WALK_ENTRIES = 50_000
#: Estimated size of an answer, and what each entry or error is charged on top of its text.
MAX_WALK_RESPONSE_BYTES = 4 << 20
WALK_ITEM_OVERHEAD_BYTES = 64

Count = Annotated[int, Field(strict=True, ge=0, le=2**64 - 1)]


class WalkOptions(Params):
    max_depth: Count
    max_entries: Count
    max_directories: Count
    follow_directory_symlinks: bool
    prune_hidden_directories: bool = False

    def check(self) -> None:
        if self.max_entries == 0 or self.max_directories == 0:
            raise InvalidRequestError("filesystem walk limits must be greater than zero")
        if (
            self.max_depth > MAX_WALK_DEPTH
            or self.max_directories > MAX_WALK_DIRECTORIES
            or self.max_entries > MAX_WALK_ENTRIES
        ):
            raise InvalidRequestError(
                f"filesystem walk limits exceed maximums: depth={MAX_WALK_DEPTH}, "
                f"directories={MAX_WALK_DIRECTORIES}, entries={MAX_WALK_ENTRIES}"
            )


class WalkParams(FsParams):
    path: str
    options: WalkOptions


def os_message(exc: OSError) -> str:
    """An OS error worded as Codex's server words it (Rust's ``io::Error``)."""
    if exc.errno is None:
        return str(exc)
    return f"{exc.strerror or os.strerror(exc.errno)} (os error {exc.errno})"


@dataclass
class Walk:
    """One walk's state; `run` does the blocking work (call it in a thread)."""

    access: Access
    options: WalkOptions
    entries: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    truncated: bool = False
    _budget: int = 0

    def result(self) -> dict[str, Any]:
        return {"entries": self.entries, "errors": self.errors, "truncated": self.truncated}

    def run(self, root: Path) -> Walk:
        """Walk below `root`; -32004 if it is missing or hidden from this call."""
        opts = self.options
        real_root = self.access.real(root)
        try:
            is_dir = stat.S_ISDIR(os.stat(real_root).st_mode)
            is_link = stat.S_ISLNK(os.lstat(root).st_mode)
        except OSError as exc:
            raise os_error(exc, root) from None
        if not is_dir or (is_link and not opts.follow_directory_symlinks):
            return self
        visited = {self._identity(root)}
        queue: deque[tuple[Path, int]] = deque([(root, 0)])
        directories, looked_at = 1, 0
        while queue:
            directory, depth = queue.popleft()
            try:
                names = self._list(directory)
            except OSError as exc:
                if not self._error(directory, os_message(exc)):
                    return self
                continue
            for name in names:
                if looked_at == opts.max_entries:
                    self.truncated = True
                    return self
                looked_at += 1
                path = directory / name
                kind = self._kind(path)
                if kind is None:
                    continue
                if not self._charge(len(file_uri(path))):
                    return self
                self.entries.append({"path": file_uri(path), "kind": kind})
                if kind != "directory" or depth >= opts.max_depth:
                    continue
                if opts.prune_hidden_directories and name.startswith("."):
                    continue
                identity = self._identity(path)
                if identity in visited:
                    continue
                visited.add(identity)
                if directories == opts.max_directories:
                    self.truncated = True
                else:
                    directories += 1
                    queue.append((path, depth + 1))
        return self

    def _identity(self, path: Path) -> str:
        """What makes two directories the same: the real path when following links."""
        return os.path.realpath(path) if self.options.follow_directory_symlinks else str(path)

    def _list(self, directory: Path) -> list[str]:
        try:
            real = self.access.real(directory)
        except ExecError:
            return []
        if self.access.shows_empty(real):
            return []
        return sorted(os.listdir(real))

    def _kind(self, path: Path) -> str | None:
        """ "file", "directory", or None for what a walk leaves out."""
        try:
            self.access.real(path, follow=False)
            link = stat.S_ISLNK(os.lstat(path).st_mode)
            if link:
                if not self.options.follow_directory_symlinks:
                    return None
                self.access.real(path)
            mode = os.stat(path).st_mode
        except (OSError, ExecError):
            return None  # vanished, dangling, or not this call's to see
        if stat.S_ISDIR(mode):
            return "directory"
        if stat.S_ISREG(mode) and not link:
            return "file"
        return None

    def _error(self, path: Path, message: str) -> bool:
        if not self._charge(len(file_uri(path)) + len(message)):
            return False
        self.errors.append({"path": file_uri(path), "message": message})
        return True

    def _charge(self, size: int) -> bool:
        total = self._budget + size + WALK_ITEM_OVERHEAD_BYTES
        if total > MAX_WALK_RESPONSE_BYTES:
            self.truncated = True
            return False
        self._budget = total
        return True


def walk_tree(access: Access, root: Path, options: WalkOptions) -> Walk:
    """A finished walk (blocking; discovery calls it from its own thread)."""
    return Walk(access, options).run(root)


async def walk(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(WalkParams, params)
    p.options.check()
    path = parse_path(p.path)
    access = Access.of(ctx, p)
    done = await asyncio.to_thread(walk_tree, access, path, p.options)
    return done.result()


WALK_METHODS: dict[str, Method] = {"fs/walk": Method(walk, READ)}
