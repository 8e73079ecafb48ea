"""How processes look to people: a small terminal emulator, status lines, HTML tables.

Plain functions over `ProcessInfo` and output bytes, no I/O: the CLI, the
magics and the MCP tools share them.
"""
