"""The wire: what travels between a client and the exec server, as plain data (no I/O).

Errors and their JSON-RPC codes (`errors`), process models (`models`), the
schema of every result and notification (`schema`), registry events
(`events`), the pydantic params of the server side (`protocol`), JSON
encoding (`codec`), newline framing (`lines`), a front's rules (`rules`)
and sandbox policies (`sandbox`). Every
other layer imports this one; it imports none of them. Importing the package
loads nothing: a client takes `errors`, `models`, `schema` and `events` and
never pays for pydantic.
"""

__all__: list[str] = []
