"""SafeMetadataFetcher: the HTTP exchange of a client ID metadata document fetch, on the checks
of ``targets`` (draft-ietf-oauth-client-id-metadata-document §5: a 200, no redirects; §8.6 SSRF:
the checked address, the pinned name; §8.7: the size cap; see the package docstring)."""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, cast

from ...domain.ports import FetchedDocument, MetadataDocumentUnavailable
from .freshness import max_age_from_headers
from .targets import Target, address_refusal, host_for_log, ip_literal, is_loopback_host, parse_target

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]
# (address, port, timeout) -> a connected TCP socket; tests pass one that refuses to leave loopback.
SocketOpener = Callable[[str, int, float], socket.socket]

# Status line and headers may take this much beyond the body's cap (http.client's own limits,
# 100 lines of 64 KiB, would let an answer run to megabytes).
HEADER_ALLOWANCE = 16 * 1024
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[a-z0-9.!#$&^_-]+\+)?json")


def _system_resolve(host: str, port: int) -> Sequence[str]:
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in answers]


def _open_tcp(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to an IP address (no name lookup on the way)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _TimedOut(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise _TimedOut()
        return left


class _DeadlineReader(io.RawIOBase):
    """The socket as http.client reads it: each read waits at most until the total deadline
    (a trickling answer cannot stretch it), and at most ``budget`` bytes are taken in all."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, budget: int) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._sock.settimeout(self._deadline.remaining())
        received = self._sock.recv_into(buffer)
        self._budget -= received
        if self._budget < 0:
            raise _TooLarge()
        return received


class _ReaderSocket:
    """What http.client.HTTPResponse needs of a socket: ``makefile("rb")``."""

    def __init__(self, reader: _DeadlineReader) -> None:
        self._reader = reader

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(self._reader)


@dataclass
class _InFlight:
    done: threading.Event
    result: FetchedDocument | None = None
    error: str = "the client metadata document could not be fetched"


class SafeMetadataFetcher:
    """ClientMetadataFetcher for documents on the internet (see the package docstring).

    ``allow_loopback`` admits loopback addresses (and http to a loopback host): tests and local
    development only. ``resolve`` (host, port -> IP address strings) defaults to getaddrinfo,
    ``open_socket`` (address, port, timeout -> connected socket) to a plain TCP connect; tests
    replace both so that nothing leaves loopback. ``ssl_context`` defaults to the system's CAs."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        connect_timeout: float = 3.0,
        total_timeout: float = 5.0,
        max_bytes: int = 5 * 1024,
        resolve: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "mcp-oauth-bridge",
        open_socket: SocketOpener | None = None,
    ) -> None:
        self._allow_loopback = allow_loopback
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_bytes = max_bytes
        self._resolve = resolve or _system_resolve
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._user_agent = user_agent
        self._open_socket = open_socket or _open_tcp
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}

    def fetch(self, url: str) -> FetchedDocument:
        """One fetch per URL at a time: callers arriving while it runs get its outcome."""
        with self._lock:
            call = self._in_flight.get(url)
            leading = call is None
            if call is None:
                call = self._in_flight[url] = _InFlight(done=threading.Event())
        if not leading:
            call.done.wait()
            if call.result is None:
                raise MetadataDocumentUnavailable(call.error)
            return call.result
        try:
            call.result = self._fetch_logged(url)
            return call.result
        except MetadataDocumentUnavailable as exc:
            call.error = str(exc)
            raise
        finally:
            with self._lock:
                del self._in_flight[url]
            call.done.set()

    def _fetch_logged(self, url: str) -> FetchedDocument:
        host = host_for_log(url)
        try:
            document = self._fetch(url)
        except MetadataDocumentUnavailable as exc:
            log.info("client metadata document from %s: not fetched: %s", host, exc)
            raise
        log.info(
            "client metadata document from %s: fetched %d bytes, max-age %s",
            host, len(document.body), document.max_age,
        )
        return document

    def _fetch(self, url: str) -> FetchedDocument:
        target = parse_target(url, allow_loopback=self._allow_loopback)
        deadline = _Deadline(self._total_timeout)
        try:
            addresses = self._checked_addresses(target, deadline)
            sock = self._connect(target, addresses, deadline)
            try:
                return self._exchange(sock, target, deadline)
            finally:
                sock.close()
        except _TimedOut:
            raise MetadataDocumentUnavailable(f"the host {target.host} did not answer in time") from None
        except _TooLarge:
            raise MetadataDocumentUnavailable(
                f"the answer of {target.host} is larger than {self._max_bytes} bytes"
            ) from None
        except ssl.SSLCertVerificationError:
            raise MetadataDocumentUnavailable(f"the TLS certificate of {target.host} is not valid for it") from None
        except ssl.SSLError:
            raise MetadataDocumentUnavailable(f"the TLS connection to {target.host} failed") from None
        except TimeoutError:
            raise MetadataDocumentUnavailable(f"the host {target.host} did not answer in time") from None
        except http.client.HTTPException:
            raise MetadataDocumentUnavailable(f"the host {target.host} sent a malformed HTTP answer") from None
        except OSError:
            raise MetadataDocumentUnavailable(f"the connection to {target.host} failed") from None

    def _checked_addresses(self, target: Target, deadline: _Deadline) -> list[str]:
        """§8.6: every address of the host is globally routable (or loopback, when allowed;
        only loopback for http), else the host is refused."""
        addresses = (
            [target.host] if ip_literal(target.host) is not None
            else self._resolve_within(target, deadline)
        )
        if not addresses:
            raise MetadataDocumentUnavailable(f"the host {target.host} could not be resolved")
        for address in addresses:
            refusal = address_refusal(address, allow_loopback=self._allow_loopback)
            if refusal is None and target.scheme == "http":
                refusal = None if is_loopback_host(address, ip_literal(address)) else "not loopback"
            if refusal is not None:
                log.info("client metadata document host %s resolves to %s (%s)",
                         target.host, address, refusal)
                raise MetadataDocumentUnavailable(
                    f"the host {target.host} resolves to an address that is not publicly routable"
                )
        return addresses

    def _resolve_within(self, target: Target, deadline: _Deadline) -> list[str]:
        """The resolver in a daemon thread, so that a name server that never answers cannot
        hold the request past the deadline (getaddrinfo has no timeout of its own)."""
        answers: list[Sequence[str] | Exception] = []
        done = threading.Event()

        def resolve() -> None:
            try:
                answers.append(self._resolve(target.host, target.port))
            except Exception as exc:  # reported below, in the caller's thread
                answers.append(exc)
            finally:
                done.set()

        threading.Thread(target=resolve, name="cimd-resolve", daemon=True).start()
        if not done.wait(deadline.remaining()):
            raise _TimedOut()
        answer = answers[0]
        if isinstance(answer, Exception):
            raise MetadataDocumentUnavailable(f"the host {target.host} could not be resolved")
        return [str(address) for address in answer]

    def _connect(self, target: Target, addresses: list[str], deadline: _Deadline) -> socket.socket:
        """A connection to the first checked address that accepts one within the connect
        deadline; TLS with the URL's host name for SNI and the certificate check."""
        connect_deadline = _Deadline(min(self._connect_timeout, deadline.remaining()))
        failure: OSError | None = None
        for address in addresses:
            try:
                sock = self._open_socket(address, target.port, connect_deadline.remaining())
                break
            except TimeoutError:
                raise _TimedOut() from None
            except OSError as exc:
                failure = exc
        else:
            raise failure or OSError("no address")
        if target.scheme == "http":
            return sock
        try:
            tls = self._ssl_context.wrap_socket(
                sock, server_hostname=target.host, do_handshake_on_connect=False
            )
            # CPython bounds a whole handshake by the socket timeout (a deadline, not per read).
            tls.settimeout(deadline.remaining())
            tls.do_handshake()
        except BaseException:
            sock.close()
            raise
        return tls

    def _exchange(self, sock: socket.socket, target: Target, deadline: _Deadline) -> FetchedDocument:
        # No Cookie, no Authorization: the fetch carries nothing of ours or of the user's.
        request = (
            f"GET {target.request_target} HTTP/1.1\r\n"
            f"Host: {target.host_header}\r\n"
            "Accept: application/json\r\n"
            "Accept-Encoding: identity\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            "Connection: close\r\n\r\n"
        )
        sock.settimeout(deadline.remaining())
        sock.sendall(request.encode("ascii"))
        reader = _DeadlineReader(sock, deadline, self._max_bytes + HEADER_ALLOWANCE)
        # HTTPResponse only calls makefile("rb") on what it is given.
        response = http.client.HTTPResponse(cast(socket.socket, _ReaderSocket(reader)), method="GET")
        response.begin()
        self._check_response(response, target)
        body = self._read_body(response)
        return FetchedDocument(body=body, max_age=max_age_from_headers(response.msg, time.time()))

    def _check_response(self, response: http.client.HTTPResponse, target: Target) -> None:
        status = response.status
        if 300 <= status < 400:
            raise MetadataDocumentUnavailable(
                f"the host {target.host} answered with a redirect ({status}), which is not followed"
            )
        if status != 200:
            raise MetadataDocumentUnavailable(f"the host {target.host} answered {status} instead of 200")
        content_type = response.getheader("Content-Type")
        if content_type is not None:
            media_type = content_type.split(";", 1)[0].strip().lower()
            if not _JSON_MEDIA_TYPE.fullmatch(media_type):
                raise MetadataDocumentUnavailable(f"the host {target.host} answered with wrong content (not JSON)")
        encoding = response.getheader("Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise MetadataDocumentUnavailable(f"the host {target.host} answered with wrong content (encoded)")
        if response.length is not None and response.length > self._max_bytes:
            raise _TooLarge()

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        """§8.7: read as it arrives and stop as soon as the cap is passed."""
        body = bytearray()
        while chunk := response.read1(self._max_bytes + 1 - len(body)):
            body += chunk
            if len(body) > self._max_bytes:
                raise _TooLarge()
        if response.length:  # the connection closed before Content-Length bytes came
            raise http.client.IncompleteRead(bytes(body), response.length)
        return bytes(body)
