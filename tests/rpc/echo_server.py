"""A small HTTP server on 127.0.0.1 for the ``http/request`` tests (never another address).

Paths: ``/echo`` answers what it got as JSON (method, path, headers with
lower-cased names, body in base64); ``/redirect?to=URL`` is a 302 there;
``/big?n=N`` is N bytes; ``/slow`` answers after two seconds; ``/broken``
promises 1000 bytes and closes after 10; ``/drip`` sends a chunk every 50 ms
for 10 s and sets `EchoServer.dropped` when its client goes away; ``/gzip`` is
a gzip-encoded body.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GZIP_TEXT = b"squeezed " * 100


def pattern(n: int) -> bytes:
    """N bytes that show where a piece was lost or repeated."""
    block = bytes(range(251))
    return (block * (n // len(block) + 1))[:n]


@dataclass
class EchoServer:
    url: str
    dropped: threading.Event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a head and a body in two writes: no 40 ms stall
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._chunked_body()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        if url.path == "/redirect":
            self._send(302, b"", Location=query["to"])
        elif url.path == "/big":
            self._send(200, pattern(int(query["n"])), Content_Type="application/octet-stream")
        elif url.path == "/slow":
            time.sleep(2)
            self._send(200, b"late")
        elif url.path == "/broken":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
        elif url.path == "/drip":
            self._drip()
        elif url.path == "/gzip":
            self._send(200, gzip.compress(GZIP_TEXT), Content_Encoding="gzip")
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "bodyBase64": base64.b64encode(body).decode(),
            }
            self._send(
                200, json.dumps(echo).encode(), Content_Type="application/json", X_Mixed_Case="Yes"
            )

    def _chunked_body(self) -> bytes:
        body = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return body

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"5\r\ndrip\n\r\n")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            self.server.dropped.set()
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dropped: threading.Event

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up early (a timeout test) is expected: no traceback."""


@contextmanager
def echo_server(tls: ssl.SSLContext | None = None) -> Iterator[EchoServer]:
    """The server; with `tls` it speaks HTTPS, at ``https://localhost:PORT``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.dropped = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        url = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        yield EchoServer(url, server.dropped)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
