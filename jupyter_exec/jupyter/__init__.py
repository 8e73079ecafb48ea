"""The Jupyter Server face: the extension app, its handlers, and its link to the daemon.

`app` is the ExtensionApp (traits, lifecycle), `handlers` authenticate and
authorize each request, then hand the websocket to the exec daemon or relay
it (`relay`), and `mcp_http` serves the MCP tools over streamable HTTP.
tornado and jupyter_server are imported here and nowhere below.
"""

__all__: list[str] = []
