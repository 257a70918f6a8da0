"""A gunicorn worker that buffers each HTTP/1.1 request whole, under deadlines and size caps,
in its event loop before a thread runs the application (RFC 9112 §2.2, §6.1–6.3, §7.1, §9.3,
§9.6; RFC 9110 §10.1.1 Expect, §15.5.9 408, §15.5.14 413; RFC 6585 §5 431).

Why: gunicorn's ``sync`` and ``gthread`` workers read the request in the thread that then runs
the application, so a client that sends a header line (or a body byte) a second holds a
worker or a pool thread for as long as it likes, and two such clients stop the default
server. Here the main thread alone reads sockets (``selectors``, non-blocking ``recv``) into a
buffer per connection; only a request whose head and whole body have arrived goes to the
thread pool, which runs gunicorn's own machinery on the buffered bytes (its ``Request``
parser, ``wsgi.create``, its response writer, ``handle_error`` and access log), so HTTP
semantics stay gunicorn's. A slow client costs a buffer, never a thread; a slow upstream call
costs one thread out of ``threads``. Of the buffered requests, ``WORKER_ACTIVE_REQUESTS`` (1)
run at a time; one that has run ``WORKER_ACTIVE_MS`` (20 ms) is taken to be waiting on
something (an upstream API) and stops counting (``Admission``).

Per request, counted from its first byte: the head must be complete within
``REQUEST_HEADER_TIMEOUT`` and the whole request (head and body) within
``REQUEST_BODY_TIMEOUT``, or the client gets ``408`` with ``Connection: close``. A connection
that sends nothing is closed silently: a new one after ``REQUEST_HEADER_TIMEOUT``, a kept-alive
one after gunicorn's ``keepalive``. A head over ``MAX_REQUEST_HEADER_BYTES`` is ``431`` (or
gunicorn's own 400/414/431 when its parser objects first), a body over
``MAX_REQUEST_BODY_BYTES`` is ``413`` without being read. A thread writes the response with a
``RESPONSE_WRITE_TIMEOUT`` socket timeout. HTTP/1.1 only: TLS, HTTP/2, uWSGI and the PROXY
protocol are refused at start-up (the proxy in front terminates TLS).
"""

from __future__ import annotations

import errno
import os
import queue
import re
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple

from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    InvalidHeader,
    LimitRequestHeaders,
    NoMoreData,
)
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.http import wsgi
from gunicorn.workers import base

from .config import ConfigError

# -- settings -------------------------------------------------------------------------------------

DEFAULT_THREADS = 32
DEFAULT_CONNECTIONS = 1000
DEFAULT_KEEPALIVE = 75
DEFAULT_HEADER_TIMEOUT = 10
DEFAULT_BODY_TIMEOUT = 30
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# The application refuses bodies over 1 MiB itself (Flask's MAX_CONTENT_LENGTH, with its JSON
# error); the margin lets it keep answering those, while larger ones are not even read.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024 + 64 * 1024
DEFAULT_WRITE_TIMEOUT = 30
DEFAULT_ACTIVE_REQUESTS = 1
DEFAULT_ACTIVE_MS = 20


@dataclass(frozen=True)
class ServingLimits:
    """What the worker enforces, from the environment (``serving_limits``)."""

    threads: int = DEFAULT_THREADS
    connections: int = DEFAULT_CONNECTIONS
    keepalive: int = DEFAULT_KEEPALIVE
    header_timeout: int = DEFAULT_HEADER_TIMEOUT
    body_timeout: int = DEFAULT_BODY_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    write_timeout: int = DEFAULT_WRITE_TIMEOUT
    active_requests: int = DEFAULT_ACTIVE_REQUESTS
    active_ms: int = DEFAULT_ACTIVE_MS


def _count(env: Mapping[str, str], name: str, default: int, unit: str, *, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer number of {unit}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def serving_limits(env: Mapping[str, str]) -> ServingLimits:
    """The worker's settings from ``WORKER_THREADS``, ``WORKER_CONNECTIONS``,
    ``KEEPALIVE_TIMEOUT``, ``REQUEST_HEADER_TIMEOUT``, ``REQUEST_BODY_TIMEOUT``,
    ``MAX_REQUEST_HEADER_BYTES``, ``MAX_REQUEST_BODY_BYTES``, ``RESPONSE_WRITE_TIMEOUT``,
    ``WORKER_ACTIVE_REQUESTS`` and ``WORKER_ACTIVE_MS``."""
    limits = ServingLimits(
        threads=_count(env, "WORKER_THREADS", DEFAULT_THREADS, "threads"),
        connections=_count(env, "WORKER_CONNECTIONS", DEFAULT_CONNECTIONS, "connections"),
        keepalive=_count(env, "KEEPALIVE_TIMEOUT", DEFAULT_KEEPALIVE, "seconds", minimum=0),
        header_timeout=_count(env, "REQUEST_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, "seconds"),
        body_timeout=_count(env, "REQUEST_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, "seconds"),
        # gunicorn's parser needs room for its own limits' errors (a 4094-byte request line).
        max_header_bytes=_count(env, "MAX_REQUEST_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES, "bytes", minimum=8192),
        max_body_bytes=_count(env, "MAX_REQUEST_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, "bytes", minimum=0),
        write_timeout=_count(env, "RESPONSE_WRITE_TIMEOUT", DEFAULT_WRITE_TIMEOUT, "seconds"),
        active_requests=_count(env, "WORKER_ACTIVE_REQUESTS", DEFAULT_ACTIVE_REQUESTS, "requests", minimum=0),
        active_ms=_count(env, "WORKER_ACTIVE_MS", DEFAULT_ACTIVE_MS, "milliseconds"),
    )
    if limits.body_timeout < limits.header_timeout:
        raise ConfigError(
            f"REQUEST_BODY_TIMEOUT ({limits.body_timeout}) counts from the request's first byte like "
            f"REQUEST_HEADER_TIMEOUT ({limits.header_timeout}), so it cannot be shorter"
        )
    return limits


# -- framing: where the next request in a connection's bytes ends (no sockets here) --------------

HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
HEXDIG = frozenset(b"0123456789abcdefABCDEF")
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ),
# names and values tokens or quoted-strings (RFC 9110 §5.6.2, §5.6.4); gunicorn's own pattern.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
CHUNK_EXT = re.compile(rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*")
# A chunk-size line is a few hex digits and optional extensions (gunicorn's bound).
DEFAULT_CHUNK_LINE_LIMIT = 8190


class Refusal(Exception):
    """A request the loop answers itself with a short ``Connection: close`` response."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def error_response(status: int, reason: str) -> bytes:
    """A final response that ends the connection (RFC 9112 §9.6: ``Connection: close``)."""
    body = f"{status} {reason}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Ready(NamedTuple):
    """A whole request: gunicorn's ``Request`` whose body reads from memory."""

    request: Any
    chunked: bool


def chunk_size(line: bytes) -> int:
    """The size on a chunk-size line (RFC 9112 §7.1), with gunicorn's checks and errors."""
    size, *extension = line.split(b";", 1)
    if extension:
        if b"\r" in extension[0]:
            raise InvalidChunkExtension("bare CR not allowed")
        size = size.rstrip(b" \t")
    if not size or any(byte not in HEXDIG for byte in size):
        raise InvalidChunkSize(size)
    if extension and not CHUNK_EXT.fullmatch(b";" + extension[0]):
        raise InvalidChunkExtension("invalid chunk extension")
    return int(size, 16)


class ChunkedFraming:
    """Finds the end of a chunked body (RFC 9112 §7.1: chunks, last-chunk, trailer section)
    incrementally, as bytes arrive, without decoding it: gunicorn's ``ChunkedReader`` decodes
    it later from memory. Raises gunicorn's errors for what it would refuse, and ``Refusal``
    (413) past the size caps."""

    def __init__(self, start: int, *, max_body: int, line_limit: int, trailer_limit: int) -> None:
        self.start = start
        self.pos = start  # the next unframed byte
        self.size: int | None = None  # data bytes of the current chunk, once its line is read
        self.total = 0
        self.in_trailers = False
        self.max_body = max_body
        # Chunk-size lines and CRLFs cost bytes too: 1-byte chunks with long extensions must not
        # make a capped body buffer gigabytes.
        self.max_raw = 2 * max_body + line_limit
        self.line_limit = line_limit
        self.trailer_limit = trailer_limit
        self.scanned = start  # how far the current line or trailer section has been searched

    def end(self, data: bytearray) -> int | None:
        """The index just past the body in ``data``, or None while it is incomplete."""
        while True:
            if self.in_trailers:
                return self._trailers_end(data)
            if self.size is None:
                line_end = data.find(CRLF, max(self.pos, self.scanned - 1))
                if line_end < 0:
                    self.scanned = len(data)
                    if len(data) - self.pos > self.line_limit:
                        raise InvalidChunkSize(b"line over %d bytes with no terminator" % self.line_limit)
                    self._check_raw(len(data))
                    return None
                size = chunk_size(bytes(data[self.pos:line_end]))
                self.pos = self.scanned = line_end + 2
                if size == 0:
                    self.in_trailers = True
                    continue
                self.total += size
                if self.total > self.max_body:
                    raise Refusal(413, "Content Too Large", f"chunked body over {self.max_body} bytes")
                self.size = size
            stop = self.pos + self.size + 2
            if len(data) < stop:
                self._check_raw(len(data))
                return None
            if data[stop - 2:stop] != CRLF:
                raise ChunkMissingTerminator(bytes(data[stop - 2:stop]))
            self.pos = self.scanned = stop
            self.size = None

    def _trailers_end(self, data: bytearray) -> int | None:
        if len(data) - self.pos < 2:
            return None
        if data[self.pos:self.pos + 2] == CRLF:
            return self.pos + 2
        found = data.find(HEAD_END, max(self.pos, self.scanned - 3))
        if found >= 0:
            return found + 4
        if len(data) - self.pos > self.trailer_limit:
            raise LimitRequestHeaders("limit request trailer section size")
        # RFC 9112 §2.2: trailer lines end with CRLF too; a bare LF never ends the section.
        if has_bare_lf(data, max(self.pos, self.scanned - 1)):
            raise InvalidHeader("bare LF as line terminator")
        self.scanned = len(data)
        self._check_raw(len(data))
        return None

    def _check_raw(self, length: int) -> None:
        if length - self.start > self.max_raw:
            raise Refusal(413, "Content Too Large", f"chunked body over {self.max_raw} bytes with its framing")


def has_bare_lf(data: bytearray, start: int) -> bool:
    """Whether an LF at or after ``start`` lacks its CR (RFC 9112 §2.2)."""
    index = data.find(b"\n", start)
    while index >= 0:
        if index == 0 or data[index - 1] != 0x0D:
            return True
        index = data.find(b"\n", index + 1)
    return False


class RequestBuffer:
    """The bytes a connection sent that no thread has taken yet, and how far the next request
    in them is framed: its head parsed by gunicorn's own ``Request`` as soon as the head is
    complete, its body framed by Content-Length or chunked coding (RFC 9112 §6.3)."""

    def __init__(self, cfg: Any, limits: ServingLimits, client: Any) -> None:
        self.cfg = cfg
        self.limits = limits
        self.client = client
        self.data = bytearray()
        self.requests = 0  # heads parsed on this connection (gunicorn's req_number)
        self._start_request()

    def _start_request(self) -> None:
        self.request: Any = None
        self._scanned = 0
        self._body_start = 0
        self._length: int | None = None
        self._chunked: ChunkedFraming | None = None
        # Set once, when the head asks for 100-continue before any of its body has arrived.
        self.continue_due = False

    @property
    def head_complete(self) -> bool:
        return self.request is not None

    def feed(self, data: bytes) -> None:
        self.data += data

    def frame(self) -> Ready | None:
        """The next whole request, or None while bytes are missing. Raises ``Refusal`` or
        one of gunicorn's request errors (which its ``handle_error`` answers)."""
        if self.request is None and not self._frame_head():
            return None
        return self._frame_body()

    def _frame_head(self) -> bool:
        data = self.data
        end = data.find(HEAD_END, max(0, self._scanned - 3))
        if end < 0:
            # gunicorn's parser rejects a bare LF in the head at once; waiting for a CRLF CRLF
            # that may never come would only make the client wait for a 408 instead.
            bare_lf = has_bare_lf(data, max(0, self._scanned - 1))
            self._scanned = len(data)
            if bare_lf or len(data) > self.limits.max_header_bytes:
                # gunicorn's parser raises its own error (400, 414, 431), or wants more bytes.
                self._parse_head(bytes(data), complete=False)
            return False
        if end + 4 > self.limits.max_header_bytes:
            self._parse_head(bytes(data[:end + 4]), complete=False)
        request = self._parse_head(bytes(data[:end + 4]), complete=True)
        self._body_start = end + 4
        reader = request.body.reader
        if isinstance(reader, ChunkedReader):
            self._chunked = ChunkedFraming(
                self._body_start,
                max_body=self.limits.max_body_bytes,
                line_limit=request.limit_request_field_size or DEFAULT_CHUNK_LINE_LIMIT,
                trailer_limit=min(request.max_buffer_headers, self.limits.max_header_bytes),
            )
            expects_body = True
        elif isinstance(reader, LengthReader):
            self._length = reader.length
            if reader.length > self.limits.max_body_bytes:
                raise Refusal(413, "Content Too Large", f"Content-Length {reader.length} over {self.limits.max_body_bytes}")
            expects_body = reader.length > 0
        else:  # gunicorn gives requests without framing an empty body; anything else is a surprise
            raise InvalidHeader("CONTENT-LENGTH", req=request)
        # RFC 9110 §10.1.1: the loop answers 100 (Continue) itself, and only while no body byte
        # has arrived ("MAY omit ... if it has already received some or all of the content");
        # wsgi.create must not send a second one from the thread.
        self.continue_due = bool(request._expected_100_continue) and expects_body and len(data) == self._body_start
        request._expected_100_continue = False
        self.request = request
        return True

    def _parse_head(self, head: bytes, *, complete: bool) -> Any:
        """gunicorn's ``Request`` for a complete head. For a head the loop gives up on (over
        the cap, or with a bare LF), gunicorn's own error when its parser has one, else 431."""
        number = self.requests + 1
        unreader = IterUnreader(())
        unreader.unread(head)
        try:
            request = Request(self.cfg, unreader, self.client, number)
        except (NoMoreData, StopIteration):
            if complete:
                raise Refusal(400, "Bad Request", "incomplete request head") from None
            request = None
        if not complete:
            raise Refusal(431, "Request Header Fields Too Large", f"head over {self.limits.max_header_bytes} bytes")
        self.requests = number
        return request

    def _frame_body(self) -> Ready | None:
        data = self.data
        if self._chunked is not None:
            end = self._chunked.end(data)
            if end is None:
                return None
        else:
            assert self._length is not None
            end = self._body_start + self._length
            if len(data) < end:
                return None
        request = self.request
        request.unreader.unread(bytes(data[self._body_start:end]))
        del data[:end]
        ready = Ready(request, self._chunked is not None)
        self._start_request()
        return ready


def decode_chunked(request: Any) -> None:
    """Decode a whole chunked body with gunicorn's ``ChunkedReader`` (its checks, its trailers)
    before the application runs, so a framing error is gunicorn's 400 and never an exception
    inside the application; the application then reads the decoded bytes."""
    try:
        body = request.body.read()
    except NoMoreData:
        raise ChunkMissingTerminator(b"") from None
    if request.unreader.buf.getvalue():
        # The loop and gunicorn disagree on where the body ends: do not guess.
        raise InvalidChunkSize(b"bytes after the last chunk")
    unreader = IterUnreader(())
    unreader.unread(body)
    request.body = Body(LengthReader(unreader, len(body)))


# -- the worker ----------------------------------------------------------------------------------

RECV_SIZE = 64 * 1024
ACCEPT_BURST = 64
# How often deadlines are checked and the arbiter is told the worker is alive (seconds).
TICK = 0.5
# After a final response on a closing connection, read and discard what the client still sends
# for this long (at most LINGER_BYTES) before closing, so the kernel does not answer unread
# bytes with a reset that destroys the response (RFC 9112 §9.6).
LINGER = 2.0
LINGER_BYTES = 64 * 1024
# How long a stopping worker keeps idle kept-alive connections, for a request already on its way.
STOP_LINGER = 2.0

_LISTENER = object()
_WAKE = object()


class Admission:
    """Which buffered requests may run now: at most ``limit`` at a time (0: no limit), not
    counting those that have run longer than ``active`` seconds.

    Why: the requests of one worker share its GIL, and every SQLite call hands the GIL over, so
    several CPU-bound requests at once only cost more CPU than one after the other; several
    writers in one worker also wait on SQLite's write lock with its busy handler's sleeps (1, 2,
    5, 10 ... 100 ms), which made the p99 of the token endpoint grow tenfold under load. A
    request still running after ``active`` seconds is most likely waiting on an upstream API,
    holding no CPU: it stops counting, so a stalled upstream holds threads, not the worker."""

    def __init__(self, limit: int, active: float) -> None:
        self.limit = limit
        self.active = active
        self.waiting: deque[tuple[Any, Any]] = deque()  # (key, job), in arrival order
        self.running: dict[Any, float] = {}  # key -> when it was admitted

    def add(self, key: Any, job: Any) -> None:
        self.waiting.append((key, job))

    def done(self, key: Any) -> None:
        self.running.pop(key, None)

    def _counted(self, now: float) -> int:
        return sum(1 for started in self.running.values() if now - started < self.active)

    def admit(self, now: float) -> list[Any]:
        """The jobs that may start now, in arrival order."""
        admitted = []
        while self.waiting and (not self.limit or self._counted(now) < self.limit):
            key, job = self.waiting.popleft()
            self.running[key] = now
            admitted.append(job)
        return admitted

    def next_change(self, now: float) -> float | None:
        """Seconds until a running request stops counting, while some wait for it."""
        if not self.waiting:
            return None
        ends = [started + self.active - now for started in self.running.values() if now - started < self.active]
        return max(0.0, min(ends)) if ends else 0.0


class _Slot:
    """An idle thread's mailbox: the next job is put here and the event set."""

    __slots__ = ("event", "job")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.job: _Job | None = None


_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]


class RequestThreads:
    """At most ``size`` threads, started only when no thread is idle, each running a job and
    handing its result to the job's ``done`` once the thread is idle again.

    The most recently idle thread takes the next job: under light load a few threads do all
    the work and keep their SQLite connection and its page cache warm, while the rest (the
    ones a burst of slow upstream calls needed) wait. Jobs beyond ``size`` queue in order. The
    threads are daemons: the interpreter does not wait for them at exit, so SIGQUIT/SIGINT
    stop a worker at once and SIGTERM within ``graceful_timeout`` even while a job waits on a
    stalled upstream (``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit)."""

    def __init__(self, size: int, name: str = "request") -> None:
        self.size = size
        self.name = name
        self.lock = threading.Lock()
        self.idle: list[_Slot] = []  # a stack: the last one to finish is the first reused
        self.backlog: deque[_Job] = deque()
        self.started = 0

    def submit(self, call: Callable[..., Any], done: Callable[[Any], None], *args: Any) -> None:
        job: _Job = (call, args, done)
        with self.lock:
            if self.idle:
                slot = self.idle.pop()
                slot.job = job
                slot.event.set()
                return
            if self.started >= self.size:
                self.backlog.append(job)
                return
            self.started += 1
            number = self.started
        threading.Thread(target=self._work, args=(_Slot(), job), name=f"{self.name}-{number}", daemon=True).start()

    def _work(self, slot: _Slot, job: _Job | None) -> None:
        while job is not None:
            call, args, done = job
            result = None
            try:
                result = call(*args)
            except BaseException:  # noqa: BLE001 - jobs report their own errors; the thread serves on
                pass
            with self.lock:
                if self.backlog:
                    job = self.backlog.popleft()
                else:
                    job = None
                    slot.event.clear()
                    self.idle.append(slot)
            # Reported only now, so that what the loop submits next finds this thread idle.
            done(result)
            if job is None:
                slot.event.wait()
                job, slot.job = slot.job, None


class _Connection:
    __slots__ = ("sock", "client", "server", "buffer", "since", "receiving", "fresh", "busy",
                 "watched", "closed", "linger_until", "lingered")

    def __init__(self, sock: socket.socket, client: Any, server: Any, buffer: RequestBuffer, now: float) -> None:
        self.sock = sock
        self.client = client
        self.server = server
        self.buffer = buffer
        # When the current phase began: the first byte of the request being received, or the
        # moment the connection became idle (accepted, or its last response sent).
        self.since = now
        self.receiving = False  # some byte of the current request has arrived
        self.fresh = True  # no request seen yet: its idle time is bounded by the header deadline
        self.busy = False  # a pool thread owns the socket
        self.watched = False  # registered with the selector
        self.closed = False
        self.linger_until: float | None = None
        self.lingered = 0


class BufferingWorker(base.Worker):  # type: ignore[misc]
    """gunicorn worker: an event loop that buffers whole requests, a thread pool that serves
    them (``threads``), at most ``worker_connections`` open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alive: bool = True
        self.limits = serving_limits(os.environ)
        self.connections: set[_Connection] = set()
        # Idle kept-alive connections, oldest first: the first to go when the worker is full.
        self.idle: dict[_Connection, None] = {}
        self.finished: queue.SimpleQueue[tuple[_Connection, bool]] = queue.SimpleQueue()
        self.accepting = False
        self.accept_paused_until = 0.0
        self.next_tick = 0.0
        self.stopping_at: float | None = None
        self.server_names: dict[int, Any] = {}
        self.count_lock = threading.Lock()
        self.admission = Admission(self.limits.active_requests, self.limits.active_ms / 1000)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        problems = []
        if cfg.is_ssl:
            problems.append("TLS (certfile/keyfile): terminate TLS in the proxy in front")
        protocols = getattr(cfg, "http_protocols", ["h1"])
        if any(protocol != "h1" for protocol in protocols):
            problems.append(f"http_protocols={','.join(protocols)}: only h1 is served")
        if getattr(cfg, "http2_cleartext", "off") != "off":
            problems.append(f"http2_cleartext={cfg.http2_cleartext}: only HTTP/1.1 is served")
        if cfg.protocol != "http":
            problems.append(f"protocol={cfg.protocol}: only http is served")
        if cfg.proxy_protocol != "off":
            problems.append(f"proxy_protocol={cfg.proxy_protocol}: not supported")
        if problems:
            raise RuntimeError(f"{cls.__name__} does not support " + "; ".join(problems))
        try:
            serving_limits(os.environ)
        except ConfigError as exc:
            raise RuntimeError(str(exc)) from None

    # -- process life ------------------------------------------------------------------------

    def init_process(self) -> None:
        self.tpool = RequestThreads(self.cfg.threads)
        self.poller = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        super().init_process()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is waking anyway

    def run(self) -> None:
        # Signals write to PIPE[1] (set_wakeup_fd), threads to the wake pipe: either ends a select.
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, _WAKE)
        self.poller.register(self.wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while self.alive:
                now = time.monotonic()
                self.tick(now)
                room = len(self.connections) < self.cfg.worker_connections or bool(self.idle)
                self.set_accepting(room and now >= self.accept_paused_until)
                self.poll(self.wait_at_most(self.next_tick))
                if self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    break
            self.stop_gracefully()
        finally:
            for connection in list(self.connections):
                self.close(connection)
            self.poller.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    def stop_gracefully(self) -> None:
        """Stop accepting; serve what is in flight and what is being received (within its
        deadlines), answering with ``Connection: close``, until ``graceful_timeout``."""
        self.set_accepting(False)
        self.stopping_at = time.monotonic()
        deadline = self.stopping_at + self.cfg.graceful_timeout
        while self.connections and time.monotonic() < deadline:
            now = time.monotonic()
            self.tick(now)
            self.poll(self.wait_at_most(min(self.next_tick, deadline)))

    def wait_at_most(self, until: float) -> float:
        """How long the next select may wait: until ``until``, or until a running request
        stops counting against the admission limit while others wait."""
        now = time.monotonic()
        timeout = max(0.0, until - now)
        change = self.admission.next_change(now)
        return timeout if change is None else min(timeout, change)

    def tick(self, now: float) -> None:
        if now < self.next_tick:
            return
        self.next_tick = now + TICK
        self.notify()
        for connection in list(self.connections):
            self.guarded(lambda c: self.expire(c, now), connection)

    def expire(self, connection: _Connection, now: float) -> None:
        if connection.busy:
            return
        if connection.linger_until is not None:
            if now >= connection.linger_until:
                self.close(connection)
            return
        limits = self.limits
        if not connection.receiving:
            deadline = connection.since + (limits.header_timeout if connection.fresh else self.cfg.keepalive)
            if self.stopping_at is not None:
                deadline = min(deadline, self.stopping_at + STOP_LINGER)
            if now >= deadline:
                self.close(connection)
            return
        if connection.buffer.head_complete:
            if now >= connection.since + limits.body_timeout:
                self.refuse(connection, Refusal(408, "Request Timeout", f"request not complete within {limits.body_timeout}s"))
        elif now >= connection.since + limits.header_timeout:
            self.refuse(connection, Refusal(408, "Request Timeout", f"headers not complete within {limits.header_timeout}s"))

    # -- the event loop ----------------------------------------------------------------------

    def set_accepting(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                listener.setblocking(False)
                self.poller.register(listener, selectors.EVENT_READ, _LISTENER)
            else:
                self.poller.unregister(listener)
        self.accepting = enabled

    def poll(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            if key.data is _LISTENER:
                self.accept(key.fileobj)
            elif key.data is _WAKE:
                self.drain(key.fd)
            else:
                self.guarded(self.readable, key.data)
        self.collect_finished()

    def guarded(self, step: Callable[[_Connection], None], connection: _Connection) -> None:
        """One connection's step; a failure (a bug) costs that connection, never the loop."""
        try:
            step(connection)
        except Exception:
            self.log.exception("Error in the event loop; closing the connection")
            self.close(connection)

    def drain(self, fd: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def accept(self, listener: Any) -> None:
        for _ in range(ACCEPT_BURST):
            if len(self.connections) >= self.cfg.worker_connections and not self.evict_idle():
                return
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: the listener stays readable, so stop
                    # accepting for a moment instead of spinning on it.
                    self.log.warning("cannot accept a connection: %s", exc)
                    self.accept_paused_until = time.monotonic() + TICK
                    self.set_accepting(False)
                    return
                raise
            sock.setblocking(False)
            server = self.server_names.get(listener.fileno())
            if server is None:
                server = self.server_names[listener.fileno()] = listener.getsockname()
            connection = _Connection(sock, client, server, RequestBuffer(self.cfg, self.limits, client), time.monotonic())
            self.connections.add(connection)
            # Loopback clients and proxies often send the request with the handshake.
            self.guarded(self.readable, connection)

    def evict_idle(self) -> bool:
        """Make room by closing the longest-idle kept-alive connection, if there is one."""
        for connection in self.idle:
            self.close(connection)
            return True
        return False

    def readable(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            self.settle(connection)
            return
        except OSError:
            self.close(connection)
            return
        if not data:
            # The client closed its side: mid-request it will not complete, idle it is done.
            self.close(connection)
            return
        if connection.linger_until is not None:
            connection.lingered += len(data)
            if connection.lingered > LINGER_BYTES:
                self.close(connection)
            return
        if not connection.receiving:
            connection.receiving = True
            connection.since = time.monotonic()
            self.idle.pop(connection, None)
        connection.buffer.feed(data)
        self.frame(connection)

    def frame(self, connection: _Connection) -> None:
        buffer = connection.buffer
        try:
            ready = buffer.frame()
        except Refusal as refusal:
            self.refuse(connection, refusal)
            return
        except Exception as exc:  # gunicorn's request errors: its own 400/414/417/431/501 pages
            self.handle_error(buffer.request, connection.sock, connection.client, exc)
            self.linger(connection)
            return
        if ready is None:
            if buffer.continue_due:
                buffer.continue_due = False
                if not self.send_now(connection, CONTINUE):
                    self.close(connection)
                    return
            self.settle(connection)
            return
        self.dispatch(connection, ready)

    def dispatch(self, connection: _Connection, ready: Ready) -> None:
        connection.busy = True
        connection.receiving = False
        connection.fresh = False
        self.settle(connection)
        self.admission.add(connection, (connection, ready))
        self.start_admitted()

    def start_admitted(self) -> None:
        for connection, ready in self.admission.admit(time.monotonic()):
            self.tpool.submit(self.serve, partial(self.report, connection), connection, ready)

    def collect_finished(self) -> None:
        while True:
            try:
                connection, keep_alive = self.finished.get_nowait()
            except queue.Empty:
                break
            connection.busy = False
            self.admission.done(connection)
            self.guarded(self.resume if keep_alive else self.linger, connection)
        # Finished requests make room, and so does time: a running one may have stopped counting.
        self.start_admitted()

    def resume(self, connection: _Connection) -> None:
        """After a response that keeps the connection: the next request, or idleness."""
        if connection.closed:
            return
        connection.sock.setblocking(False)
        connection.since = time.monotonic()
        if connection.buffer.data:
            # Pipelined: the next request (or its start) is already here (RFC 9112 §9.3.2).
            connection.receiving = True
            self.frame(connection)
        else:
            self.idle[connection] = None
            self.settle(connection)

    def settle(self, connection: _Connection) -> None:
        """Watch the socket exactly while the loop, not a thread, owns an open connection."""
        want = not connection.busy and not connection.closed
        if want and not connection.watched:
            self.poller.register(connection.sock, selectors.EVENT_READ, connection)
            connection.watched = True
        elif not want and connection.watched:
            self.poller.unregister(connection.sock)
            connection.watched = False

    def send_now(self, connection: _Connection, data: bytes) -> bool:
        """A short write from the loop that must not block it: all or nothing."""
        try:
            return connection.sock.send(data) == len(data)
        except OSError:
            return False

    def refuse(self, connection: _Connection, refusal: Refusal) -> None:
        peer = connection.client[0] if isinstance(connection.client, tuple) else connection.client
        if refusal.status == 408:
            self.log.info("Request timeout from ip=%s: %s", peer, refusal.detail)
        else:
            self.log.warning("Invalid request from ip=%s: %s", peer, refusal.detail)
        self.send_now(connection, error_response(refusal.status, refusal.reason))
        self.linger(connection)

    def linger(self, connection: _Connection) -> None:
        """Close after the last response (RFC 9112 §9.6): half-close, then discard what the
        client still sends for a moment, so unread bytes do not reset the connection and
        destroy the response before the client read it."""
        if connection.closed:
            return
        self.idle.pop(connection, None)
        try:
            connection.sock.setblocking(False)
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close(connection)
            return
        connection.linger_until = time.monotonic() + LINGER
        connection.receiving = False
        self.settle(connection)

    def close(self, connection: _Connection) -> None:
        if connection.closed:
            return
        if connection.watched:
            try:
                self.poller.unregister(connection.sock)
            except (KeyError, ValueError):
                pass
            connection.watched = False
        connection.closed = True
        self.idle.pop(connection, None)
        self.connections.discard(connection)
        try:
            connection.sock.close()
        except OSError:
            pass

    # -- in a pool thread --------------------------------------------------------------------

    def report(self, connection: _Connection, keep_alive: bool | None) -> None:
        """Hand the connection back to the loop (from the thread, once it is idle)."""
        self.finished.put((connection, bool(keep_alive)))
        self.wake()

    def serve(self, connection: _Connection, ready: Ready) -> bool:
        request = ready.request
        sock = connection.sock
        try:
            # A client that does not read its response cannot hold this thread for ever.
            sock.settimeout(self.limits.write_timeout)
            if ready.chunked:
                decode_chunked(request)
            return self.handle_request(request, connection)
        except _Abandoned:
            return False
        except TimeoutError:
            self.log.info("Client did not read its response within %ss", self.limits.write_timeout)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.debug("Client went away: %s", exc)
            else:
                self.log.exception("Socket error processing request.")
        except Exception as exc:
            self.handle_error(request, sock, connection.client, exc)
        return False

    def handle_request(self, request: Any, connection: _Connection) -> bool:
        """gthread's handle_request: gunicorn's environ, response, access log and hooks."""
        environ: dict[str, Any] = {}
        response = None
        try:
            self.cfg.pre_request(self, request)
            request_start = datetime.now()
            response, environ = wsgi.create(request, connection.sock, connection.client, connection.server, self.cfg)
            environ["wsgi.multithread"] = True
            with self.count_lock:
                self.nr += 1
                if self.nr >= self.max_requests and self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                    self.wake()
            if not self.alive or not self.cfg.keepalive:
                response.force_close()
            body = self.wsgi(environ, response.start_response)
            if not self.alive:
                # The worker began stopping while the application ran: say so before the head.
                response.force_close()
            try:
                if isinstance(body, environ["wsgi.file_wrapper"]):
                    response.write_file(body)
                else:
                    for item in body:
                        response.write(item)
                response.close()
            finally:
                self.log.access(response, request, environ, datetime.now() - request_start)
                if hasattr(body, "close"):
                    body.close()
            return not response.should_close() and not getattr(request.body, "failed", False)
        except OSError:
            raise
        except (Exception, SystemExit):
            if response is not None and response.headers_sent:
                # Writing a 500 after part of a response would corrupt it: log and close.
                self.log.exception("Error handling request")
                raise _Abandoned() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, request, environ, response)
            except Exception:
                self.log.exception("Exception in post_request hook")


class _Abandoned(Exception):
    """The response broke off after its head was sent; the connection just closes."""
