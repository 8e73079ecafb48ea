"""The eight MCP tools of SPEC 10, on the official `mcp` SDK, over an `ExecClient`.

Both MCP endpoints (stdio: mcp_stdio.py; streamable HTTP inside Jupyter:
mcp_http.py) build their server here. The tools speak the same JSON-RPC as
the CLI, through `jupyter_exec.client.ExecClient`, so an agent's processes are
ordinary processes of the registry: `%ps`, the panel and the CLI see them.

Every result is a `CallToolResult` with one text for the model and
`structuredContent` holding the same facts. Output is bounded (bounded.py);
an error the server answers, a bad regex, an unknown id become a tool error
(`isError: true`) with the server's one sentence, and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import Field

from .._version import __version__
from ..client.exec_client import END_CURSOR, ConnectionLostError, ExecClient
from ..render.presentation import not_running_text, ps_text
from ..render.terminal import collapse_progress
from ..wire.errors import ExecError
from ..wire.models import ProcessInfo
from ..wire.sandbox import shorthand
from .bounded import DEFAULT_MAX_CHARS, Bounded, collect

__all__ = [
    "INPUT_IDLE_MS",
    "INSTRUCTIONS",
    "TAIL_CHARS",
    "TAIL_CHUNKS",
    "TERMINATE_WAIT_SECONDS",
    "Actions",
    "ClientSource",
    "Env",
    "MaxChars",
    "Sandbox",
    "Seconds",
    "build_server",
]


#: `send_input` returns once the process said nothing for this long.
INPUT_IDLE_MS = 300
#: How long `terminate_process` waits to report the exit (after SIGTERM's grace).
TERMINATE_WAIT_SECONDS = 5.0
#: `wait_process`: the end of each one's output it returns, from its last chunks.
TAIL_CHARS = 2000
TAIL_CHUNKS = 16

Seconds = Annotated[float, Field(ge=0, le=3600)]
#: docs/sandbox.md; the server's `agent_sandbox` applies anyway: this can only be stricter.
Sandbox = Annotated[
    Literal["read-only", "workspace-write", "workspace-write:network-off", "read-only:network-off"]
    | None,
    Field(description="a stricter sandbox than the server's agent_sandbox"),
]
MaxChars = Annotated[int, Field(ge=200, le=1_000_000)]
#: SPEC 11 scheduling: a restart policy, its limits, a queue, dependencies.
RestartPolicy = Annotated[
    Literal["never", "on-failure", "always"] | None,
    Field(description="restart it when it ends: on-failure (a non-zero exit) or always"),
]
MaxRestarts = Annotated[int | None, Field(ge=0, le=1_000_000, description="default 10")]
RestartDelayMs = Annotated[
    int | None, Field(ge=0, le=60_000, description="first delay, doubling up to 60 s; default 1000")
]
QueueName = Annotated[
    str | None,
    Field(min_length=1, max_length=128, description="wait for a free slot of this queue"),
]
After = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]] | None,
    Field(max_length=1000, description="process ids that must all exit with 0 first"),
]
Env = dict[str, str] | None
#: Returns the actions the caller may take (`read`, `execute`), None for all.
Actions = Callable[[Context], frozenset[str] | None]

INSTRUCTIONS = (
    "Processes in the user's Jupyter server (jupyter-exec): run_command for a command that "
    "finishes, start_process for servers and REPLs, then read_output / send_input with the "
    "process_id. The user sees these processes live in JupyterLab."
)


class ClientSource:
    """One `ExecClient`, connected at first use and again after it was lost."""

    def __init__(self, connect: Callable[[], Awaitable[ExecClient]]) -> None:
        self._connect = connect
        self._client: ExecClient | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> ExecClient:
        async with self._lock:
            if self._client is None or self._client.closed:
                try:
                    self._client = await self._connect()
                except ExecError:
                    raise
                except Exception as exc:
                    raise ToolError(f"cannot reach the jupyter-exec server: {exc}") from None
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def build_server(source: ClientSource, actions: Actions | None = None) -> MCPServer:
    """An MCPServer with the SPEC 10 tools; `actions` gates them (Jupyter authorization)."""
    server = MCPServer("jupyter-exec", version=__version__, instructions=INSTRUCTIONS)
    tools = _Tools(source, actions)
    for fn in (
        tools.run_command,
        tools.start_process,
        tools.read_output,
        tools.send_input,
        tools.signal_process,
        tools.terminate_process,
        tools.list_processes,
        tools.wait_process,
    ):
        server.tool(description=" ".join((fn.__doc__ or "").split()))(fn)
    return server


def _result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured
    )


def _check_pattern(pattern: str | None, name: str) -> None:
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ToolError(f"{name} is not a valid regular expression: {exc}") from None


def _process_id(command: str) -> str:
    word = os.path.basename(command.split(maxsplit=1)[0]) if command.strip() else "sh"
    base = re.sub(r"[^A-Za-z0-9_.-]", "", word)[:40] or "sh"
    return f"{base}-{uuid.uuid4().hex[:6]}"


def _lines(*parts: str) -> str:
    """Parts on lines of their own, without blank lines where output ended one."""
    return "\n".join(p.removesuffix("\n") for p in parts if p)


def _exit_line(b: Bounded, process_id: str) -> str:
    if b.exited:
        return f"exit code: {b.exit_code}" + (f" ({b.signal})" if b.signal else "")
    return (
        f"still running as {process_id} "
        f"(more output: read_output(process_id={process_id!r}, after_seq={b.next_seq - 1}))"
    )


class _Tools:
    def __init__(self, source: ClientSource, actions: Actions | None) -> None:
        self._source = source
        self._actions = actions

    async def _client(self, ctx: Context, action: str) -> ExecClient:
        allowed = self._actions(ctx) if self._actions is not None else None
        if allowed is not None and action not in allowed:
            raise ToolError(f"permission denied: this needs the {action} permission on exec")
        return await self._source.get()

    async def _start(
        self,
        client: ExecClient,
        ctx: Context,
        command: str,
        cwd: str | None,
        env: Env,
        sandbox: str | None,
        **extra: Any,
    ) -> str:
        if not command.strip():
            raise ToolError("command is empty")
        if sandbox is not None:
            extra["sandbox"] = shorthand(sandbox)
        process_id = extra.pop("process_id", None) or _process_id(command)
        params: dict[str, Any] = {
            "processId": process_id,
            "argv": ["bash", "-c", command],
            "lifetime": "detached",
            "label": "mcp: " + command[:80],
            "origin": {"kind": "agent", "name": _agent_name(ctx)},
            **extra,
        }
        if cwd is not None:
            params["cwd"] = cwd
        if env:
            params.update(env=env, inheritEnv=True)
        await client.request("process/start", params)
        return process_id

    async def run_command(
        self,
        command: str,
        ctx: Context,
        cwd: str | None = None,
        env: Env = None,
        timeout_seconds: Seconds = 60,
        sandbox: Sandbox = None,
    ) -> CallToolResult:
        """Run a bash script in the user's Jupyter server and wait until it exits or the
        timeout passes (default 60 s). Returns its output (stdout and stderr in order) and
        its exit code; at the timeout, the output so far and the process id: it is NOT
        killed, follow it with read_output."""
        async with _tool_errors():
            client = await self._client(ctx, "execute")
            process_id = await self._start(client, ctx, command, cwd, env, sandbox)
            await _wait_exit(client, process_id, timeout_seconds)
            b = await collect(client, process_id, 0, None, DEFAULT_MAX_CHARS)
            return _result(
                _lines(b.text, _exit_line(b, process_id)),
                {"process_id": process_id, **b.structured()},
            )

    async def start_process(
        self,
        command: str,
        ctx: Context,
        cwd: str | None = None,
        env: Env = None,
        tty: bool = False,
        process_id: str | None = None,
        wait_for: str | None = None,
        wait_seconds: Seconds = 5,
        sandbox: Sandbox = None,
        wait_for_port: bool = False,
        restart: RestartPolicy = None,
        max_restarts: MaxRestarts = None,
        restart_delay_ms: RestartDelayMs = None,
        queue: QueueName = None,
        after: After = None,
    ) -> CallToolResult:
        """Start a long-running bash command (a server, a REPL, a watcher) that keeps
        running in the user's Jupyter server, with stdin open for send_input. Returns its
        process_id and its output up to the first match of the regex wait_for (e.g.
        "Listening on"), or wait_seconds (default 5), or its exit, whichever comes first.
        wait_for_port=true returns once it listens on a TCP port instead (raise
        wait_seconds for a slow server), with the ports and their links. restart
        (on-failure, always; max_restarts, restart_delay_ms) restarts it when it ends;
        queue waits for a free slot of that queue (one at a time unless the user set
        more); after starts it once those process ids all exited with 0 (if one fails it
        never starts). A process that waits returns at once as queued."""
        async with _tool_errors():
            _check_pattern(wait_for, "wait_for")
            client = await self._client(ctx, "execute")
            scheduled = _schedule(restart, max_restarts, restart_delay_ms, queue, after)
            pid = await self._start(
                client, ctx, command, cwd, env, sandbox,
                process_id=process_id, tty=tty, pipeStdin=True, **scheduled,
            )  # fmt: skip
            if queue is not None or after:
                waiting = await _queued_result(client, pid)
                if waiting is not None:
                    return waiting
            if wait_for_port:
                return await _port_result(client, pid, wait_seconds)
            if wait_for is None:
                await _wait_exit(client, pid, wait_seconds)
                upto = None
            else:
                r = await client.read(
                    pid, 0, wait_ms=int(wait_seconds * 1000), until_pattern=wait_for
                )
                upto = r.chunks[-1].seq if r.matched and r.chunks else None
            b = await collect(client, pid, 0, upto, DEFAULT_MAX_CHARS)
            matched = {} if wait_for is None else {"matched": upto is not None}
            return _result(
                _lines(f"started {pid}", b.text, _exit_line(b, pid)),
                {"process_id": pid, **b.structured(), **matched},
            )

    async def read_output(
        self,
        process_id: str,
        ctx: Context,
        after_seq: Annotated[int, Field(ge=0)] = 0,
        wait_seconds: Seconds = 0,
        until_pattern: str | None = None,
        until_idle_seconds: Seconds | None = None,
        max_chars: MaxChars = DEFAULT_MAX_CHARS,
    ) -> CallToolResult:
        """Output of a process after the cursor after_seq (0: from the start; pass the
        after_seq a previous result gave to get only what is new). wait_seconds waits for
        output; until_pattern waits until the regex matches; until_idle_seconds returns once
        no output came for that long. Also says whether it exited and its exit code."""
        async with _tool_errors():
            _check_pattern(until_pattern, "until_pattern")
            client = await self._client(ctx, "read")
            idle_ms = None if until_idle_seconds is None else int(until_idle_seconds * 1000)
            r = await client.read(
                process_id,
                after_seq,
                wait_ms=int(wait_seconds * 1000),
                until_pattern=until_pattern,
                until_idle_ms=idle_ms,
            )
            upto = r.chunks[-1].seq if r.matched and r.chunks else None
            b = await collect(client, process_id, after_seq, upto, max_chars)
            extra = {} if until_pattern is None else {"matched": bool(r.matched)}
            return _result(
                _lines(b.text, _exit_line(b, process_id)),
                {"process_id": process_id, **b.structured(), **extra},
            )

    async def send_input(
        self,
        process_id: str,
        text: str,
        ctx: Context,
        newline: bool = True,
        eof: bool = False,
        wait_seconds: Seconds = 1,
    ) -> CallToolResult:
        """Type text into a process's stdin (a newline is added unless newline=false; eof
        closes stdin), then return the output that followed, until it goes quiet or
        wait_seconds (default 1) pass. For REPLs and prompts started with start_process."""
        async with _tool_errors():
            client = await self._client(ctx, "execute")
            cursor = (await client.read(process_id, END_CURSOR)).next_seq - 1
            data = (text + ("\n" if newline else "")).encode()
            status = await client.write(process_id, data, eof=eof)
            if status != "accepted":
                why = {"stdinClosed": "its stdin is closed or it has exited"}.get(status, status)
                raise ToolError(f"process {process_id} does not take input: {why}")
            await client.read(
                process_id, cursor, wait_ms=int(wait_seconds * 1000), until_idle_ms=INPUT_IDLE_MS
            )
            b = await collect(client, process_id, cursor, None, DEFAULT_MAX_CHARS)
            return _result(
                _lines(b.text, _exit_line(b, process_id)),
                {"process_id": process_id, **b.structured()},
            )

    async def signal_process(self, process_id: str, signal: str, ctx: Context) -> CallToolResult:
        """Send a signal to a process's group: interrupt (Ctrl-C), terminate, kill, hangup,
        quit, user1, user2, stop, continue."""
        async with _tool_errors():
            client = await self._client(ctx, "execute")
            await client.signal(process_id, signal)
            return _result(
                f"sent {signal} to {process_id}", {"process_id": process_id, "signal": signal}
            )

    async def terminate_process(self, process_id: str, ctx: Context) -> CallToolResult:
        """Stop a process and everything it started: SIGTERM, then SIGKILL after 3 s.
        Returns its exit code."""
        async with _tool_errors():
            client = await self._client(ctx, "execute")
            await client.read(process_id, END_CURSOR)  # unknown id: an error, not "not running"
            before = next((i.state for i in await client.list() if i.process_id == process_id), "")
            was_running = await client.terminate(process_id)
            r = await client.read(
                process_id, END_CURSOR, wait_ms=int(TERMINATE_WAIT_SECONDS * 1000)
            )
            facts = {
                "process_id": process_id,
                "was_running": was_running,
                "running": not r.exited,
                "exit_code": r.exit_code,
                "signal": r.signal,
            }
            if not was_running and before in ("queued", "restarting"):
                text = not_running_text(process_id, before)
            elif not was_running:
                text = f"{process_id} had already exited (exit code: {r.exit_code})"
            elif r.exited:
                text = f"terminated {process_id}: exit code {r.exit_code} ({r.signal})"
            else:
                text = f"{process_id} is being terminated"
            return _result(text, facts)

    async def list_processes(self, ctx: Context) -> CallToolResult:
        """The processes in the user's Jupyter server (agents', notebooks', the user's):
        id, state, exit code, CPU and memory of its process tree, the TCP ports it
        listens on (with links), where it came from, command."""
        async with _tool_errors():
            client = await self._client(ctx, "read")
            infos = await client.list()
            text = ps_text(infos) if infos else "no processes"
            return _result(text, {"processes": [_listed(i) for i in infos]})

    async def wait_process(
        self,
        process_ids: Annotated[list[str], Field(min_length=1, max_length=1000)],
        ctx: Context,
        timeout_seconds: Seconds = 300,
    ) -> CallToolResult:
        """Wait until every named process has exited, or timeout_seconds (default 300)
        pass, in one call instead of polling read_output. Returns each one's exit code
        (null while still running) and the end of its output."""
        async with _tool_errors():
            client = await self._client(ctx, "read")
            ended = await client.wait_all(process_ids, timeout_seconds)
            facts, lines = [], []
            for one in ended:
                pid, code = one["processId"], one["exitCode"]
                tail = await _tail(client, pid)
                facts.append(
                    {"process_id": pid, "running": not one["exited"], "exit_code": code,
                     "signal": one["signal"], "output_tail": tail}
                )  # fmt: skip
                status = "still running" if not one["exited"] else f"exit code: {code}"
                if one["exited"] and code is None:
                    status = "never started"
                if one["signal"]:
                    status += f" ({one['signal']})"
                lines.append(_lines(f"== {pid}: {status}", tail))
            return _result("\n".join(lines), {"processes": facts})


def _agent_name(ctx: Context) -> str:
    """SPEC 11 origin: the MCP client's own name (its `initialize` clientInfo)."""
    with contextlib.suppress(AttributeError, LookupError, ValueError):
        params = ctx.session.client_params
        if params is not None and params.client_info.name:
            return f"{params.client_info.name} (MCP)"
    return "MCP client"


async def _port_result(client: ExecClient, process_id: str, seconds: float) -> CallToolResult:
    """`start_process(wait_for_port=True)`: its ports once it listens, or why not."""
    try:
        info = await client.wait_for_port(process_id, seconds)
    except TimeoutError:
        info = next(i for i in await client.list() if i.process_id == process_id)
    b = await collect(client, process_id, 0, None, DEFAULT_MAX_CHARS)
    ports = [_port(p) for p in info.ports]
    if ports:
        where = ", ".join(p.get("url") or f"{p['address']}:{p['port']}" for p in ports)
        head = f"started {process_id}, listening on {where}"
    else:
        head = f"started {process_id}; it listens on no TCP port yet"
    return _result(
        _lines(head, b.text, _exit_line(b, process_id)),
        {"process_id": process_id, **b.structured(), "ports": ports},
    )


def _port(port: dict[str, Any]) -> dict[str, Any]:
    return {"port": port["port"], "address": port["address"], "pid": port["pid"],
            "url": port.get("url")}  # fmt: skip


async def _tail(client: ExecClient, process_id: str) -> str:
    """The end of its output (`TAIL_CHARS`), read from its last chunks only."""
    end = await client.request("process/read", {"processId": process_id, "afterSeq": END_CURSOR})
    after = max(0, end["nextSeq"] - 1 - TAIL_CHUNKS)
    params = {"processId": process_id, "afterSeq": after, "maxBytes": 1 << 20}
    r = await client.request("process/read", params)
    data = b"".join(base64.b64decode(c["chunk"]) for c in r["chunks"])
    text = data.decode("utf-8", errors="replace")
    if any(c["stream"] == "pty" for c in r["chunks"]):
        text = "\n".join(line.rstrip() for line in collapse_progress(text).split("\n"))
    return text[-TAIL_CHARS:]


def _listed(info: ProcessInfo) -> dict[str, Any]:
    return {
        "process_id": info.process_id,
        "state": info.state,
        "exit_code": info.exit_code,
        "signal": info.signal,
        "argv": info.argv,
        "label": info.label,
        "tty": info.tty,
        "pid": info.pid,
        "next_seq": info.next_seq,
        "output_bytes": info.output_bytes,
        "ports": [_port(p) for p in info.ports],
        "usage": None if info.usage is None else _usage(info.usage),
        "origin": info.origin,
        "restart_policy": None if info.restart_policy is None else _policy(info.restart_policy),
        "restarts": info.restarts,
        "queue": info.queue,
        "after": info.after,
        "failure": info.failure,
    }


def _policy(policy: dict[str, Any]) -> dict[str, Any]:
    """SPEC 11 restartPolicy in the tools' snake_case."""
    return {
        "policy": policy.get("policy"),
        "max_restarts": policy.get("maxRestarts"),
        "delay_ms": policy.get("delayMs"),
    }


def _schedule(
    restart: str | None,
    max_restarts: int | None,
    delay_ms: int | None,
    queue: str | None,
    after: list[str] | None,
) -> dict[str, Any]:
    """`start_process`'s SPEC 11 params; a limit without a policy is a tool error."""
    params: dict[str, Any] = {}
    if restart is None and (max_restarts is not None or delay_ms is not None):
        given = "max_restarts" if max_restarts is not None else "restart_delay_ms"
        raise ToolError(f"{given} needs restart='on-failure' or restart='always'")
    if restart is not None:
        spec = {"policy": restart, "maxRestarts": max_restarts, "delayMs": delay_ms}
        params["restart"] = {k: v for k, v in spec.items() if v is not None}
    if queue is not None:
        params["queue"] = queue
    if after:
        params["after"] = list(dict.fromkeys(after))
    return params


async def _queued_result(client: ExecClient, process_id: str) -> CallToolResult | None:
    """`start_process` of a process that waits (SPEC 11 queued): says so at once;
    None when it already started (its queue had room, its dependencies had succeeded)."""
    info = next((i for i in await client.list() if i.process_id == process_id), None)
    if info is None or info.state != "queued":
        return None
    waits = [f"queue {info.queue}"] if info.queue else []
    waits += [f"after {', '.join(info.after)}"] if info.after else []
    text = f"queued {process_id} ({'; '.join(waits)}); it has not started yet"
    return _result(
        f"{text} (wait_process or read_output follow it)",
        {"process_id": process_id, "state": "queued", "queue": info.queue, "after": info.after,
         "running": False, "exit_code": None},
    )  # fmt: skip


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    """SPEC 11 usage in the tools' snake_case."""
    return {
        "cpu_percent": usage.get("cpuPercent"),
        "cpu_seconds": usage.get("cpuSeconds"),
        "rss_bytes": usage.get("rssBytes"),
        "peak_rss_bytes": usage.get("peakRssBytes"),
        "processes": usage.get("processes"),
    }


async def _wait_exit(client: ExecClient, process_id: str, seconds: float) -> None:
    """Until it exits or `seconds` pass (`client.wait` raises the builtin TimeoutError)."""
    with contextlib.suppress(TimeoutError):
        await client.wait(process_id, timeout=seconds)


@contextlib.asynccontextmanager
async def _tool_errors() -> AsyncIterator[None]:
    """Server errors and a lost connection become one-sentence tool errors."""
    try:
        yield
    except ExecError as exc:
        raise ToolError(exc.message) from None
    except ConnectionLostError as exc:
        raise ToolError(f"lost the jupyter-exec server ({exc}); try again") from None
