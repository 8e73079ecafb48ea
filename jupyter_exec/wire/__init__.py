"""The wire: what travels between a client and the exec server, as plain data (no I/O).

Errors and their JSON-RPC codes, process models, the schema of every result
and notification, registry events, the pydantic params of the server side
(`protocol`), JSON encoding (`codec`) and newline framing (`lines`). Every
other layer imports this one; it imports none of them. Importing the package
loads nothing: a client takes `errors`, `models`, `schema` and `events` and
never pays for pydantic.
"""
