"""The credential broker's HTTPS step: the proxy opens TLS to a provider's host itself.

With ``credentialMasking`` (core/credential_broker.py) a command holds only
dummies; a CONNECT (or SOCKS5 connect) to a host where some credential may
go is not tunnelled but served here (`serve`): the command's TLS ends at a
certificate for that host signed by this process's `Authority`, a TLS
connection of our own goes on to the real host (verified against the
system's trust, ``SSL_CERT_FILE`` honoured), and each HTTP/1.1 request
between them has its head read, the dummies put back by `Broker.rewrite`,
and its body passed on by its framing (``Content-Length`` or chunked), so
the next request's head is read too. Responses go back untouched. A
request that upgrades (WebSocket) is passed through after its head. Only
``http/1.1`` is offered (ALPN), so clients do not speak HTTP/2 to us.

The command trusts the authority through the variables Codex's server sets
with ``credentialMasking`` (`ca_env`, recorded in docs/codex.md): a bundle
of the system's roots plus ours, written under Jupyter's data directory,
which sandboxes may read but never write. The authority's key lives only in
this process's memory (nothing on disk to steal); a new daemon has a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..config import jupyter_data_dir
from .credential_broker import Broker

__all__ = [
    "BODY_PIECE",
    "BUNDLE_VARS",
    "STALE_BUNDLE",
    "Authority",
    "Refusal",
    "authority",
    "ca_env",
    "open_upstream",
    "serve",
]

#: Variables that name the bundle with our authority (Codex's server sets these 12).
BUNDLE_VARS = ("BUNDLE_SSL_CA_CERT", "CARGO_HTTP_CAINFO", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
               "CODEX_CA_CERTIFICATE", "CURL_CA_BUNDLE", "DENO_CERT", "GIT_SSL_CAINFO",
               "NODE_EXTRA_CA_CERTS", "NPM_CONFIG_CAFILE", "PIP_CERT", "REQUESTS_CA_BUNDLE",
               "SSL_CERT_FILE")  # fmt: skip
BODY_PIECE = 64 * 1024
#: A CA bundle no command has been given for this long (seconds) is removed.
STALE_BUNDLE = 7 * 24 * 3600
log = logging.getLogger(__name__)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,15})(?:;[^\r\n]*)?\r\n")
_HEAD_LIMIT = 64 * 1024
_HANDSHAKE_TIMEOUT = 30.0
_LEAVES = 256


class Authority:
    """A certificate authority of this process: its certificate, and leaves per host."""

    def __init__(self, common_name: str = "jupyter-exec credential broker") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.certificate = (
            _builder(name, name, self._key.public_key(), now, days=3650)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self._leaves: dict[str, ssl.SSLContext] = {}
        self._bundles: dict[str, Path] = {}

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a certificate for `host` (kept for the next time)."""
        context = self._leaves.pop(host, None) or self._leaf(host)
        self._leaves[host] = context
        while len(self._leaves) > _LEAVES:
            del self._leaves[next(iter(self._leaves))]
        return context

    def _leaf(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alt = x509.DNSName(host)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        now = datetime.datetime.now(datetime.timezone.utc)
        certificate = (
            _builder(subject, self.certificate.subject, key.public_key(), now, days=30)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])
        with tempfile.TemporaryDirectory(prefix="jupyter-exec-leaf-") as folder:
            chain, secret = Path(folder, "chain.pem"), Path(folder, "key.pem")
            chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + self.pem)
            encoding, form = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
            secret.write_bytes(key.private_bytes(encoding, form, serialization.NoEncryption()))
            context.load_cert_chain(chain, secret)
        return context

    def bundle(self) -> Path:
        """The system's roots and ours, in one file under Jupyter's data directory
        (``exec-proxy/ca-bundle-SHA256.pem``, as Codex names its own), written once for
        each system bundle (``SSL_CERT_FILE`` may name another), and touched on each use:
        every daemon has its own authority, so bundles unused for `STALE_BUNDLE` seconds
        are removed when another is written (one still wanted is written again)."""
        system = _system_bundle() or ""
        path = self._bundles.get(system)
        if path is None or not path.is_file():
            path = self._bundles[system] = self._write_bundle(system)
        else:
            with contextlib.suppress(OSError):
                os.utime(path)
        return path

    def _write_bundle(self, system: str) -> Path:
        roots = Path(system).read_bytes() if system and os.path.isfile(system) else b""
        data = roots.rstrip(b"\n") + b"\n" + self.pem if roots else self.pem
        folder = jupyter_data_dir() / "exec-proxy"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only home: a private temporary folder instead
            log.warning("no %s (%s): the CA bundle goes to a temporary folder", folder, exc)
            folder = Path(tempfile.mkdtemp(prefix="jupyter-exec-ca-"))
            os.chmod(folder, 0o755)
        path = folder / f"ca-bundle-{hashlib.sha256(data).hexdigest()}.pem"
        if not path.is_file():
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        for other in folder.glob("ca-bundle-*.pem"):
            with contextlib.suppress(OSError):
                if other != path and time.time() - other.stat().st_mtime > STALE_BUNDLE:
                    other.unlink()
        return path


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not cert_sign,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _system_bundle() -> str | None:
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile


@functools.cache
def authority() -> Authority:
    """This process's authority (made on first use: a key costs a few milliseconds)."""
    return Authority()


def ca_env() -> dict[str, str]:
    """What a command behind a masking proxy gets so its tools trust the proxy's TLS."""
    return dict.fromkeys(BUNDLE_VARS, str(authority().bundle()))


@functools.lru_cache(maxsize=4)
def _upstream_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


async def open_upstream(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A verified TLS connection to the real `host` (raises `OSError` if it fails)."""
    context = _upstream_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host),
        _HANDSHAKE_TIMEOUT,
    )


#: A request's method -> the response that refuses it, or None to pass it on.
Refusal = Callable[[str], "bytes | None"]


async def serve(
    writer: asyncio.StreamWriter,
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    host: str,
    port: int,
    broker: Broker,
    refuse: Refusal,
) -> None:
    """End the command's TLS (it was told the tunnel is open) and pass its requests on,
    rewritten, until either side ends; a request `refuse` answers gets that answer and
    ends the connection (the limited mode's methods, as Codex's proxy with its MITM)."""
    plain = writer.transport.get_protocol()  # told of the end by us: TLS takes its transport
    try:
        reader, tls_writer = await _server_tls(writer, authority().context_for(host))
        up_reader, up_writer = upstream
        origin = f"https://{host}" if port == 443 else f"https://{host}:{port}"
        requests = asyncio.ensure_future(
            _requests(reader, (up_writer, tls_writer), origin, broker, refuse)
        )
        responses = asyncio.ensure_future(_pour(up_reader, tls_writer))
        try:  # either end closing ends both: TLS has no half-close to wait for an answer
            await asyncio.wait([requests, responses], return_when=asyncio.FIRST_COMPLETED)
            for task in (requests, responses):
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in (requests, responses):
                task.cancel()
            await asyncio.gather(requests, responses, return_exceptions=True)
            tls_writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await tls_writer.wait_closed()
    finally:
        plain.connection_lost(None)


async def _server_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The command's connection as TLS, server side (`loop.start_tls`, on every Python)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_HEAD_LIMIT * 2)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport = await loop.start_tls(
        writer.transport, protocol, context, server_side=True,
        ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
    )  # fmt: skip
    assert transport is not None
    protocol.connection_made(transport)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _requests(
    reader: asyncio.StreamReader,
    writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    origin: str,
    broker: Broker,
    refuse: Refusal,
) -> None:
    """Each request: its head rewritten, then its body by its framing (`writers`: the
    upstream's, and the command's for a refusal)."""
    sink, client = writers
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as ended:
            if ended.partial:
                raise ValueError("a request head cut short") from None
            return
        if len(head) > _HEAD_LIMIT:
            raise ValueError("request head too large")
        method, target, version, headers = _parsed(head)
        refusal = refuse(method)
        if refusal is not None:
            client.write(refusal)
            await client.drain()
            return
        url = origin + target if target.startswith("/") else target
        headers = broker.rewrite(url, headers)
        rebuilt = [f"{method} {target} {version}", *(f"{n}: {v}" for n, v in headers), "", ""]
        sink.write("\r\n".join(rebuilt).encode("latin-1"))
        if any(n.lower() == "upgrade" for n, _ in headers):
            await _pour(reader, sink)  # a WebSocket or other protocol from here on
            return
        await _body(reader, sink, headers)
        await sink.drain()


def _parsed(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """A request head, read strictly (RFC 9112): where this reading and the server's could
    differ, a header we put a credential into could be the body of another request to
    the server (smuggling), so any doubt ends the connection (`ValueError`)."""
    request_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _VERSION.fullmatch(parts[2]) or not _TOKEN.fullmatch(parts[0]):
        raise ValueError(f"a bad request line: {request_line[:80]!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"a bad header line: {line[:80]!r}")
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], parts[2], headers


async def _pour(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until `source` ends (TLS has no half-close: the caller closes `sink`)."""
    while data := await source.read(BODY_PIECE):
        sink.write(data)
        await sink.drain()


async def _body(
    reader: asyncio.StreamReader, sink: asyncio.StreamWriter, headers: list[tuple[str, str]]
) -> None:
    """Pass one request's body on: chunked (RFC 9112 7.1) or ``Content-Length`` bytes.
    Framing two readers could take apart differently (both headers, another coding,
    lengths that disagree) is refused."""
    encodings = [v.lower() for n, v in headers if n.lower() == "transfer-encoding"]
    lengths = {v for n, v in headers if n.lower() == "content-length"}
    if encodings:
        if encodings != ["chunked"] or lengths:
            raise ValueError(f"a request framing we will not guess: {encodings}, {lengths}")
        await _chunked(reader, sink)
        return
    if len(lengths) > 1 or (lengths and not _DIGITS.fullmatch(next(iter(lengths)))):
        raise ValueError("a request with conflicting or bad Content-Length")
    left = int(next(iter(lengths))) if lengths else 0
    while left:
        piece = await reader.readexactly(min(left, BODY_PIECE))
        sink.write(piece)
        left -= len(piece)
        await sink.drain()


async def _chunked(reader: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        found = _CHUNK.fullmatch(line)
        if found is None:
            raise ValueError(f"a bad chunk size line: {line[:40]!r}")
        sink.write(line)
        size = int(found.group(1), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                _parsed(b"GET / HTTP/1.1\r\n" + trailer + b"\r\n")  # a header line, or refused
                sink.write(trailer)
            sink.write(b"\r\n")
            return
        while size:
            piece = await reader.readexactly(min(size, BODY_PIECE))
            sink.write(piece)
            size -= len(piece)
            await sink.drain()
        sink.write(await reader.readexactly(2))
