"""Shell snapshots: Codex's `shellSnapshotV2` (`process/start` `shellSnapshot`; docs/codex.md).

Codex runs each command as ``SHELL -lc CMD``, so every command sources the
user's login profile again. With ``shellSnapshot: {scopeId, shell: {name,
path}}`` its own exec-server (0.171, recorded in docs/codex.md) instead:

- captures once per scope: the command's shell, as a login shell, in the
  command's cwd, environment and sandbox, sources the profile and the
  interactive startup file (bash: ``~/.bashrc`` unless ``BASH_ENV`` is set;
  zsh: ``$ZDOTDIR/.zshrc``; sh: ``$ENV``), then prints its state: shell
  options, functions, aliases and the exported environment;
- replays it on every command of that scope: the shell starts without its
  startup files (bash ``-p``, zsh ``-f``), evaluates the state, then runs
  the command. The environment is the command's own, overlaid by the
  snapshot's, overlaid again by what the request's ``env`` names
  (`_replay_env`). The cwd and umask are the command's, not the profile's,
  and what the profile prints is not replayed.

A scope is the request's ``scopeId`` and shell with the command's cwd,
``envPolicy`` and ``sandbox``; each session keeps at most `MAX_SNAPSHOTS`,
least recently used first out, in memory only (nothing on disk to tamper
with). A failed capture (non-zero exit, over `CAPTURE_TIMEOUT`, output over
`MAX_CAPTURE_BYTES`) runs the command as asked and is tried again after
`RETRY_SECONDS`, at most `MAX_ATTEMPTS` times per scope. Only a command whose
argv is ``[shell.path, "-lc", CMD, ...]`` is changed; others run as asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..wire.errors import ExecError, InvalidParamsError
from ..wire.protocol import Params, StartParams, parse_params
from ..wire.rules import FrontRules
from ..wire.sandbox import SandboxPolicy
from .child import build_env, resolve_program
from .front_root import resolve_cwd
from .registry import Registry

__all__ = [
    "CAPTURE_TIMEOUT",
    "CHUNK_BYTES",
    "MAX_ATTEMPTS",
    "MAX_CAPTURE_BYTES",
    "MAX_SCOPE_BYTES",
    "MAX_SNAPSHOTS",
    "MAX_STATE_BYTES",
    "PROXY_ACTIVE",
    "RETRY_SECONDS",
    "STATE_VAR",
    "ShellInfo",
    "ShellSnapshotRequest",
    "Snapshot",
    "Snapshots",
    "parse",
    "prepare",
    "snapshots_of",
]


MAX_SNAPSHOTS = 16
MAX_SCOPE_BYTES = 256
MAX_STATE_BYTES = 512 * 1024
MAX_CAPTURE_BYTES = 8 * MAX_STATE_BYTES
CAPTURE_TIMEOUT = 10.0
RETRY_SECONDS = 1.0
MAX_ATTEMPTS = 3
#: The state travels to the replaying shell in environment variables of this size.
CHUNK_BYTES = 60 * 1024
STATE_VAR = "__CODEX_SHELL_SNAPSHOT_STATE_"
#: Set by a managed network proxy; a snapshot taken under one drops that proxy's variables.
PROXY_ACTIVE = "CODEX_NETWORK_PROXY_ACTIVE"
#: Never replayed: the shell's own bookkeeping, which the replaying shell sets itself.
_NOT_REPLAYED = ("PWD", "OLDPWD", "_")


class ShellInfo(Params):
    name: str
    path: str


class ShellSnapshotRequest(Params):
    scope_id: str
    shell: ShellInfo


class _Carrier(Params):
    shell_snapshot: ShellSnapshotRequest | None = None


def parse(params: Any) -> ShellSnapshotRequest | None:
    """The request's `shellSnapshot` (None: none), -32602 as Codex answers a bad one."""
    carried = params.get("shellSnapshot") if isinstance(params, dict) else None
    request = parse_params(_Carrier, {"shellSnapshot": carried}).shell_snapshot
    if request is not None and not 0 < len(request.scope_id.encode()) <= MAX_SCOPE_BYTES:
        raise InvalidParamsError(
            f"shell snapshot scope must be non-empty and at most {MAX_SCOPE_BYTES} bytes"
        )
    return request


@dataclass
class Snapshot:
    """What a capture found: the state to evaluate and the environment to start with."""

    state: str
    env: dict[str, str]


@dataclass
class _Entry:
    attempts: int = 1
    task: asyncio.Task[Snapshot | None] | None = None
    #: After a failed capture: when the next attempt may start.
    retry_at: float = 0.0


@dataclass
class Snapshots:
    """One session's snapshots by scope, most recently used last."""

    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)


_BY_OWNER: weakref.WeakKeyDictionary[object, Snapshots] = weakref.WeakKeyDictionary()


def snapshots_of(owner: object) -> Snapshots:
    """The snapshots of one session (`owner`); they go when it goes."""
    found = _BY_OWNER.get(owner)
    if found is None:
        found = _BY_OWNER[owner] = Snapshots()
    return found


async def prepare(
    owner: object,
    registry: Registry,
    params: StartParams,
    raw: Any,
    rules: FrontRules,
    policies: Sequence[SandboxPolicy | None],
) -> StartParams:
    """`params` as they should run: replaying the scope's snapshot when it applies."""
    request = parse(raw)
    argv = params.argv
    if request is None or len(argv) < 3 or argv[0] != request.shell.path or argv[1] != "-lc":
        return params
    kind = request.shell.name
    if kind not in _SCRIPTS:
        raise InvalidParamsError(f"shell snapshots are unsupported for shell `{kind}`")
    cwd = resolve_cwd(params.cwd, rules)
    base = os.environ if rules.env is None else rules.env
    env = build_env(params.env, params.inherit_env, params.env_policy, base)
    key = json.dumps(
        [request.model_dump(), cwd, params.env_policy and params.env_policy.model_dump(),
         raw.get("sandbox") if isinstance(raw, dict) else None],
        sort_keys=True,
    )  # fmt: skip
    cache = snapshots_of(owner)
    entry = cache.entries.pop(key, None)
    if entry is None:
        entry = _Entry()
    elif _failed(entry) and entry.attempts < MAX_ATTEMPTS and time.monotonic() >= entry.retry_at:
        entry.attempts += 1
        entry.task, entry.retry_at = None, 0.0
    cache.entries[key] = entry
    while len(cache.entries) > MAX_SNAPSHOTS:  # a capture under way still ends (its timeout)
        cache.entries.popitem(last=False)
    if entry.task is None:
        capture = _capture(registry, params, kind, cwd, dict(env), rules, policies)
        entry.task = asyncio.ensure_future(capture)
    snapshot = await asyncio.shield(entry.task)
    if snapshot is None:
        entry.retry_at = entry.retry_at or time.monotonic() + RETRY_SECONDS
        return params
    return params.model_copy(
        update={
            "argv": [argv[0], _FLAGS[kind], _replay_script(kind, snapshot.state, argv[2]),
                     *argv[3:]],
            "env": _replay_env(env, snapshot, params.env or {}, params.tty),
            "inherit_env": False,
            "env_policy": None,
        }
    )  # fmt: skip


def _failed(entry: _Entry) -> bool:
    return entry.task is not None and entry.task.done() and entry.task.result() is None


def _replay_env(
    env: Mapping[str, str], snapshot: Snapshot, asked: Mapping[str, str], tty: bool
) -> dict[str, str]:
    """The command's environment, the snapshot's over it, what the request named over that,
    and the state in chunks (the replaying shell unsets them before the command runs)."""
    result = {**env, **snapshot.env, **{name: env[name] for name in asked if name in env}}
    if tty and "TERM" not in asked:
        result.pop("TERM", None)  # SPEC 4: a tty child's own TERM, as without a snapshot
    for index, chunk in enumerate(_chunks(snapshot.state)):
        result[f"{STATE_VAR}{index}"] = chunk
    return result


def _chunks(state: str) -> list[str]:
    """`state` in pieces of at most `CHUNK_BYTES` of UTF-8, never splitting a character."""
    data, pieces, start = state.encode(), [], 0
    while start < len(data):
        end = min(len(data), start + CHUNK_BYTES)
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def _replay_script(kind: str, state: str, command: str) -> str:
    chunks = range(len(_chunks(state)))
    names = " ".join(f"{STATE_VAR}{i}" for i in chunks)
    values = "".join(f"${{{STATE_VAR}{i}}}" for i in chunks)
    restore = f'eval "unset {names}\n{values}"'
    return (
        f"{_STARTUP_RESTORE[kind]}if ! {restore} >/dev/null; then "
        f"printf 'failed to restore shell snapshot\\n' >&2; fi\n{command}"
    )


# -- capture ---------------------------------------------------------------------------


async def _capture(
    registry: Registry,
    params: StartParams,
    kind: str,
    cwd: str,
    env: dict[str, str],
    rules: FrontRules,
    policies: Sequence[SandboxPolicy | None],
) -> Snapshot | None:
    """Run the profile once in the command's shell, cwd, environment and sandbox; None when
    that fails (then the start itself runs as asked, and says what is wrong with it)."""
    marker = f"JUPYTER_EXEC_SNAPSHOT_{uuid.uuid4().hex}"
    script = f"{_STARTUP[kind]}\nprintf '\\0%s\\0' {marker}\n{_SCRIPTS[kind]}"
    try:
        executable = resolve_program(params.argv[0], cwd, env)
        box = registry.sandbox_for(policies, cwd, env, rules)
    except ExecError:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            params.arg0 or params.argv[0], "-lc", script, executable=executable, cwd=cwd,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=box.preexec if box else None, pass_fds=box.keep_fds if box else (),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        if box is not None:
            box.close()
    try:
        assert proc.stdout is not None
        output = await asyncio.wait_for(_read_capped(proc), CAPTURE_TIMEOUT)
    except asyncio.TimeoutError:
        output = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what the profile left running, too
        await proc.wait()
    if output is None or proc.returncode != 0:
        return None
    return _parse(output, marker.encode(), params)


async def _read_capped(proc: asyncio.subprocess.Process) -> bytes | None:
    assert proc.stdout is not None
    output = await proc.stdout.read(MAX_CAPTURE_BYTES + 1)
    while len(output) <= MAX_CAPTURE_BYTES:
        more = await proc.stdout.read(MAX_CAPTURE_BYTES + 1 - len(output))
        if not more:
            await proc.wait()
            return output
        output += more
    return None


def _parse(output: bytes, marker: bytes, params: StartParams) -> Snapshot | None:
    """`\\0MARKER\\0` state `\\0` aliases `\\0` NAME=VALUE `\\0` ... (what the profile
    printed before the marker is dropped, as Codex drops it)."""
    _, found, captured = output.partition(b"\0" + marker + b"\0")
    parts = captured.split(b"\0", 2)
    if not found or len(parts) != 3:
        return None
    state_b, aliases_b, env_b = parts
    state = (state_b + aliases_b + b"true\n").decode(errors="replace")
    if len(state.encode()) + len(env_b) > MAX_STATE_BYTES:
        return None
    env: dict[str, str] = {}
    for record in env_b.split(b"\0"):
        name, sep, value = record.decode(errors="replace").partition("=")
        if sep and name and name not in _NOT_REPLAYED and not name.startswith(STATE_VAR):
            env[name] = value
    if PROXY_ACTIVE in env:  # the capture's own managed proxy: each command gets its own
        env = {k: v for k, v in env.items() if not _proxy_variable(k)}
    if params.env_policy is not None:  # the policy's excludes hold for what the profile set
        env = build_env(None, False, params.env_policy.model_copy(update={"inherit": "all"}), env)
    return Snapshot(state, env)


def _proxy_variable(name: str) -> bool:
    """A variable a managed network proxy sets (Codex's `networkProxy`: `HTTP_PROXY`,
    `npm_config_proxy`, `NODE_USE_ENV_PROXY`, `CODEX_NETWORK_*`, ...)."""
    return "PROXY" in name.upper() or name.startswith("CODEX_NETWORK_")


#: The interactive startup file each shell's capture sources after the login profile.
_STARTUP = {
    "bash": 'if [ -z "${BASH_ENV-}" ] && [ -n "${HOME-}" ] && [ -r "$HOME/.bashrc" ]; then\n'
    '  . "$HOME/.bashrc"\nfi',
    "zsh": 'if [ -r "${ZDOTDIR:-$HOME}/.zshrc" ]; then . "${ZDOTDIR:-$HOME}/.zshrc"; fi',
    "sh": 'if [ -n "${ENV-}" ]; then __jx_env=$(eval "printf %s \\"$ENV\\""); '
    'if [ -r "$__jx_env" ] && [ ! -d "$__jx_env" ]; then . "$__jx_env"; fi; '
    "unset __jx_env; fi",
}
_ENV_DUMP = "printf '\\0'\nenv -0 2>/dev/null || command -p env -0\n"
#: What each shell prints of itself: state, NUL, aliases, NUL, then `env -0`.
_SCRIPTS = {
    "bash": "unalias_line='unalias -a 2>/dev/null || true'; echo \"$unalias_line\"\n"
    "shopt -p || true\ndeclare -f\n"
    'set -o | while read -r o v; do [ "$v" = on ] && echo "set -o $o"; done\n'
    "printf '\\0'\nalias -p\n" + _ENV_DUMP,
    "zsh": "print 'unalias -a 2>/dev/null || true'\nfunctions\n"
    'setopt | while read -r o; do print "setopt $o"; done\n'
    "printf '\\0'\nalias -L\n" + _ENV_DUMP,
    "sh": "echo 'unalias -a 2>/dev/null || true'\n"
    "if command -v typeset >/dev/null 2>&1; then typeset -f; fi\n"
    'set -o 2>/dev/null | while read -r o v; do [ "$v" = on ] && echo "set -o $o"; done\n'
    "printf '\\0'\nalias 2>/dev/null | sed 's/^/alias /'\n" + _ENV_DUMP,
}
#: How the replaying shell starts without its startup files, and undoes the flag first.
_FLAGS = {"bash": "-pc", "zsh": "-fc", "sh": "-c"}
_STARTUP_RESTORE = {"bash": "set +o privileged\n", "zsh": "setopt RCS\n", "sh": ""}
