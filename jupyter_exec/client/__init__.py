"""Clients of an exec server: the Python client, the daemon's socket, discovery.

`exec_client` is `ExecClient` (asyncio) and `SyncExecClient`; its public
names are re-exported here, so ``from jupyter_exec.client import
SyncExecClient`` is the import the docs show. `unix_transport` connects to
the exec daemon's socket, `discovery` finds where a user's processes live.
A client of an in-process registry is `jupyter_exec.embedded`, above rpc/:
nothing here imports the server's modules, tornado, IPython or pydantic.
"""

from . import exec_client
from .exec_client import *  # noqa: F403  (the client's public names, listed once there)

__all__ = exec_client.__all__
