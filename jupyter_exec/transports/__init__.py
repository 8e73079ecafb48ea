"""Transports that serve an `ExecService`: websockets (`ws_front`) and the standalone server.

`serve` is `jupyter-exec serve --listen ws://... | stdio`; `ws_front` serves
one websocket connection, for the standalone server and for the websockets
the Jupyter extension hands to the exec daemon alike.
"""

__all__: list[str] = []
