"""Real `jupyter server` processes and exec daemons, stopped by pids the tests prove are theirs."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_exec.core.proctree import ProcessRef
from jupyter_exec.daemon import paths, sockets
from tests.service import pid_alive, stop_process


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    #: For an https server: trusts its certificate.
    tls: ssl.SSLContext | None = None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=60, context=self.tls) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


def start_server(
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    tls: bool = False,
    root: Path | None = None,
) -> Server:
    """A `jupyter server` on `tmp/runtime` (shared by the servers of one test).

    `tls`: served over https with a certificate made for 127.0.0.1 here.
    `root`: its root_dir (default `tmp/root`), which is also its cwd.
    """
    from tests.magics.jupyter_process import BIN, clean_env
    from tests.service import free_port

    runtime, root = tmp / "runtime", root or tmp / "root"
    runtime.mkdir(exist_ok=True)
    root.mkdir(exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    server_env = env or clean_env(runtime)
    server_env["JUPYTER_CONFIG_DIR"] = str(tmp / "config")
    cmd = [
        str(BIN / "jupyter-server"), "--allow-root", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        '--ServerApp.jpserver_extensions={"jupyter_exec": True}', *extra,
    ]  # fmt: skip
    context = None
    if tls:
        cert, key = _certificate(tmp)
        cmd += [f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}"]
        context = ssl.create_default_context(cafile=str(cert))
    log = open(tmp / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=server_env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    log.close()
    server = Server(proc, f"{'https' if tls else 'http'}://127.0.0.1:{port}/", token, context)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.request("GET", "api/exec/processes")
            return server
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError((tmp / f"server-{port}.log").read_text()) from None
            time.sleep(0.1)


def _certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), valid one day."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def daemon_settings(monkeypatch: Any, config_dir: Path, **settings: object) -> None:
    """The user's daemon settings (`jupyter_exec_daemon.json`) for daemons started from
    now on by this process (`JUPYTER_CONFIG_DIR`, which the daemon inherits)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_exec_daemon.json").write_text(json.dumps(settings))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))


def daemon_pid(runtime: Path, protocol: int | None = None) -> int | None:
    """The pid the daemon recorded, if that pid is a live exec daemon of this runtime dir."""
    try:
        pid = int(json.loads(paths.record_path(runtime, protocol).read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    ours = b"jupyter_exec.daemon" in cmdline and os.fsencode(runtime) in cmdline
    return pid if ours else None


def wait_gone(pids: Iterable[int | ProcessRef], seconds: float = 20) -> bool:
    pids = list(pids)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def holder_pid(runtime: Path) -> int | None:
    """The pid of the holder listening in `runtime`, if that pid is a holder of it."""
    sock = sockets.connect(paths.holder_socket_path(runtime), 10, socket.SOCK_SEQPACKET)
    if sock is None:
        return None
    with sock:
        pid = sockets.peer(sock)[1]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    ours = b"jupyter_exec.daemon.holder" in cmdline and os.fsencode(runtime) in cmdline
    return pid if ours else None


def kill_daemon(runtime: Path) -> int:
    """SIGKILL the daemon; returns once its socket refuses (its last thread has exited:
    its main thread shows as a zombie a moment before the socket closes)."""
    from jupyter_exec.daemon.control import listening

    pid = daemon_pid(runtime)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not wait_gone([pid], 0.1) or listening(paths.socket_path(runtime)):
        assert time.monotonic() < deadline, f"exec daemon {pid} survived SIGKILL"
    return pid


def stop_daemon(runtime: Path, protocol: int | None = None) -> None:
    """Stop everything of `runtime`, verified gone: SIGTERM to the holder (its daemons,
    then every process it holds), and to a daemon without one (it stops its processes)."""
    for find in (holder_pid, lambda runtime: daemon_pid(runtime, protocol)):
        pid = find(runtime)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone([pid]):
            os.kill(pid, signal.SIGKILL)
            assert wait_gone([pid]), f"{pid} survived SIGKILL"


def stop_daemons_under(root: Path) -> None:
    """Stop every exec daemon and holder under `root` (test teardown)."""
    for record in root.rglob("jupyter-exec-d*.json"):
        protocol = record.stem.removeprefix("jupyter-exec-d")
        if protocol.isdigit():
            stop_daemon(record.parent, int(protocol))
    for holder in root.rglob("jupyter-exec-holder*.sock"):
        stop_daemon(holder.parent)


@contextmanager
def server_up(tmp: Path, *extra: str, tls: bool = False) -> Iterator[Server]:
    """`start_server`; afterwards the server and its runtime's daemon are stopped."""
    with daemons_stopped(tmp / "runtime"):
        server = start_server(tmp, *extra, tls=tls)
        try:
            yield server
        finally:
            stop_process(server.proc, 20)


@contextmanager
def daemons_stopped(runtime: Path, *protocols: int) -> Iterator[None]:
    """Whatever happens in the test, no daemon of `runtime` is left running."""
    try:
        yield
    finally:
        for protocol in protocols or (None,):
            stop_daemon(runtime, protocol)
