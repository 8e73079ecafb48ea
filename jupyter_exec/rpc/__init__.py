"""The method table over the core: JSON-RPC requests in, results and notifications out.

`dispatch` holds the service and its connections; the method families
(`process_methods`, `fs_methods`, `environment`) plug into its table and
never import it back. `sessions` routes registry events to subscribers, and
`outbox` writes each connection's responses and output cursors. `context` is
what a handler is given. Beside ``fs/*`` (`fs_methods`), `fs_stream` streams
files and `fs_walk` lists trees; `discovery` answers capability discovery,
`http_methods` makes ``http/request``, and `network_proxy` gives a command
its managed proxy (`transparent_tcp` routes all its TCP through it).
`service` is the one composition root that builds a registry and its
service. No transport here: the fronts feed frames in and
take frames out.
"""

__all__: list[str] = []
