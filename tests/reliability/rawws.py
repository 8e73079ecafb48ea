"""A deliberately badly behaved websocket client, and probes of a server process.

`RawWebSocket` speaks just enough RFC 6455 to authenticate and send frames over a
plain socket, so a test decides exactly when (and whether) it reads: a client
that never reads, or one that vanishes mid-stream with a TCP reset.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
from typing import Any
from urllib.parse import urlsplit


class RawWebSocket:
    def __init__(self, url: str, token: str, *, rcvbuf: int | None = None) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(1)  # byte by byte: never consume a frame
            assert data, "server closed during the handshake"
            head += data
        self.status = int(head.split(b" ", 2)[1])
        self._ids = 0

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        if notify:
            self.send_text(json.dumps(msg))
            return None
        self._ids += 1
        msg["id"] = self._ids
        self.send_text(json.dumps(msg))
        return self._ids

    def handshake(self) -> None:
        self.send("initialize", {"clientName": "raw"})
        self.send("initialized", notify=True)

    def recv_frame(self) -> bytes:
        """One unfragmented server frame's payload (tests read only a little)."""
        _, b1 = self._exactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._exactly(8))
        return self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            data = self.sock.recv(n - len(buf))
            if not data:
                raise ConnectionError("closed")
            buf += data
        return buf

    def abort(self) -> None:
        """Vanish with a TCP reset, as a killed or unplugged client does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """A text-mode child with stdout piped (a sync helper, callable from async tests)."""
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kwargs)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
