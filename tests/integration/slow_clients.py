"""Slow clients on loopback, for the serving tests: connections that trickle a request's head or
body a byte at a time and reconnect whenever the server closes them, so that a fixed number of
them is always open (the attack a server without read deadlines cannot survive)."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Trickler:
    kind: str  # "head" or "body"
    sock: socket.socket
    pending: bytes  # what is still to be sent, a byte a tick
    opened: float
    received: bytes = b""


@dataclass
class TrickleStats:
    opened: int = 0
    # Status lines the server answered tricklers with (408 expected), and closes without one.
    statuses: list[str] = field(default_factory=list)
    silent_closes: int = 0
    # Seconds from a trickler's connect to the server's answer or close, by kind.
    lifetimes: dict[str, list[float]] = field(default_factory=lambda: {"head": [], "body": []})


def head_trickle(host: str) -> tuple[bytes, bytes]:
    """(sent at once, then a byte a tick): a head that never ends."""
    return b"", (f"POST /oauth/token HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"X-Slow-{n}: {'a' * 8}\r\n" for n in range(400))).encode()


def body_trickle(host: str, length: int = 1000) -> tuple[bytes, bytes]:
    """(sent at once, then a byte a tick): a whole head, then a form body a byte a second."""
    head = (
        f"POST /oauth/token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    return head, b"grant_type=refresh_token&refresh_token=" + b"x" * (length - 39)


class Tricklers:
    """``heads`` + ``bodies`` connections to ``host:port`` in one thread, each sending one byte
    every ``interval`` seconds; one the server closes is replaced by a fresh one."""

    def __init__(self, host: str, port: int, *, heads: int, bodies: int, interval: float = 1.0) -> None:
        self.address = (host, port)
        self.heads = heads
        self.bodies = bodies
        self.interval = interval
        self.stats = TrickleStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._open: set[_Trickler] = set()
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def __enter__(self) -> Tricklers:
        self._thread.start()
        if not self.ready.wait(timeout=30) or self.error is not None:
            raise RuntimeError(f"tricklers could not connect: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for trickler in list(self._open):
            self._close(trickler)
        self._selector.close()

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    def snapshot(self) -> TrickleStats:
        with self._lock:
            return TrickleStats(
                self.stats.opened,
                list(self.stats.statuses),
                self.stats.silent_closes,
                {kind: list(values) for kind, values in self.stats.lifetimes.items()},
            )

    def _connect(self, kind: str) -> None:
        host = f"{self.address[0]}:{self.address[1]}"
        first, rest = head_trickle(host) if kind == "head" else body_trickle(host)
        sock = socket.create_connection(self.address, timeout=10)
        if first:
            sock.sendall(first)
        sock.setblocking(False)
        trickler = _Trickler(kind, sock, rest, time.monotonic())
        self._selector.register(sock, selectors.EVENT_READ, trickler)
        with self._lock:
            self._open.add(trickler)
            self.stats.opened += 1

    def _close(self, trickler: _Trickler) -> None:
        try:
            self._selector.unregister(trickler.sock)
        except (KeyError, ValueError):
            pass
        trickler.sock.close()
        with self._lock:
            self._open.discard(trickler)

    def _ended(self, trickler: _Trickler) -> None:
        with self._lock:
            self.stats.lifetimes[trickler.kind].append(time.monotonic() - trickler.opened)
            if trickler.received:
                self.stats.statuses.append(trickler.received.split(b"\r\n", 1)[0].decode("latin-1"))
            else:
                self.stats.silent_closes += 1
        self._close(trickler)
        if not self._stop.is_set():
            self._connect(trickler.kind)

    def _run(self) -> None:
        try:
            self._trickle()
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            raise

    def _trickle(self) -> None:
        for _ in range(self.heads):
            self._connect("head")
        for _ in range(self.bodies):
            self._connect("body")
        self.ready.set()
        next_send = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                next_send = now + self.interval
                for trickler in list(self._open):
                    self._send_byte(trickler)
            for key, _ in self._selector.select(max(0.0, next_send - time.monotonic())):
                self._read(key.data)

    def _send_byte(self, trickler: _Trickler) -> None:
        if not trickler.pending:
            return
        try:
            sent = trickler.sock.send(trickler.pending[:1])
        except BlockingIOError:
            return
        except OSError:
            self._ended(trickler)
            return
        trickler.pending = trickler.pending[sent:]

    def _read(self, trickler: _Trickler) -> None:
        if trickler not in self._open:
            return
        try:
            data = trickler.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            trickler.received += data
            return
        self._ended(trickler)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class RawClient:
    """One HTTP/1.1 connection driven byte for byte: for what requests and http.client do not
    send (pipelining, trickles, broken framing, Expect: 100-continue)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> RawResponse:
        """The next response (an interim 1xx one included), framed by its Content-Length."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a whole response head: {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed before the whole response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(status, headers, body)

    def until_closed(self, timeout: float) -> tuple[bytes, float]:
        """Everything until the server closes the connection, and how many seconds that took."""
        started = time.monotonic()
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        data, self.buffer = self.buffer, b""
        return data, time.monotonic() - started

    def is_open(self, wait: float = 0.2) -> bool:
        """Whether the server still holds the connection open (nothing arrives, no EOF)."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except (socket.timeout, BlockingIOError):
            return True
        except OSError:
            return False
        return bool(data)
