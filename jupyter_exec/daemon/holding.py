"""The daemon's side of the holder (daemon/holder.py): its link, and adoption.

`HolderLink` is the registry's `core.child.Keeper`: every child's descriptors
go to the holder before it is spawned, so the child outlives this daemon. A
daemon starting up attaches to the holder (one daemon per scope, its state
directory) and gets back every process a previous daemon left running:
`adopt` rebuilds each from its record (core/record.py, the one the
persister writes too) as a `ManagedProcess` with the same processId, pid
and seq numbering, its log reopened for appending (output.py `reopen`).

Calls are synchronous on the event loop: a message is one `sendmsg` on a
local socket, and only `attach` and `reap` (of an adopted process) wait for
an answer. If the holder dies, the daemon goes on without it (its children
then die with it, as before the holder: they are listed `lost` afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.child import Child
from ..core.output import OutputStore
from ..core.process import ManagedProcess
from ..core.proctree import ProcessRef
from ..core.record import ProcessRecord
from ..core.registry import Registry
from . import holder, paths, sockets

log = logging.getLogger("jupyter_exec.daemon")

#: How long a starting daemon waits for the previous one to let go of its scope.
ATTACH_SECONDS = 10.0


@dataclass
class HeldProcess:
    """One process the holder kept for us: what it knows and our descriptors of it."""

    key: str
    meta: dict[str, Any]
    pid: int | None
    status: int | None
    fds: dict[str, int]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class HolderLink:
    """A connection to the holder that serves as the registry's keeper."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lost = False
        self.pid = sockets.peer(sock)[1]
        self._ids = 0

    @classmethod
    def connect(cls, runtime_dir: Path) -> HolderLink | None:
        sock = sockets.connect(paths.holder_socket_path(runtime_dir), 30, socket.SOCK_SEQPACKET)
        return None if sock is None else cls(sock)

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call `on_lost` if the holder goes away (it never writes unasked)."""

        def readable() -> None:
            with contextlib.suppress(OSError):
                message, fds = holder.receive(self.sock)
                for fd in fds:
                    os.close(fd)
                if message is not None:
                    return
            self._lose("the holder went away")
            on_lost()

        asyncio.get_running_loop().add_reader(self.sock, readable)

    def disconnect(self) -> None:
        """Let go of the holder: it keeps every process for the next daemon."""
        with contextlib.suppress(RuntimeError, ValueError):
            asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()
        self.lost = True

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = True
            log.warning("%s: processes started from now on die with this daemon", why)
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self.sock)

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        if self.lost:
            return
        try:
            holder.send(self.sock, message, fds or [])
        except OSError as exc:
            self._lose(f"the holder cannot be reached ({exc})")

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """Send and wait for the answer; {"error": ...} if the holder is gone."""
        self._ids += 1
        self._send({**message, "id": self._ids}, fds)
        while not self.lost:
            try:
                answer, extra = holder.receive(self.sock)
            except OSError as exc:
                answer, extra = None, []
                log.warning("the holder did not answer: %s", exc)
            for fd in extra:
                os.close(fd)
            if answer is None:
                self._lose("the holder went away")
            elif answer.get("id") == self._ids:
                return answer
        return {"error": "the holder is gone"}

    # -- core.child.Keeper ------------------------------------------------------------

    def hold(self, key: str, meta: dict[str, Any], fds: dict[str, int]) -> None:
        self._send({"op": "hold", "key": key, "meta": meta, "names": list(fds)}, list(fds.values()))

    def spawned(self, key: str, pid: int, pidfd: int) -> None:
        self._send({"op": "pid", "key": key, "pid": pid}, [pidfd])

    def exited(self, key: str, status: int) -> None:
        self._send({"op": "exited", "key": key, "status": status})

    def close(self, key: str, names: list[str]) -> None:
        self._send({"op": "close", "key": key, "names": names})

    def release(self, key: str) -> None:
        self.release_keys([key])

    def release_keys(self, keys: list[str]) -> None:
        if keys:
            self._send({"op": "release", "keys": keys})

    def release_all(self) -> None:
        """Every process of our scope (`daemon/shutdown` ended them)."""
        self._send({"op": "release", "all": True})

    def reap(self, key: str) -> tuple[int | None, float, int | None] | None:
        answer = self.request({"op": "reap", "key": key})
        if answer.get("running"):
            return None
        if "error" in answer:  # gone with the holder: nobody can tell
            return None, 0.0, None
        return answer.get("status"), float(answer.get("cpu") or 0.0), answer.get("exitedAt")

    # -- taking over --------------------------------------------------------------------

    def attach(self, scope: str, version: str) -> list[HeldProcess] | None:
        """Become the owner of `scope`; None while another daemon still is."""
        message = {"op": "attach", "scope": scope, "pid": os.getpid(), "version": version}
        answer = self.request(message)
        if "error" in answer:
            if "is held by" in str(answer["error"]):
                return None
            raise OSError(f"the holder refused: {answer['error']}")
        found: list[HeldProcess] = []
        while True:
            reply, fds = holder.receive(self.sock)
            if reply is None:
                raise OSError("the holder went away while handing processes over")
            if reply.get("end"):
                return found
            entry = reply["held"]
            found.append(
                HeldProcess(
                    str(entry["key"]), entry["meta"], entry.get("pid"), entry.get("status"),
                    dict(zip(reply["names"], fds, strict=True)),
                )
            )  # fmt: skip


async def attach(link: HolderLink, scope: str, version: str) -> list[HeldProcess]:
    """`attach`, waiting (bounded) for a previous daemon that is still letting go."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ATTACH_SECONDS
    while True:
        found = link.attach(scope, version)
        if found is not None:
            return found
        if loop.time() > deadline:
            raise OSError(f"another exec daemon still holds {scope}")
        await asyncio.sleep(0.05)


def adopt(
    held: list[HeldProcess],
    registry: Registry,
    link: HolderLink,
    on_adopted: Callable[[ManagedProcess], None],
) -> int:
    """Rebuild every held process in `registry`; returns how many were adopted."""
    count = 0
    config = registry.config
    for entry in held:
        try:
            record = ProcessRecord.from_record(entry.meta)
        except (KeyError, TypeError, ValueError) as exc:
            record = None
            log.warning("dropped held process %s: unreadable record (%s)", entry.key, exc)
        if (
            record is None
            or entry.pid is None
            or "pidfd" not in entry.fds
            or registry.find(record.setup.process_id)
        ):
            # Its daemon died between handing the pipes over and spawning (or a clash):
            # nothing can be adopted, and the child, if any, sees its pipes close.
            if record is not None:
                log.warning("dropped held process %s (no pid)", record.setup.process_id)
            entry.close()
            link.release(entry.key)
            continue
        fds = entry.fds
        for fd in fds.values():
            os.set_blocking(fd, False)
        tty = record.setup.tty
        stdin: int | None
        if tty:
            outputs, stdin = {fds["pty"]: "pty"}, fds["pty"]
            staging = (fds["staging"], fds["staging_w"]) if "staging" in fds else None
        else:
            outputs = {fds["stdout"]: "stdout", fds["stderr"]: "stderr"}
            stdin, staging = fds.get("stdin"), None
        child = Child(
            entry.pid, fds["pidfd"], outputs, stdin, tty,
            keeper=link, key=entry.key, staging=staging, adopted=True,
        )  # fmt: skip
        if entry.status is not None:  # exited: its pid may name another process already
            child.ref = ProcessRef(entry.pid, -1)  # (its pidfd is readable: reaped at once)
        store = OutputStore.reopen(
            record.log, config.retained_bytes_per_process, config.log_bytes_per_process
        )
        proc = registry.adopt_child(
            record.setup, child, store, record.started_at, record.setup.front, record.schedule
        )
        on_adopted(proc)
        count += 1
    return count
