"""A loopback HTTP(S) server that answers with exactly the bytes a test scripts (trickles, holds,
oversized bodies, redirects) and records what it received; a test CA for TLS on loopback under a
name; a socket opener that can only ever reach loopback. For the metadata-document fetcher's tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# (connection, stop) -> None: writes the answer; long waits use stop.wait so that teardown ends them.
Handler = Callable[[socket.socket, threading.Event], None]
MAX_REQUEST_BYTES = 64 * 1024


@dataclass
class SeenRequest:
    request_line: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [value for field_name, value in self.headers if field_name.lower() == name.lower()]


@dataclass
class ScriptedHttpServer:
    """Serves ``handler`` on 127.0.0.1 (TLS with ``tls``), one thread per connection."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.tls is not None:
            self.tls.sni_callback = self._record_server_name
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="scripted-http", daemon=True)
        self._accepting.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def stop(self) -> None:
        self.stop_event.set()
        self._accepting.join(10)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def _record_server_name(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(5)
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True)
            request = _read_request(connection)
            if request is not None:
                self.requests.append(request)
                self.handler(connection, self.stop_event)
        except (OSError, ssl.SSLError):
            pass  # the client gave up (as the tests intend) or refused the certificate
        finally:
            connection.close()


def _read_request(connection: socket.socket) -> SeenRequest | None:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_REQUEST_BYTES:
        chunk = connection.recv(4096)
        if not chunk:
            return None
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *lines = head.split("\r\n")
    headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
    return SeenRequest(request_line=request_line, headers=headers)


def response_head(status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} Scripted"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(status: int = 200, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
           content_length: bool = True) -> Handler:
    """A complete answer, then the connection closes."""
    fields = list(headers) + ([("Content-Length", str(len(body)))] if content_length else [])

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(response_head(status, fields) + body)

    return handle


def send_then_hold(data: bytes, hold: float = 10.0) -> Handler:
    """Send ``data``, then keep the connection open (until teardown or ``hold`` seconds)."""

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(data)
        stop.wait(hold)

    return handle


def trickle(data: bytes, every: float) -> Handler:
    """Send ``data`` one byte at a time."""

    def handle(connection: socket.socket, stop: threading.Event) -> None:
        for index in range(len(data)):
            connection.sendall(data[index:index + 1])
            if stop.wait(every):
                return

    return handle


class LoopbackOnlyOpener:
    """The fetcher's socket opener in tests: records every attempt and connects to loopback
    addresses only, so that no packet leaves the machine even if the fetcher's guard failed."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        self.attempts.append((address, port))
        if not ipaddress.ip_address(address).is_loopback:
            raise ConnectionRefusedError(f"test opener: {address} is not loopback")
        return socket.create_connection((address, port), timeout=timeout)


# -- a test CA ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCA:
    """A CA trusted by ``client_context()``, issuing server certificates for test names."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, directory: Path) -> LocalCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-oauth-bridge test CA")])
        certificate = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        (directory / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(directory=directory, key=key, certificate=certificate)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.directory / "ca.pem"))

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``names`` (DNS names)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        certificate = (
            _builder(subject, self.certificate.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = self.directory / names[0]
        (stem.with_suffix(".crt")).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (stem.with_suffix(".key")).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        return context


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )
