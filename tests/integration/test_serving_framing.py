"""How the serving worker's loop frames requests in a connection's bytes (RFC 9112 §2.2, §6.3,
§7.1) before a thread serves them, with gunicorn's own parser, and its settings; no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    InvalidHeader,
    InvalidRequestLine,
    LimitRequestLine,
)

from mcp_oauth_bridge.entrypoints.config import ConfigError
from mcp_oauth_bridge.entrypoints.worker import (
    Admission,
    Ready,
    Refusal,
    RequestBuffer,
    ServingLimits,
    decode_chunked,
    error_response,
    serving_limits,
)

LIMITS = ServingLimits(max_header_bytes=16 * 1024, max_body_bytes=1000)


def buffer() -> RequestBuffer:
    return RequestBuffer(Config(), LIMITS, ("127.0.0.1", 40000))


def feed(target: RequestBuffer, data: bytes) -> list[Ready]:
    """Feed ``data`` a byte at a time, collecting every request framed on the way."""
    framed = []
    for index in range(len(data)):
        target.feed(data[index:index + 1])
        ready = target.frame()
        while ready is not None:
            framed.append(ready)
            ready = target.frame()
    return framed


def body_of(ready: Ready) -> bytes:
    if ready.chunked:
        decode_chunked(ready.request)
    data: bytes = ready.request.body.read()
    return data


def test_a_head_is_framed_only_once_complete_and_parsed_by_gunicorn() -> None:
    target = buffer()
    request = b"GET /a?b=c HTTP/1.1\r\nHost: example\r\nX-One: 1\r\n\r\n"
    target.feed(request[:-1])
    assert target.frame() is None and not target.head_complete
    target.feed(request[-1:])
    ready = target.frame()
    assert ready is not None
    assert (ready.request.method, ready.request.path, ready.request.query) == ("GET", "/a", "b=c")
    assert ("X-ONE", "1") in ready.request.headers
    assert body_of(ready) == b""
    assert target.data == bytearray()


def test_content_length_bodies_and_pipelined_requests_are_split_exactly() -> None:
    target = buffer()
    stream = (
        b"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /three HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /fo"  # the start of a fourth request stays buffered
    )
    framed = feed(target, stream)
    assert [ready.request.path for ready in framed] == ["/one", "/two", "/three"]
    assert [body_of(ready) for ready in framed] == [b"hello", b"", b"abc"]
    assert [ready.request.req_number for ready in framed] == [1, 2, 3]
    assert target.data == bytearray(b"GET /fo") and not target.head_complete


def test_a_chunked_body_ends_after_the_last_chunk_and_its_trailers() -> None:
    target = buffer()
    body = b"4\r\nwiki\r\n5;ext=\"q v\"\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n"
    framed = feed(target, b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"GET /next HTTP/1.1\r\n")
    assert len(framed) == 1 and framed[0].chunked
    assert body_of(framed[0]) == b"wikipedia in\r\n\r\nchunks."
    assert framed[0].request.trailers == [("EXPIRES", "never")]
    assert target.data == bytearray(b"GET /next HTTP/1.1\r\n")


def test_a_chunked_body_without_trailers_ends_at_the_empty_line() -> None:
    target = buffer()
    framed = feed(target, b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert len(framed) == 1 and body_of(framed[0]) == b""


@pytest.mark.parametrize("head, due", [
    (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", True),
    (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    # No body to wait for, a body already on its way, HTTP/1.0 (RFC 9110 §10.1.1: ignore it).
    (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", False),
    (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\na", False),
    (b"POST / HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", False),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", False),
])
def test_100_continue_is_due_once_when_a_body_is_awaited(head: bytes, due: bool) -> None:
    target = buffer()
    target.feed(head)
    target.frame()
    assert target.continue_due is due
    # gunicorn's wsgi.create must never send a second one from the thread.
    if target.request is not None:
        assert target.request._expected_100_continue is False


def refusal_of(data: bytes) -> Refusal:
    target = buffer()
    with pytest.raises(Refusal) as caught:
        feed(target, data)
    return caught.value


def test_a_body_over_the_cap_is_refused_before_it_is_read() -> None:
    assert refusal_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n").status == 413
    # Chunked: by the sum of the chunk sizes, as soon as a chunk-size line passes the cap ...
    assert refusal_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n").status == 413
    # ... and by the bytes its framing takes: 1-byte chunks with long extensions.
    chunks = b"".join(b"1;e=" + b"v" * 200 + b"\r\nx\r\n" for _ in range(60))
    assert refusal_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks).status == 413
    # Exactly at the cap is fine.
    target = buffer()
    framed = feed(target, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000)
    assert body_of(framed[0]) == b"b" * 1000


def test_a_head_over_the_cap_is_431_unless_gunicorn_objects_first() -> None:
    filler = b"".join(b"X-F%d: %s\r\n" % (n, b"f" * 1000) for n in range(17))
    assert refusal_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + filler).status == 431
    assert refusal_of(b"GET / HTTP/1.1\r\nHost: h\r\n" + filler + b"\r\n").status == 431
    # A request line over gunicorn's limit_request_line is its 414, said as soon as it is seen.
    with pytest.raises(LimitRequestLine):
        feed(buffer(), b"GET /" + b"a" * 17000)


@pytest.mark.parametrize("data, error", [
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", InvalidHeader),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", InvalidHeader),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n", InvalidHeader),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", InvalidHeader),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", InvalidChunkSize),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", ChunkMissingTerminator),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;a b\r\n", InvalidChunkExtension),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\n", InvalidHeader),
    # A bare LF is refused at once, not after waiting for a CRLF CRLF that never comes.
    (b"GET / HTTP/1.1\nHost", InvalidRequestLine),
    (b"GET / HTTP/1.1\r\nHost: h\nX", InvalidHeader),
])
def test_broken_framing_raises_gunicorns_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        feed(buffer(), data)


def test_error_responses_close_the_connection() -> None:
    assert error_response(408, "Request Timeout") == (
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 20\r\n\r\n408 Request Timeout\n"
    )


def test_serving_limits_default_and_come_from_the_environment() -> None:
    assert serving_limits({}) == ServingLimits(
        threads=32, connections=1000, keepalive=75, header_timeout=10, body_timeout=30,
        max_header_bytes=65536, max_body_bytes=1114112, write_timeout=30, active_requests=1, active_ms=20,
    )
    env: dict[str, Any] = {
        "WORKER_THREADS": "8", "WORKER_CONNECTIONS": "50", "KEEPALIVE_TIMEOUT": "0", "REQUEST_HEADER_TIMEOUT": "5",
        "REQUEST_BODY_TIMEOUT": "5", "MAX_REQUEST_HEADER_BYTES": "8192", "MAX_REQUEST_BODY_BYTES": "0",
        "RESPONSE_WRITE_TIMEOUT": "1", "WORKER_ACTIVE_REQUESTS": "0", "WORKER_ACTIVE_MS": "250",
    }
    assert serving_limits(env) == ServingLimits(8, 50, 0, 5, 5, 8192, 0, 1, 0, 250)


@pytest.mark.parametrize("env, message", [
    ({"WORKER_THREADS": "many"}, "WORKER_THREADS must be an integer number of threads, got 'many'"),
    ({"WORKER_THREADS": "0"}, "WORKER_THREADS must be at least 1, got 0"),
    ({"REQUEST_HEADER_TIMEOUT": "1.5"}, "REQUEST_HEADER_TIMEOUT must be an integer number of seconds"),
    ({"MAX_REQUEST_HEADER_BYTES": "1024"}, "MAX_REQUEST_HEADER_BYTES must be at least 8192"),
    ({"REQUEST_HEADER_TIMEOUT": "40"}, "REQUEST_BODY_TIMEOUT (30) counts from the request's first byte"),
])
def test_wrong_serving_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        serving_limits(env)


def test_admission_runs_one_request_at_a_time_until_it_has_run_too_long() -> None:
    admission = Admission(limit=1, active=0.02)
    for name in ("a", "b", "c"):
        admission.add(name, f"job {name}")
    assert admission.admit(100.0) == ["job a"]
    assert admission.admit(100.01) == []  # a is running and still counts
    assert admission.next_change(100.01) == pytest.approx(0.01)
    # a has run over 20 ms: it is waiting on something (an upstream API), b may start.
    assert admission.admit(100.025) == ["job b"]
    admission.done("b")  # b finished at once: c starts, a still does not count
    assert admission.admit(100.026) == ["job c"]
    assert admission.next_change(100.026) is None  # nothing waits


def test_admission_without_a_limit_starts_everything() -> None:
    admission = Admission(limit=0, active=0.02)
    admission.add("a", 1)
    admission.add("b", 2)
    assert admission.admit(5.0) == [1, 2]
