"""The core: processes and their output (asyncio only; no tornado, no IPython).

`child` spawns PTY and pipe children, `process` numbers their output and
follows their exit, `output` keeps it in memory and in a log, `registry`
holds them all; `proctree`, `guardian`, `limits` and `confinement` are the
rules around them; `tasks` gives background tasks an owner; `linux` refuses
to start anywhere else. The core knows nothing of connections or clients: it
publishes events, and whoever listens is the rpc layer's business.
"""
