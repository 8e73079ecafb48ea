"""The detach key of ``jupyter exec attach``: its spelling, and finding it in typed input.

Pure functions, kept out of cli.py (which stays about commands).
"""

from __future__ import annotations

import re

__all__ = ["describe_key", "parse_detach_key", "prefix_overlap"]


def parse_detach_key(spec: str) -> bytes:
    """``ctrl-]`` -> ``b"\\x1d"``, ``ctrl-p,ctrl-q`` -> two bytes, ``^X`` works too."""
    keys = bytearray()
    for part in spec.split(","):
        part = part.strip().lower()
        match = re.fullmatch(r"(?:ctrl-|\^|c-)(.)", part)
        if match:
            char = match.group(1).upper()
            code = ord(char) ^ 0x40
            if code >= 0x20:
                raise ValueError(f"no control key for {part!r}")
            keys.append(code)
        elif len(part) == 1:
            keys.append(ord(part))
        else:
            raise ValueError(f"bad detach key {part!r}; use e.g. ctrl-] or ctrl-p,ctrl-q")
    if not keys:
        raise ValueError("empty detach key")
    return bytes(keys)


def prefix_overlap(data: bytes, key: bytes) -> int:
    """How many trailing bytes of ``data`` start ``key`` (so must wait for more)."""
    for n in range(min(len(key) - 1, len(data)), 0, -1):
        if key.startswith(data[-n:]):
            return n
    return 0


def describe_key(key: bytes) -> str:
    """``b"\\x1d"`` -> ``ctrl-]``: how the attach banner names the key."""
    return ",".join(f"ctrl-{chr(b ^ 0x40).lower()}" if b < 0x20 else chr(b) for b in key)
