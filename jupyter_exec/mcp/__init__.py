"""The MCP face for agents (SPEC 10), on the official `mcp` SDK.

`tools` defines the seven tools over an `ExecClient`, `bounded` keeps their
output within a model's context, `stdio` is ``jupyter-exec mcp``. The HTTP
endpoint inside Jupyter Server is `jupyter_exec.jupyter.mcp_http`.
"""

__all__: list[str] = []
