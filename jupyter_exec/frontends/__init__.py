"""What people use: the IPython magics and the ``jupyter exec`` CLI, and what they share.

`magics` is the only module of the package that imports IPython; `cli`,
`cli_daemon` and `cli_wait` are ``jupyter exec``; `handle`, `view`,
`terminal_stream` and `connection` are the notebook side; `shared` and
`limit_options` what both faces share; `bridge` relays stdio to a websocket.
"""

__all__: list[str] = []
