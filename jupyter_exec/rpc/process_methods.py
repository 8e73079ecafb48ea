"""The `process/*` methods (SPEC 4): params in, registry call, result out.

`process/start` also applies the front's sandbox policies (docs/sandbox.md):
`default_sandbox` to every process, `agent_sandbox` besides to what an agent
starts. A request may ask for a stricter sandbox than either, never a looser
one. An agent is a client whose `initialize` clientName starts with one of
`AGENT_CLIENTS` (Codex sends ``codex-environment``; our MCP faces
``jupyter-exec-mcp...``), or a start carrying Codex's own `envPolicy`. The
name is the client's word: the policy guards against what an agent's
commands do, which run inside the sandbox, not against a client that lies.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import ReadOutcome
from ..wire.errors import InvalidParamsError
from ..wire.protocol import (
    ListParams,
    ProcessParams,
    ReadParams,
    ResizeParams,
    SignalParams,
    StartParams,
    SubscribeParams,
    TerminateParams,
    WriteParams,
    parse_params,
)
from ..wire.sandbox import SandboxPolicy, looser_than
from ..wire.schema import ReadResult
from .context import CallContext, Handler

AGENT_CLIENTS = ("codex", "jupyter-exec-mcp")


async def _start(ctx: CallContext, params: Any) -> dict[str, Any]:
    p = parse_params(StartParams, params)
    policies = front_policies(ctx, agent=is_agent(ctx.client_name, p))
    if p.sandbox is not None:
        for setting, policy in policies.items():
            refusal = looser_than(p.sandbox, policy, setting)
            if refusal is not None:
                raise InvalidParamsError(refusal)
    info = ctx.registry.start(p, ctx.session_id, ctx.default_lifetime, list(policies.values()))
    # SPEC 1: the start response first, then the starting connection follows.
    ctx.after_response.append(lambda: _follow(ctx, p.process_id, 0))
    # Codex's names: `linuxSeccomp` is its Linux sandbox, whatever enforces it.
    sandbox_type = "none" if info.sandbox is None else "linuxSeccomp"
    return {"processId": p.process_id, "sandboxType": sandbox_type}


def is_agent(client_name: str, p: StartParams) -> bool:
    return client_name.startswith(AGENT_CLIENTS) or p.env_policy is not None


def front_policies(ctx: CallContext, agent: bool) -> dict[str, SandboxPolicy]:
    """The front's policies that apply to this start, by setting name."""
    policies = {"default_sandbox": ctx.default_sandbox}
    if agent:
        policies["agent_sandbox"] = ctx.agent_sandbox
    return policies


def _follow(ctx: CallContext, process_id: str, after_seq: int) -> None:
    if ctx.registry.find(process_id) is not None:  # not removed meanwhile
        ctx.sessions.subscribe(ctx.session, process_id, after_seq)


async def _read(ctx: CallContext, params: Any) -> dict[str, Any]:
    outcome = await ctx.registry.read(parse_params(ReadParams, params))
    return read_result(outcome)


def read_result(outcome: ReadOutcome) -> dict[str, Any]:
    info = outcome.info
    return ReadResult(
        chunks=outcome.chunks,
        next_seq=outcome.next_seq,
        first_seq=info.first_seq,
        exited=info.state != "running",
        exit_code=info.exit_code,
        signal=info.signal,
        closed=info.state in ("closed", "lost"),  # a lost process sends nothing more
        failure=info.failure,
        matched=outcome.matched,
        timed_out=info.timed_out,
        limit_exceeded=info.limit_exceeded,
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
    if p.watch:
        ctx.session.watching = True
    return {"processes": [info.wire() for info in ctx.registry.list_processes()]}


PROCESS_METHODS: dict[str, Handler] = {
    "process/start": _start,
    "process/read": _read,
    "process/write": _write,
    "process/signal": _signal,
    "process/terminate": _terminate,
    "process/resize": _resize,
    "process/subscribe": _subscribe,
    "process/unsubscribe": _unsubscribe,
    "process/list": _list,
    "process/remove": _remove,
}
