"""How processes look to people: a small terminal emulator, status lines, HTML tables.

`terminal` is the emulator (ANSI to HTML or text, progress collapsing),
`presentation` the text of status lines and ps tables, `html_render` their
HTML. Plain functions over `ProcessInfo` and output bytes, no I/O: the CLI,
the magics and the MCP tools share them.
"""

__all__: list[str] = []
