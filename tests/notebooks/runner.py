"""Run a notebook in a kernel that a real Jupyter server started, with nbclient.

nbclient normally starts its own kernel. Here the kernel is the one a user
would get: the Jupyter server creates it for a session (POST api/sessions), so
it has ``JPY_PARENT_PID`` and the magics and ``find_server()`` find that
server exactly as in JupyterLab. nbclient only gets a client for the kernel's
channels and a stand-in kernel manager (``ServerKernel``) that forwards
interrupts to the server's REST API; whether the kernel is alive is asked of
the server too (heartbeats miss beats on a busy CI machine).

A cell tagged ``restart-kernel`` restarts the kernel through the server before
it runs, as the reader is asked to do there; the cells after it start from an
empty namespace, which is what proves that processes outlive the kernel.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous.client import AsyncKernelClient
from nbclient import NotebookClient

from tests.magics.jupyter_process import JupyterServer

RESTART_TAG = "restart-kernel"


class ServerKernelClient(AsyncKernelClient):
    """A kernel client that asks the server whether the kernel lives (see `is_alive`)."""

    server_kernel: ServerKernel

    async def _async_is_alive(self) -> bool:
        return await self.server_kernel.is_alive()

    is_alive = _async_is_alive


class ServerKernel:
    """What nbclient needs of a kernel manager, for a kernel the server owns."""

    has_kernel = True  # nbclient must not start one of its own

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        self.server = server
        self.kernel_id = kernel_id

    async def is_alive(self) -> bool:
        """Asks the server: heartbeats (nbclient's default check) miss beats on a busy machine."""
        try:
            model = await asyncio.to_thread(
                self.server.request, "GET", f"api/kernels/{self.kernel_id}"
            )
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise
        return bool(model.get("execution_state") != "dead")

    async def shutdown_kernel(self, now: bool = False) -> None:
        """The server shuts the kernel down with its session."""

    async def cleanup_resources(self) -> None:
        pass

    async def interrupt_kernel(self) -> None:  # nbclient calls this when a cell times out
        await asyncio.to_thread(
            self.server.request, "POST", f"api/kernels/{self.kernel_id}/interrupt"
        )

    async def restart_kernel(self) -> None:
        await asyncio.to_thread(
            self.server.request, "POST", f"api/kernels/{self.kernel_id}/restart"
        )

    async def connect(self) -> AsyncKernelClient:
        """A client for the kernel's channels (after a restart too: same connection file)."""
        path = self.server.runtime_dir / f"kernel-{self.kernel_id}.json"
        deadline = time.monotonic() + 30
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no connection file {path}")
            await asyncio.sleep(0.1)
        kc = ServerKernelClient(connection_file=str(path))
        kc.server_kernel = self
        kc.load_connection_file()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        return kc


async def run_notebook(
    server: JupyterServer, path: Path, *, cell_timeout: float = 60
) -> nbformat.NotebookNode:
    """Execute ``path`` (inside the server's root) top to bottom; raise on any cell error.

    Returns the executed notebook (outputs filled in). nbclient raises
    ``CellExecutionError`` naming the cell and its traceback.
    """
    nb = nbformat.read(path, as_version=4)
    relative = path.relative_to(server.root_dir).as_posix()
    session = await asyncio.to_thread(
        server.request,
        "POST",
        "api/sessions",
        {"path": relative, "type": "notebook", "name": path.name, "kernel": {"name": "python3"}},
    )
    kernel = ServerKernel(server, session["kernel"]["id"])
    kc = await kernel.connect()
    client = NotebookClient(
        nb,
        km=kernel,  # type: ignore[arg-type]
        timeout=cell_timeout,
        allow_errors=False,
        record_timing=True,
    )
    client.kc = kc
    try:
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                if RESTART_TAG in cell.get("metadata", {}).get("tags", []):
                    client.kc.stop_channels()  # type: ignore[union-attr]
                    await kernel.restart_kernel()
                    client.kc = await kernel.connect()
                await client.async_execute_cell(
                    cell, index, execution_count=client.code_cells_executed + 1
                )
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        await asyncio.to_thread(server.request, "DELETE", f"api/sessions/{session['id']}")
    return nb


def error_outputs(nb: Any) -> list[str]:
    """Tracebacks left in outputs (nbclient raises first; this is a second check)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append("\n".join(output.get("traceback", [])))
    return found
