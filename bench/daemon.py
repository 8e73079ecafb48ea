"""Spawn -> closed of `true`: the standalone server vs Jupyter relaying to the exec daemon.

    python bench/daemon.py [--spawns 200] [--rounds 3]

The relay adds a hop (websocket -> Jupyter -> unix socket -> daemon and back);
the target is at most +3 ms per spawn (issue 13). Rounds alternate the two so
machine noise hits both alike; the table shows each side's median of medians.
Everything started here is stopped here (the daemon by `api/exec/shutdown`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Driver, Running, WsClient, launch, measure_spawn, our_server

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Jupyter:
    """A `jupyter server` with the extension, on a temporary runtime dir."""

    def __init__(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="jx-bench-"))
        (tmp / "root").mkdir()
        self.runtime = tmp / "runtime"
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {"JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "cfg")}
        cmd = [
            str(BIN / "jupyter-server"), "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={tmp / 'root'}",
            '--ServerApp.jpserver_extensions={"jupyter_exec": True}',
        ]  # fmt: skip
        import os

        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.post("api/exec/processes", {"processId": "warm", "argv": ["true"]})
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("jupyter server did not start") from None
                time.sleep(0.2)

    def post(self, path: str, body: object) -> object:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.loads(response.read() or b"null")

    async def client(self) -> WsClient:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{self.port}/api/exec/ws"
        headers = {"Authorization": f"token {self.token}"}
        ws = await connect(url, additional_headers=headers, max_size=None, compression=None)
        client = WsClient(ws)
        client.start_reading()
        await client.handshake()
        return client

    def stop(self) -> None:
        self.post("api/exec/shutdown", {})
        self.proc.terminate()
        self.proc.wait(30)


class UnixClient(WsClient):
    """The daemon's socket, straight (as the CLI with no server up): lines, not frames."""

    def __init__(self, streams: Any) -> None:
        super().__init__(streams)
        self.streams = streams

    async def _send_text(self, text: str) -> None:
        self.streams.writer.write(text.encode() + b"\n")
        await self.streams.writer.drain()

    async def _frames(self) -> Any:
        while line := await self.streams.reader.readline():
            yield line

    async def aclose(self) -> None:
        self.streams.writer.close()


class SocketDriver(Driver):
    """Ids of its own: the relay's driver talks to the same daemon."""

    def new_id(self) -> str:
        return "socket-" + super().new_id()


async def unix_client(runtime: Path) -> UnixClient:
    from jupyter_exec.daemon import paths
    from jupyter_exec.unix_transport import open_daemon

    client = UnixClient(await open_daemon(paths.socket_path(runtime)))
    client.start_reading()
    await client.handshake()
    return client


async def spawn_ms(driver: Driver, n: int) -> float:
    await measure_spawn(driver, 3)  # warm-up
    return await measure_spawn(driver, n)


async def main_async(spawns: int, rounds: int) -> None:
    standalone: Running = await launch(our_server(), "ws")
    jupyter = Jupyter()
    relay = await jupyter.client()
    unix = await unix_client(jupyter.runtime)
    assert isinstance(standalone.client, WsClient)
    try:
        ours, relayed, socket_only = [], [], []
        direct, relaying, on_socket = Driver(standalone.client), Driver(relay), SocketDriver(unix)
        for _ in range(rounds):
            ours.append(await spawn_ms(direct, spawns))
            relayed.append(await spawn_ms(relaying, spawns))
            socket_only.append(await spawn_ms(on_socket, spawns))
    finally:
        await unix.aclose()
        await relay.aclose()
        await standalone.stop()
        jupyter.stop()
    a, b, c = (statistics.median(x) for x in (ours, relayed, socket_only))
    print(
        "| spawn -> closed, `true` (median ms) | standalone ws | Jupyter relay -> daemon "
        "| relay - standalone | daemon socket, direct |"
    )
    print("|---|---|---|---|---|")
    print(f"| {spawns} spawns x {rounds} rounds | {a:.2f} | {b:.2f} | {b - a:+.2f} | {c:.2f} |")
    rows = zip(ours, relayed, socket_only, strict=True)
    print("rounds (ws/relay/socket):", ", ".join(f"{x:.2f}/{y:.2f}/{z:.2f}" for x, y, z in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spawns", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    asyncio.run(main_async(args.spawns, args.rounds))


if __name__ == "__main__":
    main()
