"""The core: processes and their output (asyncio only; no tornado, no IPython).

- `child` spawns PTY and pipe children; `process` numbers their output and
  follows their exit; `record` is a process as plain data (what the holder
  and the persister keep); `output` keeps output in memory and in a log
  (whose records `log_records` writes and reads);
  `retention` is one memory and one disk budget for all of it; `registry`
  holds them all, `launch` is a checked start that each run spawns from, and
  `scheduler` restarts, queues and orders them (SPEC 11).
- Rules around them: `proctree` (find and kill a tree), `guardian` (kills
  what a crashed server left), `limits` (rlimits, timeouts), `front_root`
  (a front's root and ``confine_to_root``), `usage` (ports and cost).
- Sandboxes: `sandbox` builds confined children, on `landlock` (syscalls
  through ctypes), `pidns` (their own PID namespace and /proc) and
  `sandbox_net` (their own network, whose one way out is a proxy);
  `network_proxy` is the managed proxy a command may get, and
  `transparent_tcp` routes all of a sandbox's TCP into it;
  `credential_broker` masks a command's credentials, which `mitm` puts
  back into its HTTPS requests to their providers only.
- `shell_snapshot` captures a login shell's state for Codex; `heap` tunes
  glibc for the serving processes; `line_pump` reads newline frames off a
  stream (the framing itself is `wire.lines`); `tasks` gives background
  tasks an owner; `linux` refuses to start on any other OS.

The core knows nothing of connections or clients: it publishes events, and
whoever listens is the rpc layer's business.
"""

__all__: list[str] = []
