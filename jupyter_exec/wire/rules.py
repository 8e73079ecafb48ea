"""A front's rules (SPEC 3): what a deployment configures per server, sent with each connection.

One user's exec daemon serves every front of that user: several Jupyter
servers with different roots, the standalone server, the CLI, the magics, the
MCP face. So what used to be the daemon's configuration, taken from whoever
started it, is now the front's: each connection carries its `FrontRules` (the
daemon hello, the handover header, the relay's hello) and the daemon applies
them to every request of that connection (`rpc.context.CallContext.rules`).
In-process services (the standalone server, embedded registries) give their
connections the same object, so there is one code path.

To add a rule: a field below, its camelCase name in `to_wire`/`from_wire`, and its use
where a request is served (`core.front_root` for paths and processes,
`core.registry.Registry.start` for the child). Unknown wire fields are ignored,
so an older daemon accepts a newer front's hello.

Plain data, no I/O (`here` reads this process's environment and cwd).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExecError
from .models import Lifetime
from .sandbox import SandboxPolicy, parse_setting

__all__ = ["DEFAULT_MAX_PROCESSES", "FrontRules"]


#: `max_processes` when a front names none (SPEC 4).
DEFAULT_MAX_PROCESSES = 256


@dataclass(frozen=True)
class FrontRules:
    #: Who the rules come from, as errors name it: "Jupyter server http://127.0.0.1:8888/".
    #: Processes are counted against `max_processes` per name.
    name: str
    #: Where a missing or relative `cwd` and relative `fs/*` paths resolve (absolute).
    root_dir: Path
    #: Keep process cwds, `fs/*` paths and the processes this front sees inside `root_dir`.
    confine_to_root: bool = False
    #: Most processes started through this front running at once.
    max_processes: int = DEFAULT_MAX_PROCESSES
    #: SPEC 3: "connection" for the standalone server, "detached" for Jupyter.
    default_lifetime: Lifetime = "connection"
    #: The base environment of children (SPEC 4 `env`, `inheritEnv`, `envPolicy`): the
    #: front's own. None: the environment of the process serving the request.
    env: Mapping[str, str] | None = field(default=None, repr=False)
    #: The sandbox of every process, and of what agents start (MCP, Codex clients), as
    #: `MODE[:network-off]` (wire/sandbox.py `parse_setting`; docs/sandbox.md).
    default_sandbox: str = "none"
    agent_sandbox: str = "workspace-write"
    #: SPEC 11: `{base_url}proxy/` of a Jupyter server with jupyter-server-proxy, so
    #: that listed ports carry the URL reaching them through it. None: no URLs.
    proxy_base_url: str | None = None

    def sandbox_policies(self, agent: bool) -> dict[str, SandboxPolicy]:
        """The policies a start through this front runs under, by setting name."""
        policies = {"default_sandbox": parse_setting(self.default_sandbox, "default_sandbox")}
        if agent:
            policies["agent_sandbox"] = parse_setting(self.agent_sandbox, "agent_sandbox")
        return policies

    def describe(self) -> str:
        """The front and its root, for messages: "Jupyter server http://... (root /r)"."""
        return f"{self.name} (root {self.root_dir})"

    @classmethod
    def here(cls, name: str, root_dir: Path | None = None, **rules: Any) -> FrontRules:
        """The rules of a front running in this process: its cwd (or `root_dir`), its env."""
        root = (root_dir or Path.cwd()).expanduser().resolve()
        return cls(name=name, root_dir=root, env=dict(os.environ), **rules)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "rootDir": str(self.root_dir),
            "confineToRoot": self.confine_to_root,
            "maxProcesses": self.max_processes,
            "defaultLifetime": self.default_lifetime,
            "defaultSandbox": self.default_sandbox,
            "agentSandbox": self.agent_sandbox,
        }
        if self.env is not None:
            wire["env"] = dict(self.env)
        if self.proxy_base_url is not None:
            wire["proxyBaseUrl"] = self.proxy_base_url
        return wire

    @classmethod
    def from_wire(cls, data: object) -> FrontRules:
        """Validate a hello's `front`; ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("front must be an object")
        name, root = data.get("name"), data.get("rootDir")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("front.name must be a non-empty string")
        if not isinstance(root, str) or not os.path.isabs(root):
            raise ValueError("front.rootDir must be an absolute path")
        confine = data.get("confineToRoot", False)
        if not isinstance(confine, bool):
            raise ValueError("front.confineToRoot must be true or false")
        limit = data.get("maxProcesses", DEFAULT_MAX_PROCESSES)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError("front.maxProcesses must be an integer >= 0")
        lifetime = data.get("defaultLifetime", "connection")
        if lifetime not in ("connection", "detached"):
            raise ValueError('front.defaultLifetime must be "connection" or "detached"')
        sandboxes = {}
        for key, default in (("defaultSandbox", "none"), ("agentSandbox", "workspace-write")):
            sandboxes[key] = value = data.get(key, default)
            try:
                parse_setting(value if isinstance(value, str) else "", f"front.{key}")
            except ExecError as exc:
                raise ValueError(exc.message) from None
        env = data.get("env")
        if env is not None and not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise ValueError("front.env must be an object of strings")
        proxy = data.get("proxyBaseUrl")
        if proxy is not None and not isinstance(proxy, str):
            raise ValueError("front.proxyBaseUrl must be a string")
        return cls(
            name=name,
            root_dir=Path(os.path.normpath(root)),
            confine_to_root=confine,
            max_processes=limit,
            default_lifetime="detached" if lifetime == "detached" else "connection",
            env=env,
            default_sandbox=sandboxes["defaultSandbox"],
            agent_sandbox=sandboxes["agentSandbox"],
            proxy_base_url=proxy,
        )
