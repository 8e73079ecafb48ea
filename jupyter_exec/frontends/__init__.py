"""What people use: the IPython magics and the ``jupyter exec`` CLI, and what they share.

`magics` is the only module of the package that imports IPython; `cli` and
`cli_daemon` are ``jupyter exec``; `handle`, `view`, `terminal_stream` and
`connection` are the notebook side; `frontend` and `limit_options` what both
faces share; `bridge` relays stdio to a websocket.
"""
