"""Running a real JupyterHub on loopback whose single-user servers load jupyter-exec.

One hub per module: JupyterHub (subprocess, generated config in a temp dir,
sqlite db there too), configurable-http-proxy (npm, installed into a cache
directory when missing), DummyAuthenticator, SimpleLocalProcessSpawner running
`jupyterhub-singleuser` from this venv, so the extension is enabled by the
installed `jupyter_server_config.d/jupyter_exec.json` exactly as for a user.
Only `b`'s server sets `JUPYTERHUB_ALLOW_TOKEN_IN_URL=1`.
Everything binds 127.0.0.1. A service token with an admin-ish role spawns the
users' servers and mints their API tokens through the hub's REST API.
Teardown: SIGTERM to the hub (which, with `cleanup_servers`/`cleanup_proxy`,
stops the user servers and the proxy), then SIGKILL to whatever is left: to the
hub's process group while the hub is unreaped, and to checked pids.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.npm_cache import npm_tool
from tests.service import free_ports

VENV_BIN = Path(sys.executable).parent
USERS = ("a", "b")
CHP_PACKAGE = "configurable-http-proxy@5"
STARTUP_SECONDS = 60.0


def install_chp() -> Path:
    """The `configurable-http-proxy` launcher: on PATH, or npm-installed into the cache."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return Path(found)
    return npm_tool("chp", CHP_PACKAGE, "configurable-http-proxy", timeout=300)


def jupyterhub_bin() -> Path:
    """`jupyterhub` from this venv; the `test` extra has it, else pip installs it now."""
    hub = VENV_BIN / "jupyterhub"
    if not (hub.exists() and (VENV_BIN / "jupyterhub-singleuser").exists()):
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "jupyterhub"]
        subprocess.run(pip, check=True, timeout=300)
    return hub


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # report a 30x as it is instead of following it


_opener = urllib.request.build_opener(_NoRedirect)


def http(
    method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 30
) -> tuple[int, Any]:
    """(status, decoded JSON body or raw text); errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


@dataclass
class Hub:
    process: subprocess.Popen[bytes]
    url: str  # the proxy's public URL, e.g. http://127.0.0.1:PORT/
    admin_token: str
    workdir: Path
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)
    server_pids: dict[str, int] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, data = http(method, self.url + "hub/api/" + path, token or self.admin_token, body)
        if status >= 400:
            raise RuntimeError(f"{method} hub/api/{path}: {status} {data}\n{self.log_tail()}")
        return data

    def user_url(self, name: str) -> str:
        return f"{self.url}user/{name}/"

    def log_tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def spawn(self, *names: str) -> None:
        """Start the users' servers (in parallel) and wait until each is ready."""
        for name in names:
            self.api("POST", f"users/{name}/server")
        deadline = time.monotonic() + STARTUP_SECONDS
        pending = set(names)
        while pending:
            for name in sorted(pending):
                server = self.api("GET", f"users/{name}")["servers"].get("", {})
                if server.get("ready"):
                    pending.discard(name)
                    pid = (server.get("state") or {}).get("pid")
                    if pid:
                        self.server_pids[name] = int(pid)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"servers {pending} not ready\n{self.log_tail()}")
            if pending:
                time.sleep(0.2)

    def stop_server(self, name: str) -> None:
        """What the idle culler does: stop a user's server through the hub API."""
        self.api("DELETE", f"users/{name}/server")
        deadline = time.monotonic() + STARTUP_SECONDS
        while self.api("GET", f"users/{name}")["servers"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server of {name} did not stop\n{self.log_tail()}")
            time.sleep(0.2)


def hub_config(workdir: Path, chp: Path, admin_token: str) -> tuple[str, str]:
    proxy_port, api_port, hub_port = free_ports(3)
    config = f"""
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.JupyterHub.db_url = "sqlite:///{workdir / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(workdir / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(workdir / "jupyterhub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.log_level = "INFO"
# POST /users/NAME/server answers 202 at once, so both servers spawn in parallel.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}

c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.auth_token = {secrets.token_hex(16)!r}
c.ConfigurableHTTPProxy.pid_file = {str(workdir / "proxy.pid")!r}

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(USERS)!r}

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(workdir / "home" / "{username}")!r}
c.Spawner.cmd = [{str(VENV_BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.start_timeout = {int(STARTUP_SECONDS)}
c.Spawner.http_timeout = {int(STARTUP_SECONDS)}
c.Spawner.environment = {{
    "JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS": "false",
    # Only b's server accepts `?token=` (what Codex's CODEX_EXEC_SERVER_URL needs).
    "JUPYTERHUB_ALLOW_TOKEN_IN_URL": lambda spawner: "1" if spawner.user.name == "b" else "0",
}}

c.JupyterHub.services = [{{"name": "pytest-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{
        "name": "pytest-admin",
        "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens"],
        "services": ["pytest-admin"],
    }}
]
"""
    return config, f"http://127.0.0.1:{proxy_port}/"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper does not count)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _kill(pid: int, marker: str) -> None:
    """SIGKILL `pid` if it is still ours (its command line names `marker`), not a reused pid.

    Checked through a pidfd opened first, so the process checked is the one signalled.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if marker in cmdline and alive(pid):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _wait_unreaped(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for `process` to exit but leave it a zombie: its pid, and so its process
    group id, cannot be reused until it is reaped."""
    deadline = time.monotonic() + timeout
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while os.waitid(os.P_PID, process.pid, flags) is None and time.monotonic() < deadline:
        time.sleep(0.05)


def shutdown(hub: Hub, proxy_pid: int | None) -> None:
    """SIGTERM the hub (it stops user servers and the proxy), then SIGKILL leftovers."""
    pids = [(pid, "jupyterhub-singleuser") for pid in hub.server_pids.values()]
    if proxy_pid:
        pids.append((proxy_pid, "configurable-http-proxy"))
    if hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
        _wait_unreaped(hub.process, 20)
        # The hub runs in its own session: its group holds the hub and the user servers
        # (LocalProcessSpawner does not start a new session). Unreaped, the hub still
        # holds the group id, so this reaches that group and no other.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(hub.process.pid, signal.SIGKILL)
    for pid, marker in pids:  # the proxy, and servers that left the group, by checked pid
        _kill(pid, marker)
    with contextlib.suppress(subprocess.TimeoutExpired):
        hub.process.wait(timeout=5)


@contextlib.contextmanager
def running_hub(workdir: Path) -> Iterator[Hub]:
    """Hub and proxy up, servers of USERS spawned, their tokens in `Hub.tokens`."""
    chp = install_chp()
    hub_exe = jupyterhub_bin()
    admin_token = secrets.token_hex(24)
    config, url = hub_config(workdir, chp, admin_token)
    config_file = workdir / "jupyterhub_config.py"
    config_file.write_text(config)
    log = workdir / "jupyterhub.log"
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(hub_exe), "-f", str(config_file)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Hub(process, url, admin_token, workdir, log)
    proxy_pid: int | None = None
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"jupyterhub exited with {process.returncode}\n{running.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http("GET", url + "hub/api/", timeout=2)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyterhub did not come up\n{running.log_tail()}")
            time.sleep(0.2)
        proxy_pid = _read_pid(workdir / "proxy.pid")
        running.spawn(*USERS)
        for name in USERS:
            token = running.api(
                "POST", f"users/{name}/tokens", {"note": "jupyter-exec test", "expires_in": 900}
            )
            running.tokens[name] = token["token"]
        yield running
    finally:
        shutdown(running, proxy_pid)
        leftovers = [
            pid
            for pid in [*running.server_pids.values(), proxy_pid, process.pid]
            if pid and alive(pid)
        ]
        assert not leftovers, f"processes left running: {leftovers}"
