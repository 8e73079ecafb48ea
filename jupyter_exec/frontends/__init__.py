"""What people use: the IPython magics and the ``jupyter exec`` CLI, and what they share.

`magics` is the only module of the package that imports IPython; `cli`,
`cli_daemon`, `cli_logs`, `cli_wait` and `cli_queue` are ``jupyter exec``
(`detach_keys` its attach keys); `handle`, `view`, `terminal_stream` and `connection` are the
notebook side; `shared`, `limit_options` and `schedule_options` what both
faces share; `bridge` relays stdio to a websocket.
"""

__all__: list[str] = []
