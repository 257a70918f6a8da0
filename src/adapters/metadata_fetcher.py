"""The ClientMetadataFetcher port: GET a client ID metadata document safely
(draft-ietf-oauth-client-id-metadata-document: §5 Client Information Discovery, a 200 and no
redirects; §5.2 caching; §8.6 Server-Side Request Forgery; §8.7 Maximum Response Size).

The client ID is a URL anyone can choose, so the fetch is an SSRF surface:

- https only (http only with ``allow_loopback`` to a loopback host, for tests and local work);
  no userinfo, no fragment.
- The host is resolved here, and every address it resolves to must be globally routable
  (RFC 6890 and the IANA special-purpose registries, including the IPv6 forms that embed or
  translate to IPv4: mapped, compatible, NAT64, 6to4, Teredo). One bad address refuses the name.
- The connection goes to an address that was checked, never to a second resolution, with the
  Host header and TLS server name (SNI and certificate check) set to the URL's host name, so DNS
  rebinding cannot slip a second, internal answer past the check.
- No redirects, only 200, JSON or no Content-Type, no Content-Encoding, at most ``max_bytes``
  (read as it arrives and dropped as soon as more comes), a connect deadline and a total deadline
  over the whole exchange (resolution included); no cookies, credentials or proxies.

Concurrent fetches of one URL in a process are merged into one request. Nothing is cached here:
the domain caches valid documents in storage.
"""

from __future__ import annotations

import email.message
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
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Callable, Sequence, cast
from urllib.parse import urlsplit

from ..domain.ports import FetchedDocument, MetadataDocumentUnavailable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Sequence[str]]
# (address, port, timeout) -> a connected TCP socket; tests pass one that refuses to leave loopback.
SocketOpener = Callable[[str, int, float], socket.socket]

# Status line and headers may take this much beyond the body's cap (http.client's own limits,
# 100 lines of 64 KiB, would let an answer run to megabytes).
HEADER_ALLOWANCE = 16 * 1024
# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
DELTA_SECONDS_CAP = 2**31

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Special-use ranges (RFC 6890, IANA IPv4/IPv6 special-purpose address registries) that
# ipaddress's is_global does not (or, in older Pythons, did not yet) report, named for messages
# and logs. Order matters where they nest: the first match names the class.
_REFUSED: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = tuple(
    (name, ipaddress.ip_network(network))
    for name, network in (
        ("unspecified", "::/128"),
        ("this-network", "0.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("shared (CGNAT)", "100.64.0.0/10"),
        ("link-local", "169.254.0.0/16"),
        ("private", "172.16.0.0/12"),
        ("IETF protocol assignment", "192.0.0.0/24"),
        ("documentation", "192.0.2.0/24"),
        ("6to4 relay anycast", "192.88.99.0/24"),
        ("private", "192.168.0.0/16"),
        ("benchmarking", "198.18.0.0/15"),
        ("documentation", "198.51.100.0/24"),
        ("documentation", "203.0.113.0/24"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),  # includes the broadcast address 255.255.255.255
        ("IPv4-mapped", "::ffff:0:0/96"),
        ("IPv4-compatible", "::/96"),
        ("NAT64", "64:ff9b::/96"),
        ("NAT64", "64:ff9b:1::/48"),
        ("discard", "100::/64"),
        ("Teredo", "2001::/32"),
        ("IETF protocol assignment", "2001::/23"),
        ("documentation", "2001:db8::/32"),
        ("6to4", "2002::/16"),
        ("documentation", "3fff::/20"),
        ("SRv6 SID", "5f00::/16"),
        ("unique local", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "ff00::/8"),
    )
)
# Only 2000::/3 is allocated for global unicast; the rest of the IPv6 space is reserved.
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[a-z0-9.!#$&^_-]+\+)?json")


def address_refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be fetched from (the special-use class, e.g. "private"), or None
    if it is globally routable (or loopback, when ``allow_loopback``)."""
    try:
        ip: _Address = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if any(ip in network for network in _LOOPBACK if network.version == ip.version):
        return None if allow_loopback else "loopback"
    for name, network in _REFUSED:
        if network.version == ip.version and ip in network:
            return name
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return "reserved"
    if not ip.is_global or ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_link_local:
        return "not globally routable"
    return None


def max_age_from_headers(headers: email.message.Message, now: float) -> int | None:
    """Seconds the response may be cached (RFC 9111 §4.2.1, §5.2.2, §5.3), None if it says
    nothing. ``no-store`` and ``no-cache`` (whatever else is there) give 0; else ``max-age``
    (the smallest if repeated, 0 if invalid); else ``Expires`` minus ``Date`` (or ``now``), 0 if
    invalid or past. ``private`` and ``s-maxage`` are ignored: the authorization server is the
    document's only user, not a cache shared between users."""
    directives: dict[str, list[str | None]] = {}
    for field in headers.get_all("Cache-Control") or []:
        for directive in str(field).split(","):
            name, _, value = directive.partition("=")
            name = name.strip().lower()
            if name:
                directives.setdefault(name, []).append(value.strip().strip('"') if value else None)
    if "no-store" in directives or "no-cache" in directives:
        return 0
    if "max-age" in directives:
        return min(_delta_seconds(value) for value in directives["max-age"])
    expires = headers.get_all("Expires")
    if not expires:
        return None
    expires_at = _http_date(str(expires[0]))
    if expires_at is None:
        return 0  # RFC 9111 §5.3: an invalid Expires (such as "0") is in the past
    date = _http_date(str(headers.get("Date", "")))
    return max(0, int(expires_at - (date if date is not None else now)))


def _delta_seconds(value: str | None) -> int:
    if value is None or not value.isascii() or not value.isdigit():
        return 0  # RFC 9111 §4.2.1: invalid freshness information counts as stale
    return DELTA_SECONDS_CAP if len(value) > 10 else min(int(value), DELTA_SECONDS_CAP)


def _http_date(value: str) -> float | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


@dataclass(frozen=True)
class _Target:
    """The parts of a client ID URL the fetch uses."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    host_header: str
    request_target: str  # path and query


def _unavailable(message: str) -> MetadataDocumentUnavailable:
    return MetadataDocumentUnavailable(message)


def _parse_target(url: str, *, allow_loopback: bool) -> _Target:
    """The draft's §3 URL rules as far as the fetch is concerned (the domain checks the rest)."""
    if not url or not all(0x21 <= ord(char) <= 0x7E for char in url):
        raise _unavailable("the client ID is not a valid URL")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise _unavailable("the client ID is not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise _unavailable("the client ID is not an https URL")
    if "#" in url:
        raise _unavailable("the client ID URL has a fragment")
    if "@" in parts.netloc:
        raise _unavailable("the client ID URL has user information")
    host = parts.hostname or ""
    literal = _ip_literal(host)
    if not host or (literal is None and not _HOST_NAME.fullmatch(host)):
        raise _unavailable("the client ID URL has no valid host")
    try:
        explicit_port = parts.port
    except ValueError:
        raise _unavailable("the client ID URL has an invalid port") from None
    if explicit_port == 0:
        raise _unavailable("the client ID URL has an invalid port")
    if parts.scheme == "http" and not (allow_loopback and _is_loopback_host(host, literal)):
        raise _unavailable("the client ID is not an https URL")
    default_port = 443 if parts.scheme == "https" else 80
    port = explicit_port or default_port
    shown_host = f"[{host}]" if ":" in host else host
    return _Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        host_header=shown_host if port == default_port else f"{shown_host}:{port}",
        request_target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def _host_for_log(url: str) -> str:
    """The host only: the path and query of a URL may carry anything."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if host and (_HOST_NAME.fullmatch(host) or _ip_literal(host) is not None):
        return host
    return "(no valid host)"


def _ip_literal(host: str) -> _Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback_host(host: str, literal: _Address | None) -> bool:
    if literal is None:
        return host == "localhost"
    return any(literal in network for network in _LOOPBACK if network.version == literal.version)


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
    """ClientMetadataFetcher for documents on the internet (see the module docstring)."""

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
        host = _host_for_log(url)
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
        target = _parse_target(url, allow_loopback=self._allow_loopback)
        deadline = _Deadline(self._total_timeout)
        try:
            addresses = self._checked_addresses(target, deadline)
            sock = self._connect(target, addresses, deadline)
            try:
                return self._exchange(sock, target, deadline)
            finally:
                sock.close()
        except _TimedOut:
            raise _unavailable(f"the host {target.host} did not answer in time") from None
        except _TooLarge:
            raise _unavailable(
                f"the answer of {target.host} is larger than {self._max_bytes} bytes"
            ) from None
        except ssl.SSLCertVerificationError:
            raise _unavailable(f"the TLS certificate of {target.host} is not valid for it") from None
        except ssl.SSLError:
            raise _unavailable(f"the TLS connection to {target.host} failed") from None
        except TimeoutError:
            raise _unavailable(f"the host {target.host} did not answer in time") from None
        except http.client.HTTPException:
            raise _unavailable(f"the host {target.host} sent a malformed HTTP answer") from None
        except OSError:
            raise _unavailable(f"the connection to {target.host} failed") from None

    def _checked_addresses(self, target: _Target, deadline: _Deadline) -> list[str]:
        """§8.6: every address of the host is globally routable (or loopback, when allowed;
        only loopback for http), else the host is refused."""
        addresses = (
            [target.host] if _ip_literal(target.host) is not None
            else self._resolve_within(target, deadline)
        )
        if not addresses:
            raise _unavailable(f"the host {target.host} could not be resolved")
        for address in addresses:
            refusal = address_refusal(address, allow_loopback=self._allow_loopback)
            if refusal is None and target.scheme == "http":
                refusal = None if _is_loopback_host(address, _ip_literal(address)) else "not loopback"
            if refusal is not None:
                log.info("client metadata document host %s resolves to %s (%s)",
                         target.host, address, refusal)
                raise _unavailable(
                    f"the host {target.host} resolves to an address that is not publicly routable"
                )
        return addresses

    def _resolve_within(self, target: _Target, deadline: _Deadline) -> list[str]:
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
            raise _unavailable(f"the host {target.host} could not be resolved")
        return [str(address) for address in answer]

    def _connect(self, target: _Target, addresses: list[str], deadline: _Deadline) -> socket.socket:
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

    def _exchange(self, sock: socket.socket, target: _Target, deadline: _Deadline) -> FetchedDocument:
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

    def _check_response(self, response: http.client.HTTPResponse, target: _Target) -> None:
        status = response.status
        if 300 <= status < 400:
            raise _unavailable(
                f"the host {target.host} answered with a redirect ({status}), which is not followed"
            )
        if status != 200:
            raise _unavailable(f"the host {target.host} answered {status} instead of 200")
        content_type = response.getheader("Content-Type")
        if content_type is not None:
            media_type = content_type.split(";", 1)[0].strip().lower()
            if not _JSON_MEDIA_TYPE.fullmatch(media_type):
                raise _unavailable(f"the host {target.host} answered with wrong content (not JSON)")
        encoding = response.getheader("Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise _unavailable(f"the host {target.host} answered with wrong content (encoded)")
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
