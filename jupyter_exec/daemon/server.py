"""The exec daemon: the registry and its service behind a unix socket, per user.

Started on demand by `daemon.start`, through the holder (daemon/holder.py),
whose child it is: `python -m jupyter_exec.daemon RUNTIME_DIR`, "ready" on
stdout once it listens. In its own session, it gets no signal aimed at a
server's process group. It attaches to the holder and adopts every process a
previous daemon left there (daemon/holding.py). Its own settings are the
user's, read from `jupyter_exec_daemon.json` (config.py), whoever starts it;
`daemon/settings` answers them and where each came from.

Each connection starts with one hello line each way (stable across versions):

    -> {"jupyterExecDaemon": N, "allowedActions": ["read", ...] | null,
        "front": {FrontRules}, "stopOnClose"?: true}
    <- {"jupyterExecDaemon": N, "version": "...", "pid": P}
       (+ "error" if N differs or `front` is malformed, and the connection closes)

then carries SPEC 1 JSON-RPC, one message per line. The peer must have this
process's uid (SO_PEERCRED; the socket is also mode 0600). `allowedActions`
is enforced like a websocket's (the Jupyter extension authenticated the user
already). `front` holds the rules of the front the connection serves
(wire/rules.py, SPEC 3), applied to each of its requests; a hello without it
(an older front) gets `fallback_rules` and a warning in the daemon's log.
A `stopOnClose` connection carries no messages: when it closes the
daemon stops everything (`stop_processes_on_shutdown`, even after a SIGKILL
of the server holding it). `daemon/shutdown` (needs `execute`) stops every
process and the daemon. `daemon/stop` (needs `execute`; `{"reason"}`) and
SIGTERM stop the daemon only: its processes stay with the holder for the next
daemon (SPEC 3). With no unfinished process and no client for
`daemon_idle_seconds` it exits by itself; finished processes stay on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..config import DaemonSettings, DaemonSettingsError, load_daemon_settings
from ..core.heap import keep_freed_heap
from ..core.line_pump import pump_lines
from ..core.linux import linux_refusal
from ..rpc.context import EXECUTE, READ, CallContext, Method
from ..rpc.service import build_service
from ..wire.lines import as_line
from ..wire.rules import FrontRules
from . import paths, sockets
from .handover import Handovers
from .holder import detach_stdio
from .holding import HeldProcess, HolderLink, adopt, attach
from .persist import Persister

__all__ = ["STDIN_FLUSH_SECONDS", "Daemon", "fallback_rules", "main"]


log = logging.getLogger("jupyter_exec.daemon")

#: Slack over `max_message_bytes` for the line reader (SPEC 7 refusal happens there).
_LINE_SLACK = 1 << 16
#: How long a daemon that stops (not everything) waits for queued stdin to reach its processes.
STDIN_FLUSH_SECONDS = 5.0


def fallback_rules(pid: int) -> FrontRules:
    """The rules of a connection whose hello has none: safe wherever the daemon runs.

    The user's home directory as root (it exists, unlike a starter's temp root),
    no confinement (an older front had none of its own either), the default
    `max_processes`, detached processes (what every front of the daemon asked
    for), the daemon's own environment.
    """
    return FrontRules(
        name=f"a front that sent no rules (pid {pid})",
        root_dir=Path.home().resolve(),
        default_lifetime="detached",
    )


class Daemon:
    def __init__(
        self,
        runtime_dir: Path,
        config: DaemonSettings,
        sources: dict[str, str] | None = None,
    ) -> None:
        self.runtime_dir = runtime_dir
        self.config = config
        self.sources = sources or {}
        self.protocol = paths.daemon_protocol()
        self.state_dir = paths.state_dir(runtime_dir, self.protocol)
        # Under a configured log_dir, a subdirectory: it is deleted at shutdown.
        logs_parent = config.log_dir if config.log_dir is not None else self.state_dir
        self.logs_dir = logs_parent / (self.state_dir.name + "-logs")
        self.service = build_service(config, durable_log_dir=self.logs_dir)
        self.persister = Persister(self.service.registry, self.state_dir / "procs", self._released)
        self.service.add_methods(
            {
                "daemon/shutdown": Method(self._shutdown_method, EXECUTE),
                "daemon/stop": Method(self._stop_method, EXECUTE),
                "daemon/settings": Method(self._settings_method, READ),
            }
        )
        self.link: HolderLink | None = None
        #: `daemon/shutdown`: every process goes too; otherwise they stay with the holder.
        self.stop_everything = False
        self.clients = 0
        self.handovers = Handovers(self.service, self.protocol, config.max_message_bytes, _fallback)
        self.stop = asyncio.Event()
        self._streams: set[asyncio.StreamWriter] = set()

    async def run(self, ready: int) -> None:
        """Serve until stopped; `ready` (a pipe) gets one line once the socket listens."""
        registry = self.service.registry
        registry.id = _registry_id(self.state_dir)  # adopted markers keep their prefix
        held = await self._attach()
        recovered = self.persister.recover(self.logs_dir, {h.key for h in held})
        adopted = adopt(held, registry, self.link, self.persister.track) if self.link else 0
        self._orphan_sessions()
        path = paths.socket_path(self.runtime_dir, self.protocol)
        path.unlink(missing_ok=True)  # we hold the life lock: a socket left here is stale
        server = await asyncio.start_unix_server(
            self._client,
            sock=sockets.bind_private(path),
            limit=self.config.max_message_bytes + _LINE_SLACK,
        )
        handover = paths.handover_path(self.runtime_dir, self.protocol)
        self.handovers.listen(handover)
        record = paths.record_path(self.runtime_dir, self.protocol)
        _write_record(record, path, self.protocol, self.link)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, signal.Signals(sig).name)
        log.info(
            "version %s listening on %s (adopted %d running processes, recovered %d)",
            paths.daemon_version(), path, adopted, recovered,
        )  # fmt: skip
        os.write(ready, b"ready\n")
        os.close(ready)
        idle = asyncio.create_task(self._exit_when_idle())
        try:
            await self.stop.wait()
        finally:
            idle.cancel()
            server.close()
            path.unlink(missing_ok=True)
            handover.unlink(missing_ok=True)
            await self.handovers.aclose()
            record.unlink(missing_ok=True)
            if self.stop_everything or self.link is None or self.link.lost:
                await self._end_everything()
            else:
                await self._let_go()
            # Last: a client waiting for our EOF (daemon/control.py) knows everything is gone.
            for writer in list(self._streams):
                writer.close()

    def _orphan_sessions(self) -> None:
        """Adopted `connection` processes lost their sessions with the previous daemon:
        they end after `session_resume_seconds`, as after any connection drop (SPEC 3)."""
        registry = self.service.registry
        owners = {
            p.setup.owner
            for p in registry.running()
            if p.setup.lifetime == "connection" and p.setup.owner is not None
        }
        loop = asyncio.get_running_loop()
        for owner in owners:
            loop.call_later(self.config.session_resume_seconds, registry.terminate_owned_by, owner)

    async def _attach(self) -> list[HeldProcess]:
        """Take over from the holder what a previous daemon left running."""
        self.link = await asyncio.to_thread(HolderLink.connect, self.runtime_dir)
        if self.link is None:
            log.warning("no holder: processes started here die with this daemon")
            return []
        held = await attach(self.link, self.state_dir.name, paths.daemon_version())
        self.service.registry.keeper = self.link
        self.link.watch(self._holder_lost)
        return held

    def _holder_lost(self) -> None:
        """New processes die with us now (no guardian either: the next daemon finds
        what is left, lists it lost and kills it)."""
        self.service.registry.keeper = None

    def _released(self, keys: list[str]) -> None:
        if self.link is not None:
            self.link.release_keys(keys)

    def _stop(self, reason: str) -> None:
        log.info("stopping (%s): processes stay with the holder", reason)
        self.stop.set()

    async def _end_everything(self) -> None:
        """`daemon/shutdown`: every process ends, and every trace of them."""
        await self.service.aclose()
        self.persister.close()
        if self.link is not None:
            self.link.release_all()  # also any that would not close
            self.link.disconnect()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    async def _let_go(self) -> None:
        """Stop serving; every process stays with the holder for the next daemon."""
        for writer in list(self._streams):
            writer.close()
        registry = self.service.registry
        for _ in range(int(STDIN_FLUSH_SECONDS / 0.02)):  # what process/write accepted
            if not any(p.stdin_pending for p in registry.running()):  # reaches the child
                break
            await asyncio.sleep(0.02)
        self.persister.close()
        assert self.link is not None
        self.link.disconnect()
        if not any(self.persister.procs_dir.iterdir()):
            shutil.rmtree(self.state_dir, ignore_errors=True)  # nothing left to list

    async def _exit_when_idle(self) -> None:
        registry = self.service.registry
        idle_since = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.config.daemon_idle_seconds / 4))
            unfinished = any(p.state != "closed" for p in registry.list_processes())
            if self.clients or self.handovers.count or unfinished:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.config.daemon_idle_seconds:
                # Finished processes stay listed from their records, by the next daemon.
                log.info("idle for %.0f s: exiting", self.config.daemon_idle_seconds)
                self.stop.set()
                return

    async def _shutdown_method(self, ctx: CallContext, params: Any) -> dict[str, Any]:
        self.stop_everything = True
        ctx.after_response.append(self.stop.set)
        return {"stopping": True, "pid": os.getpid()}

    async def _stop_method(self, ctx: CallContext, params: Any) -> dict[str, Any]:
        """`daemon/stop`: this daemon goes, its processes stay (a restart or an upgrade)."""
        reason = params.get("reason") if isinstance(params, dict) else None
        ctx.after_response.append(lambda: self._stop(str(reason or "daemon/stop")))
        return {"stopping": True, "pid": os.getpid()}

    async def _settings_method(self, ctx: CallContext, params: Any) -> dict[str, Any]:
        """The user's daemon settings in force, each with where it came from."""
        return {
            "settings": self.config.to_wire(),
            "sources": self.sources,
            "pid": os.getpid(),
            "version": paths.daemon_version(),
        }

    # -- one client -------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.add(writer)
        try:
            uid, pid = sockets.peer(writer.get_extra_info("socket"))
            if uid != os.getuid():
                log.warning("refused a connection from another user")
                return
            hello = await self._hello(reader, writer)
            if hello is None:
                return
            if hello.get("stopOnClose"):
                await reader.read()  # until the holder goes away, however it dies
                self.stop_everything = True
                self.stop.set()
                return
            rules = hello.get("front") or _fallback(pid)
            await self._serve(reader, writer, hello.get("allowedActions"), rules)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._streams.discard(writer)
            writer.close()

    async def _hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any] | None:
        line = await reader.readline()
        if not line:
            return None  # a probe (daemon.start checks that we listen)
        try:
            hello = json.loads(line)
            theirs = hello["jupyterExecDaemon"]
        except (ValueError, TypeError, KeyError):
            hello, theirs = {}, None
        answer: dict[str, Any] = {
            "jupyterExecDaemon": self.protocol,
            "version": paths.daemon_version(),
            "pid": os.getpid(),
        }
        if theirs != self.protocol:
            answer["error"] = f"this exec daemon speaks protocol {self.protocol}, not {theirs}"
        elif "front" in hello:
            try:
                hello["front"] = FrontRules.from_wire(hello["front"])
            except ValueError as exc:
                answer["error"] = f"bad hello: {exc}"
        writer.write(as_line(json.dumps(answer)))
        await writer.drain()
        return hello if "error" not in answer else None

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        actions: Any,
        rules: FrontRules,
    ) -> None:
        async def write(frame: str | bytes) -> None:
            writer.write(as_line(frame))
            await writer.drain()

        allowed = frozenset(actions) if isinstance(actions, list) else None
        connection = self.service.connect(write, allowed_actions=allowed, rules=rules)
        self.clients += 1
        try:
            await pump_lines(reader, connection, self.config.max_message_bytes)
        finally:
            self.clients -= 1
            await connection.aclose()


def _fallback(pid: int) -> FrontRules:
    rules = fallback_rules(pid)
    log.warning("%s: using the root %s and the daemon's environment", rules.name, rules.root_dir)
    return rules


def _write_record(record: Path, sock: Path, protocol: int, link: HolderLink | None) -> None:
    data = {
        "pid": os.getpid(),
        "version": paths.daemon_version(),
        "protocol": protocol,
        "socket": str(sock),
        "startedAt": int(time.time() * 1000),
        # A daemon with a holder hands its processes over on an upgrade (start.py).
        "holder": None if link is None else link.pid,
    }
    tmp = record.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data))
    os.replace(tmp, record)


def _registry_id(state_dir: Path) -> str:
    """The marker prefix of this state dir's processes, the same for every daemon on it."""
    path = state_dir / "registry-id"
    with contextlib.suppress(OSError):
        return path.read_text()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = uuid.uuid4().hex[:12]
    path.write_text(ident)
    return ident


# -- process set-up ---------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`python -m jupyter_exec.daemon RUNTIME_DIR` as the holder starts it, its settings
    from `jupyter_exec_daemon.json`: "ready" (or "error: ...") goes to stdout, then the
    log takes it."""
    runtime_dir = Path(argv[0]).resolve()
    if (refusal := linux_refusal("the jupyter-exec daemon")) is not None:
        sys.stdout.write(f"error: {refusal}\n")
        return 1
    try:
        config, sources = load_daemon_settings()
    except DaemonSettingsError as exc:
        sys.stdout.write(f"error: {exc}\n")
        return 1
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ready = os.dup(1)
    keep_freed_heap()
    detach_stdio(paths.log_path(runtime_dir))
    with open(paths.lock_path(runtime_dir), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a daemon still stopping finishes first
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        try:
            asyncio.run(_run(runtime_dir, config, sources, ready))
        except Exception as exc:
            log.exception("the exec daemon failed")
            with contextlib.suppress(OSError):
                os.write(ready, f"error: {exc}\n".encode())
            return 1
    return 0


async def _run(
    runtime_dir: Path, config: DaemonSettings, sources: dict[str, str], ready: int
) -> None:
    await Daemon(runtime_dir, config, sources).run(ready)
