"""Landlock and the namespace syscalls the sandbox needs, called directly through ctypes.

The PyPI wrappers are thin and lag the kernel (no ABI 6 scoping), and the
calls are few: ``landlock_create_ruleset`` (444), ``landlock_add_rule``
(445), ``landlock_restrict_self`` (446), the same numbers on every
architecture; ``unshare``, ``mount`` and ``prctl`` through libc.

A ruleset is built in the parent (`Ruleset`), where a bad path is an ordinary
exception; the child only calls `restrict_self` with its descriptor. Rights
are masked to what the running kernel's ABI knows, so the same code runs on
ABI 1 (Linux 5.13) and ABI 7; `abi()` says which.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterable

__all__ = [
    "FILE_RIGHTS",
    "READ",
    "WRITE_DEVICE",
    "Ruleset",
    "abi",
    "fs_rights",
    "mount",
    "mount_flags",
    "restrict_self",
    "unshare",
]


# -- access rights (include/uapi/linux/landlock.h) --------------------------------

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE = 1 << 12, 1 << 13, 1 << 14
#: Filesystem rights each ABI handles (IOCTL_DEV, ABI 5, is left unhandled: allowed).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1}
READ = EXECUTE | READ_FILE | READ_DIR
#: What may be done to a file (not a directory); a rule on a file takes only these.
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE
WRITE_DEVICE = WRITE_FILE | READ_FILE | TRUNCATE
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]  # fmt: skip
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    try:
        version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))  # fmt: skip
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def fs_rights() -> int:
    """Every filesystem right this kernel handles (all of them are denied unless granted)."""
    return _FS_BY_ABI.get(abi(), _FS_BY_ABI[3]) if abi() else 0


class Ruleset:
    """A Landlock ruleset being built: read everywhere, write where granted."""

    def __init__(self, network: bool) -> None:
        version = abi()
        attr = _RulesetAttr(fs_rights(), 0, 0)
        if not network and version >= 4:
            attr.handled_access_net = BIND_TCP | CONNECT_TCP  # no rule: TCP is denied
        if version >= 6:
            attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = ctypes.sizeof(attr) if version >= 6 else 16 if version >= 4 else 8
        self.fd = _check(
            _libc().syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0)),
            "landlock_create_ruleset",
        )  # fmt: skip
        os.set_inheritable(self.fd, False)

    def allow(self, path: str, rights: int) -> None:
        """Grant `rights` beneath `path` (only file rights when it is not a directory)."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            rule = _PathBeneath(rights & fs_rights(), fd)
            _check(
                _libc().syscall(_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule),
                                ctypes.c_uint32(0)),
                f"landlock_add_rule {path}",
            )  # fmt: skip
        finally:
            os.close(fd)

    def allow_all(self, paths: Iterable[str], rights: int) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self.allow(path, rights)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def restrict_self(ruleset_fd: int) -> None:
    """In the child: no new privileges, then the ruleset for good (inherited by descendants)."""
    libc = _libc()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(libc.syscall(_RESTRICT_SELF, ruleset_fd, ctypes.c_uint32(0)), "landlock_restrict_self")


def unshare(flags: int) -> None:
    _check(_libc().unshare(flags), "unshare")


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int,
          data: bytes | None = None) -> None:  # fmt: skip
    _check(_libc().mount(source, target, fstype, flags, data), f"mount {target!r}")


def mount_flags(path: str) -> int:
    """The flags of the mount holding `path` that a read-only remount must keep (locked ones)."""
    flag = os.statvfs(path).f_flag
    kept = flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    return kept | (MS_RELATIME if flag & os.ST_RELATIME else 0)
