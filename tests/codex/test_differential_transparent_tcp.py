"""Codex's own exec-server and ours run a command with ``transparentTcp`` alike.

The same sandboxed ``process/start`` with ``networkProxy.proxy.transparentTcp``
goes to both (stdio, ws, Jupyter); the command ignores the proxy variables
and opens plain TCP connections: to a server on this machine's non-loopback
address (allowed by its exact address), to a closed port there, to a denied
name and to a name left to the client, and to its own loopback. Compared: what
it sees (its IPv4 default route, its resolver, the synthetic addresses names
resolve to, each connection's fate) and the ``network/policyDecision`` and
``network/policyRequest`` messages; full and limited mode. docs/codex.md
records the rest of what Codex's command sees (its TUN's IPv6 side, bubblewrap's
pid namespace) that ours does not show the same.

Codex's server needs ``bwrap`` on the command's ``PATH`` outside a temporary
directory (Debian's ``bubblewrap``) and its ``CODEX_HOME`` outside one too
(docs/codex.md; conftest.py's `outside_temp`): the module skips where bwrap is
missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_exec.core.transparent_tcp import unavailable

from ..rpc.test_transparent_tcp import greeter, host_address
from .differential import Pair, Side
from .test_differential_network import STARTS, behind_proxy, settings

BWRAP = shutil.which("bwrap")
_TEMP = os.path.realpath(tempfile.gettempdir())
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        BWRAP is None or os.path.realpath(BWRAP).startswith(_TEMP + "/"),
        reason="Codex's transparent TCP needs bubblewrap (apt-get install bubblewrap) on PATH, "
        "outside a temporary directory",
    ),
    pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}"),
]

#: Each argument is ``label=host:port``; prints what the command sees, addresses as labels.
#: A connection's fate only: Codex's relay resets a denied one after the connect returned,
#: ours may be quick enough to reset it while the connect is still being reported.
CONNECT = r"""
import socket, sys
route = [r.split() for r in open("/proc/net/route").read().splitlines()[1:]]
print("default", [r[0] for r in route if r[1] == "00000000"])
print("resolv", open("/etc/resolv.conf").read().strip())
for name in ("first.test", "second.test", "first.test"):
    print(name, socket.gethostbyname(name))
for target in sys.argv[1:]:
    label, address = target.split("=")
    host, port = address.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=20)
        s.sendall(b"hi\n")
        print(label, "got", s.recv(100))
    except OSError as e:
        print(label, type(e).__name__)
"""


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, int, int]]:
    """A greeting server on this machine's address, and a closed port there."""
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect to")
    closed = socket.create_server((address, 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    with greeter(address) as port:
        yield address, port, closed_port


def sandbox(side: Side) -> dict[str, Any]:
    def special(kind: str, access: str) -> dict[str, Any]:
        return {"path": {"type": "special", "value": {"kind": kind}}, "access": access}

    return {
        "permissions": {"type": "managed", "network": "enabled", "file_system": {
            "type": "restricted",
            "entries": [special("root", "read"), special("project_roots", "write"),
                        special("slash_tmp", "write"), special("tmpdir", "write")],
        }},
        "cwd": side.workspaces.as_uri(), "workspaceRoots": [side.workspaces.as_uri()],
        "windowsSandboxLevel": "disabled", "windowsSandboxProxySettingsMode": "reconcile",
        "useLegacyLandlock": False,
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["full", "limited"])
def test_plain_tcp_through_the_proxy(pair: Pair, target: tuple[str, int, int], mode: str) -> None:
    address, port, closed_port = target
    proxy = {**settings(mode, {address: "allow", "denied.test": "deny", "open.test": "none"}),
             "enableSocks5": True, "transparentTcp": True}  # fmt: skip
    targets = [f"allowed={address}:{port}", f"closed={address}:{closed_port}",
               f"denied=denied.test:{port}", f"open=open.test:{port}",
               f"loopback=127.0.0.1:{port}", f"allowed-443={address}:443"]  # fmt: skip
    decision = {"type": "deny", "reason": "reviewed"}
    process_id = f"tt-{next(STARTS)}"
    answers = []
    for side in (pair.codex, pair.ours):
        extra = {"sandbox": sandbox(side), "env": {"PATH": os.environ["PATH"]}}
        answers.append(
            behind_proxy(side, process_id, proxy, targets, decision, script=CONNECT, extra=extra)
        )
    codex, ours = answers
    assert ours == codex
    assert any(d["protocol"] == "socks5_tcp" for d in ours["decisions"])
    if mode == "full":
        assert "allowed got b'hello hi\\n'" in ours["output"], ours


def test_refusals_agree(pair: Pair) -> None:
    """No sandbox, or no SOCKS5 listener: -32602 from both, nothing started."""
    base = {**settings("full", {}), "transparentTcp": True}
    for proxy, with_sandbox in (({**base, "enableSocks5": True}, False), (base, True)):
        codes = []
        for side in (pair.codex, pair.ours):
            params = {"processId": f"tt-{next(STARTS)}", "argv": ["/bin/true"],
                      "cwd": side.workspaces.as_uri(), "env": {}, "tty": False, "arg0": None,
                      "networkProxy": {"proxy": proxy},
                      **({"sandbox": sandbox(side)} if with_sandbox else {})}  # fmt: skip
            codes.append(side.client.request("process/start", params).get("error", {}).get("code"))
        assert codes == [-32602, -32602]
