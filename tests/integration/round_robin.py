"""A round-robin front for several server instances on loopback, as a load balancer without
session stickiness would be (issue 9, part 4).

Every request, including successive requests on one kept-alive client connection, goes to the
next instance in turn. The front buffers the request and the response whole (as the recommended
production proxy does), forwards ``Host`` unchanged and appends the client's address to
``X-Forwarded-For`` (RFC 7239's predecessor, as gunicorn and the rate limits read it; the
instances trust it through ``FORWARDED_ALLOW_IPS``). It logs which instance answered each request
and says so in an ``X-Served-By`` response header of its own (the product adds nothing for this).

An instance that refuses the connection (it is down) is skipped for that request, as a load
balancer does with ``proxy_next_upstream error``; a request that failed after it was sent is
answered 502 and never retried, for it may have been acted on (RFC 9110 §9.2.2: POST is not
idempotent). ``lose_next_answer`` makes that case happen on purpose: an instance acts on a
request and its answer never reaches the client.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

from .servers import LoopbackHttpServer

SERVED_BY = "X-Served-By"
# RFC 9110 §7.6.1: hop-by-hop fields are not forwarded (Content-Length is recomputed).
HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "transfer-encoding", "upgrade", "content-length")
)  # fmt: skip
# The refused marker in the log: no instance answered.
NO_INSTANCE = -1
BACKEND_TIMEOUT = 60.0
# How long an idle kept-alive client connection is held open.
CLIENT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Forwarded:
    """One request through the front: which instance answered it (NO_INSTANCE: none did)."""

    sequence: int
    instance: int
    method: str
    path: str  # without the query string
    status: int
    finished_at: float  # time.monotonic()
    # The grant_type of a token request (form-encoded), else None.
    grant_type: str | None = None
    # What the instance answered when the front lost that answer (see lose_next_answer).
    lost_status: int | None = None


@dataclass
class RoundRobinFront:
    """``start()``/``stop()``; ``base_url`` is what the instances' PUBLIC_URL must say."""

    instances: Sequence[str]  # base URLs, http://127.0.0.1:PORT
    log: list[Forwarded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._turn = 0
        self._sequence = 0
        self._http: LoopbackHttpServer | None = None
        self._loss: tuple[int, str, threading.Event] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RoundRobinFront:
        front = self

        class Handler(_Relay):
            owner = front

        self._http = LoopbackHttpServer(Handler, name="round-robin-front")
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    @property
    def port(self) -> int:
        assert self._http is not None, "not started"
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what the tests read -------------------------------------------------------------------

    def entries(self) -> list[Forwarded]:
        with self._lock:
            return sorted(self.log, key=lambda entry: entry.sequence)

    def mark(self) -> int:
        """The sequence number the next request will get: ``entries_since(mark)`` are those after."""
        with self._lock:
            return self._sequence

    def entries_since(self, mark: int) -> list[Forwarded]:
        return [entry for entry in self.entries() if entry.sequence >= mark]

    def lose_next_answer(self, instance: int, grant_type: str) -> threading.Event:
        """The next 200 that ``instance`` answers to a token request with ``grant_type`` is
        dropped and the client answered 502, as when an instance dies after acting on a request
        and before its answer left; the event is set once that has happened."""
        done = threading.Event()
        with self._lock:
            self._loss = (instance, grant_type, done)
        return done

    def _take_loss(self, instance: int, grant_type: str | None, status: int) -> bool:
        with self._lock:
            if self._loss is None or status != 200 or self._loss[:2] != (instance, grant_type):
                return False
            done, self._loss = self._loss[2], None
        done.set()
        return True

    # -- routing -------------------------------------------------------------------------------

    def _next(self) -> tuple[int, list[int]]:
        """This request's sequence number and the instances to try, in order: the next one in
        turn first, the others only if it refuses the connection."""
        with self._lock:
            sequence, first = self._sequence, self._turn
            self._sequence += 1
            self._turn = (self._turn + 1) % len(self.instances)
        count = len(self.instances)
        return sequence, [(first + offset) % count for offset in range(count)]

    def _record(self, entry: Forwarded) -> None:
        with self._lock:
            self.log.append(entry)


class _Relay(BaseHTTPRequestHandler):
    owner: RoundRobinFront
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_IDLE_TIMEOUT
    _grant_type: str | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._relay()

    def do_POST(self) -> None:  # noqa: N802
        self._relay()

    def do_DELETE(self) -> None:  # noqa: N802
        self._relay()

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._relay()

    def do_PUT(self) -> None:  # noqa: N802
        self._relay()

    def _relay(self) -> None:
        body = self._request_body()
        if body is None:
            return
        headers = [(name, value) for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP]
        headers = [(name, value) for name, value in headers if name.lower() != "x-forwarded-for"]
        forwarded_for = ", ".join([*self.headers.get_all("X-Forwarded-For", []), self.client_address[0]])
        headers.append(("X-Forwarded-For", forwarded_for))
        headers.append(("Content-Length", str(len(body))))
        sequence, candidates = self.owner._next()
        path = urlsplit(self.path).path
        self._note_grant_type(path, body)
        for instance in candidates:
            try:
                status, reason, reply_headers, reply_body = self._exchange(instance, headers, body)
            except ConnectionRefusedError:
                continue  # down: nothing was sent, the next instance may take it
            except (OSError, http.client.HTTPException):
                self._record(sequence, instance, path, 502)
                self._answer(502, "Bad Gateway", [], b"the instance failed while handling the request\n", NO_INSTANCE)
                return
            if self.owner._take_loss(instance, self._grant_type, status):
                self._record(sequence, instance, path, 502, lost_status=status)
                self._answer(502, "Bad Gateway", [], b"the instance's answer was lost\n", NO_INSTANCE)
                return
            self._record(sequence, instance, path, status)
            self._answer(status, reason, reply_headers, reply_body, instance)
            return
        self._record(sequence, NO_INSTANCE, path, 502)
        self._answer(502, "Bad Gateway", [], b"no instance is reachable\n", NO_INSTANCE)

    def _request_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # The clients of these tests always send Content-Length.
            self._answer(411, "Length Required", [], b"", NO_INSTANCE)
            return None
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _exchange(
        self, instance: int, headers: Iterable[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        target = urlsplit(self.owner.instances[instance])
        # A connection per request: successive requests of one client connection may go anywhere.
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=BACKEND_TIMEOUT)
        try:
            # Host goes through as the client sent it (the public address), not the instance's.
            connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            reply_body = response.read()
            reply_headers = [(name, value) for name, value in response.getheaders() if name.lower() not in HOP_BY_HOP]
            return response.status, response.reason, reply_headers, reply_body
        finally:
            connection.close()

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, instance: int) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header(SERVED_BY, str(instance))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, sequence: int, instance: int, path: str, status: int, lost_status: int | None = None) -> None:
        entry = Forwarded(sequence, instance, self.command, path, status, time.monotonic(), self._grant_type, lost_status)
        self.owner._record(entry)

    def _note_grant_type(self, path: str, body: bytes) -> None:
        self._grant_type = None
        if path.endswith("/token") and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self._grant_type = parse_qs(body.decode("utf-8", "replace")).get("grant_type", [None])[0]
