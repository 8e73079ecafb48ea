"""The `process/*` methods (SPEC 4): params in, registry call, result out.

A confined front (`confine_to_root`) sees and touches only the processes that
run inside its root (their cwd, symlinks resolved): `process/list` and its
`watch` events leave the others out, and a call naming one by id is refused
with -32600 naming the setting and the front (`_confined`). An unconfined
front sees every process of the daemon, whichever front started it.

`process/start` also applies the front's sandbox policies and the request's
own (`CallContext.sandbox_policies`, docs/sandbox.md); a start carrying Codex's
own `envPolicy` comes from an agent.

SPEC 11 scheduling: `process/start` takes `restart`, `queue` and `after`
(core/scheduler.py); `queue/set` and `queue/list` manage the queues. A waiting
process (`queued`, or `restarting` between two runs) has not exited: reads
long-poll it and `process/wait` waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..core import shell_snapshot
from ..core.front_root import SETTING, sees
from ..core.registry import MAX_WAIT_SECONDS, ReadOutcome, Registry
from ..wire.errors import InvalidRequestError
from ..wire.events import Event, StartedEvent
from ..wire.models import ProcessInfo
from ..wire.protocol import (
    ListParams,
    Origin,
    Params,
    ProcessParams,
    QueueSetParams,
    ReadParams,
    ResizeParams,
    SignalParams,
    StartParams,
    SubscribeParams,
    TerminateParams,
    WaitParams,
    WriteParams,
    parse_params,
)
from ..wire.rules import FrontRules
from ..wire.schema import ReadResult
from . import network_proxy
from .context import EXECUTE, READ, CallContext, Handler, Method

__all__ = ["PROCESS_METHODS", "default_origin", "read_result", "with_urls"]


async def _start(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(StartParams, params)
    if p.origin is None:
        p.origin = default_origin(ctx.client_name)
    policies = ctx.sandbox_policies(p.sandbox, codex_fields=p.env_policy is not None)
    async with network_proxy.behind_proxy(ctx, params, p) as (p, proxy):  # `networkProxy`
        # Codex's `shellSnapshot`: the scope's profile state replayed (core/shell_snapshot.py),
        # taken with the proxy's variables in place (it drops them, as Codex's does).
        run = await shell_snapshot.prepare(
            ctx.session, ctx.registry, p, params, ctx.rules, policies
        )
        run = network_proxy.masked(run, proxy, ctx.rules)  # `credentialMasking`
        info = ctx.registry.start(run, ctx.session_id, ctx.rules, policies, shown_argv=p.argv)
    # SPEC 1: the start response first, then the starting connection follows.
    ctx.after_response.append(lambda: _follow(ctx, p.process_id, 0))
    # Codex's names: `linuxSeccomp` is its Linux sandbox, whatever enforces it.
    sandbox_type = "none" if info.sandbox is None else "linuxSeccomp"
    return {"processId": p.process_id, "sandboxType": sandbox_type}


def default_origin(client_name: str) -> Origin:
    """SPEC 11 `origin` of a start that names none: from the connection's clientName
    (docs/protocol.md). Our fronts send their own (a notebook's path, the MCP client)."""
    if client_name.startswith(("codex", "jupyter-exec-mcp")):
        return Origin(kind="agent", name=client_name)
    if client_name == "jupyter-exec-cli":
        return Origin(kind="cli", name="jupyter exec")
    if client_name == "jupyterlab":
        return Origin(kind="panel", name="JupyterLab")
    return Origin(kind="client", name=client_name)


def _follow(ctx: CallContext, process_id: str, after_seq: int) -> None:
    if ctx.registry.find(process_id) is not None:  # not removed meanwhile
        ctx.sessions.subscribe(ctx.session, process_id, after_seq)


async def _read(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ReadParams, params)
    outcome = await ctx.registry.read(p)
    process = ctx.registry.find(p.process_id)
    exited = None if process is None else process.exited_event
    return read_result(outcome, exited is not None and exited.sandbox_denied)


def read_result(outcome: ReadOutcome, sandbox_denied: bool = False) -> dict[str, Any]:
    """`sandbox_denied`: what `process/exited` said (Codex's server repeats it in reads)."""
    info = outcome.info
    return ReadResult(
        chunks=outcome.chunks,
        next_seq=outcome.next_seq,
        first_seq=info.first_seq,
        exited=info.state in _ENDED,
        exit_code=info.exit_code,
        signal=info.signal,
        closed=info.state in ("closed", "lost"),  # a lost process sends nothing more
        failure=info.failure,
        matched=outcome.matched,
        timed_out=info.timed_out,
        limit_exceeded=info.limit_exceeded,
        sandbox_denied=sandbox_denied,
    ).wire()


async def _write(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(WriteParams, params)
    return {"status": ctx.registry.write(p.process_id, p.data(), p.eof, p.write_id)}


async def _signal(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(SignalParams, params)
    ctx.registry.signal(p.process_id, p.signum())
    return {}


async def _terminate(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(TerminateParams, params)
    return {"running": ctx.registry.terminate(p.process_id, p.grace_ms / 1000)}


async def _resize(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ResizeParams, params)
    ctx.registry.resize(p.process_id, p.rows, p.cols)
    return {}


async def _subscribe(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Replay from `afterSeq`, then live; the response goes out before the replay."""
    p = parse_params(SubscribeParams, params)
    next_seq = ctx.registry.get(p.process_id).next_seq  # unknown id: error, nothing sent
    ctx.after_response.append(lambda: _follow(ctx, p.process_id, p.after_seq))
    return {"nextSeq": next_seq}


async def _unsubscribe(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ProcessParams, params)
    ctx.registry.get(p.process_id)
    ctx.sessions.unsubscribe(ctx.session, p.process_id)
    return {}


async def _remove(ctx: CallContext, params: Any) -> dict[str, Any]:
    """Terminate if running, then forget the process now (so its id can be reused)."""
    p = parse_params(ProcessParams, params)
    await ctx.registry.remove(p.process_id)
    return {}


async def _list(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(ListParams, params)
    rules = ctx.rules
    listed = [info for info in ctx.registry.list_processes() if sees(rules, info.cwd)]
    if p.watch:
        ctx.session.watching = True
        if rules.confine_to_root:
            ctx.session.sees = _WatchScope(rules, {info.process_id for info in listed})
    return {"processes": [with_urls(info.wire(), rules) for info in listed]}


def with_urls(info: dict[str, Any], rules: FrontRules) -> dict[str, Any]:
    """SPEC 11: inside Jupyter Server each port gets the jupyter-server-proxy URL
    that reaches it, `{base_url}proxy/PORT/` (the front's `proxy_base_url`)."""
    base = rules.proxy_base_url
    if base is not None and info.get("ports"):
        info["ports"] = [{**port, "url": f"{base}{port['port']}/"} for port in info["ports"]]
    return info


#: SPEC 11 `process/wait`: states in which a process has exited for good.
_ENDED = ("exited", "closed", "lost")


async def _wait(ctx: CallContext, params: Any) -> dict[str, Any]:
    """SPEC 11: answer once every named process has exited, or at `timeoutMs`."""
    p = parse_params(WaitParams, params)
    procs = [ctx.registry.get(process_id) for process_id in p.process_ids]  # unknown: -32600
    if ctx.rules.confine_to_root:
        for process_id in p.process_ids:
            _check_sees(ctx.registry, ctx.rules, process_id)
    timeout = MAX_WAIT_SECONDS if p.timeout_ms is None else p.timeout_ms / 1000
    waits = [proc.exited.wait() for proc in procs if proc.state not in _ENDED]
    if waits:
        # asyncio.TimeoutError is not the builtin TimeoutError before Python 3.11.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), min(timeout, MAX_WAIT_SECONDS))
    return {"processes": [_ending(proc.info()) for proc in procs]}


def _ending(info: ProcessInfo) -> dict[str, Any]:
    exited = info.state in _ENDED
    return {
        "processId": info.process_id,
        "exited": exited,
        "exitCode": info.exit_code if exited else None,
        "signal": info.signal if exited else None,
    }


async def _queue_set(ctx: CallContext, params: Any) -> dict[str, Any]:
    """SPEC 11: how many of a queue's processes run at once (a new queue has 1)."""
    p = parse_params(QueueSetParams, params)
    return ctx.registry.scheduler.set_parallel(p.name, p.parallel).wire()


async def _queue_list(ctx: CallContext, params: Any) -> dict[str, Any]:
    """SPEC 11: every queue that was set or holds a process, with what it runs and holds."""
    parse_params(Params, params)  # no params of its own; a non-object is -32602
    return {"queues": [queue.wire() for queue in ctx.registry.scheduler.queues()]}


class _WatchScope:
    """A confined watcher's events: only of processes inside its root.

    Visibility is decided once per process, when it is listed or started (its
    cwd never changes), so `removed` is told to those who were told `started`.
    """

    def __init__(self, rules: FrontRules, known: set[str]) -> None:
        self.rules = rules
        self.known = known

    def __call__(self, event: Event) -> bool:
        if isinstance(event, StartedEvent):
            if not sees(self.rules, event.info.cwd):
                return False
            self.known.add(event.process_id)
        return event.process_id in self.known


def _confined(handler: Handler) -> Handler:
    """`handler`, refused for a process outside a confined front's root (module docstring)."""

    async def guarded(ctx: CallContext, params: Any) -> Any:
        process_id = params.get("processId") if isinstance(params, dict) else None
        if ctx.rules.confine_to_root and isinstance(process_id, str):
            _check_sees(ctx.registry, ctx.rules, process_id)
        return await handler(ctx, params)

    return guarded


def _check_sees(registry: Registry, rules: FrontRules, process_id: str) -> None:
    proc = registry.find(process_id)
    if proc is not None and not sees(rules, proc.setup.cwd):
        raise InvalidRequestError(
            f"process {process_id} runs outside the root {rules.root_dir} of "
            f"{rules.name} ({SETTING} is on)"
        )


PROCESS_METHODS: dict[str, Method] = {
    "process/start": Method(_start, EXECUTE),
    "process/list": Method(_list, READ),
    "process/wait": Method(_wait, READ),
    "queue/set": Method(_queue_set, EXECUTE),
    "queue/list": Method(_queue_list, READ),
    "process/read": Method(_confined(_read), READ),
    "process/write": Method(_confined(_write), EXECUTE),
    "process/signal": Method(_confined(_signal), EXECUTE),
    "process/terminate": Method(_confined(_terminate), EXECUTE),
    "process/resize": Method(_confined(_resize), EXECUTE),
    "process/subscribe": Method(_confined(_subscribe), READ),
    "process/unsubscribe": Method(_confined(_unsubscribe), READ),
    "process/remove": Method(_confined(_remove), EXECUTE),
}
