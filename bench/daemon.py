"""Spawn -> closed of `true`: the standalone server vs Jupyter and its exec daemon.

    python bench/daemon.py [--spawns 200] [--rounds 3]

Inside Jupyter the websocket is handed to the daemon (frames go straight to
it); with `relay_websockets` (and under TLS) they take a hop more (websocket
-> Jupyter -> unix socket -> daemon and back). Targets: at most +3 ms per
spawn over the standalone server (issue 13), at most 2x it (issue 12). Rounds alternate the two so
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

    def __init__(self, *extra: str) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="jx-bench-"))
        (tmp / "root").mkdir()
        self.runtime = tmp / "runtime"
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {"JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "cfg")}
        cmd = [
            str(BIN / "jupyter-server"), "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={tmp / 'root'}",
            '--ServerApp.jpserver_extensions={"jupyter_exec": True}', *extra,
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
    from jupyter_exec.client.unix_transport import daemon_front, open_daemon
    from jupyter_exec.daemon import paths

    front = daemon_front("bench/daemon.py")
    client = UnixClient(await open_daemon(paths.socket_path(runtime), front=front))
    client.start_reading()
    await client.handshake()
    return client


async def spawn_ms(driver: Driver, n: int) -> float:
    await measure_spawn(driver, 3)  # warm-up
    return await measure_spawn(driver, n)


async def main_async(spawns: int, rounds: int) -> None:
    standalone: Running = await launch(our_server(), "ws")
    handing, relaying = Jupyter(), Jupyter("--ExecExtensionApp.relay_websockets=True")
    handed, relayed = await handing.client(), await relaying.client()
    unix = await unix_client(handing.runtime)
    assert isinstance(standalone.client, WsClient)
    drivers = [Driver(standalone.client), Driver(handed), Driver(relayed), SocketDriver(unix)]
    medians: list[list[float]] = [[] for _ in drivers]
    try:
        for _ in range(rounds):
            for driver, got in zip(drivers, medians, strict=True):
                got.append(await spawn_ms(driver, spawns))
    finally:
        await unix.aclose()
        await handed.aclose()
        await relayed.aclose()
        await standalone.stop()
        handing.stop()
        relaying.stop()
    a, b, c, d = (statistics.median(x) for x in medians)
    print(
        "| spawn -> closed, `true` (median ms) | standalone ws | Jupyter, handed over "
        "| Jupyter, relayed | daemon socket, direct |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {spawns} spawns x {rounds} rounds | {a:.2f} | {b:.2f} ({b - a:+.2f}, {b / a:.2f}x) "
        f"| {c:.2f} ({c - a:+.2f}) | {d:.2f} |"
    )
    rows = zip(*medians, strict=True)
    print(
        "rounds (ws/handed/relayed/socket):",
        ", ".join("/".join(f"{x:.2f}" for x in row) for row in rows),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spawns", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    asyncio.run(main_async(args.spawns, args.rounds))


if __name__ == "__main__":
    main()
