"""The exec daemon: the long-lived process that owns the processes (SPEC 3 Durability).

The seam of the house: this package plus the registry side it runs
(`core/`: registry, process, child, output, guardian) is what lives on when
a Jupyter server stops or crashes; the Jupyter extension and the other fronts
authenticate, then hand client websockets to it or relay to it over a unix
socket (docs/daemon.md).

- `paths`: where a daemon's socket, lock, record, log and state live (no I/O
  beyond names; the fronts import it cheaply).
- `sockets`: its unix sockets: bind 0600, connect, the peer's uid and pid.
- `start`: start one on demand, racing starters safely (a lock file).
- `control`: talk to a running one from outside: one call, a stop (its
  processes stay), a shutdown (they end too).
- `server`: the daemon itself: the socket, the handshake, idle exit, shutdown.
- `handover`: client websockets the Jupyter extension passes over (SCM_RIGHTS).
- `persist`: per-process records, so the next daemon lists what a dead one
  left as lost, with output readable.
- `holder`: a tiny process that keeps the children alive across daemon
  restarts; `holding`: the daemon's side of it (its link, adoption).
"""

__all__: list[str] = []
