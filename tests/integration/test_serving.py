"""The serving worker (src/entrypoints/worker.py) under real gunicorn, with a tiny application
(tests/integration/serving_app.py): keep-alive and pipelining (RFC 9112 §9.3), chunked bodies
(§7.1), Expect: 100-continue (RFC 9110 §10.1.1), deadlines (408), caps (413, 431), broken
framing (400), and the worker's life (errors, access log, write timeout, SIGTERM, heartbeat,
max_requests, refused settings)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from .servers import REPO_ROOT, RunningServer, running_server
from .slow_clients import RawClient, RawResponse

pytestmark = [pytest.mark.slow, pytest.mark.serial]

APP = "tests.integration.serving_app:app"


def gunicorn(*extra: str, workers: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}",
        "--workers", str(workers), *extra, APP,
    ]


def port_of(server: RunningServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def get(path: str, *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: test\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n" + "".join(h + "\r\n" for h in headers)
    return head.encode() + b"\r\n" + body


def echoed(response: RawResponse) -> dict[str, Any]:
    assert response.status == 200, response
    reply: dict[str, Any] = json.loads(response.body)
    return reply


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default configuration (gunicorn.conf.py), serving the tiny application."""
    with running_server(tmp_path_factory.mktemp("serving"), command=gunicorn()) as running:
        yield running


# -- keep-alive, pipelining, chunked bodies, 100-continue ------------------------------------------


def test_requests_on_one_connection_are_served_and_it_stays_open(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        for number in range(3):
            client.send(post("/echo", f"request {number}".encode(), "Connection: keep-alive"))
            response = client.response()
            assert echoed(response)["body"] == f"request {number}"
            assert response.headers["connection"] == "keep-alive"
            assert client.is_open()


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        # Three requests in one write, a body in the middle; the server reads ahead into the
        # next request and must keep those bytes for it.
        client.send(get("/echo?first") + post("/echo", b"second body") + get("/slow?seconds=0") + get("/echo"))
        assert echoed(client.response())["method"] == "GET"
        assert echoed(client.response())["body"] == "second body"
        assert client.response().body == b"slept\n"
        assert echoed(client.response())["path"] == "/echo"
        assert client.is_open()


def test_a_chunked_body_reaches_the_application_whole_and_terminated(server: RunningServer) -> None:
    body = (
        b"5\r\nhello\r\n"
        b"1;name=value;quoted=\"a b\"\r\n \r\n"  # chunk extensions (RFC 9112 §7.1.1) are ignored
        b"6\r\nchunks\r\n"
        b"0\r\nX-Trailer: ignored\r\n\r\n"  # a trailer section (§7.1.2)
    )
    with RawClient(port_of(server)) as client:
        # Bytes arriving one at a time must frame the same way.
        request = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" + body + get("/echo")
        for index in range(len(request)):
            client.send(request[index:index + 1])
        reply = echoed(client.response())
        assert reply["body"] == "hello chunks"
        assert reply["content_length"] is None
        # The application reads to the end of the stream, as schemas.py's _form_body does.
        assert reply["input_terminated"] is True
        assert echoed(client.response())["method"] == "GET"  # the pipelined request after it


def test_expect_100_continue_is_answered_once_before_the_body(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = client.response()
        assert interim.status == 100
        client.send(b"data")
        final = client.response()
        assert echoed(final)["body"] == "data"
        assert echoed(final)["expect"] == "100-continue"
        # Not a second 100 from the thread: the next bytes are the next response's.
        client.send(get("/echo"))
        assert client.response().status == 200
    # A body sent along with the head needs no 100 (RFC 9110 §10.1.1 "MAY omit").
    with RawClient(port_of(server)) as client:
        client.send(post("/echo", b"data", "Expect: 100-continue"))
        assert client.response().status == 200


# -- what the application sees, its errors, the access log ---------------------------------------


def test_environ_is_gunicorns(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        client.send(get("/echo"))
        reply = echoed(client.response())
        assert reply["remote_addr"] == "127.0.0.1"
        assert reply["remote_port"] == str(client.local_port)
        assert reply["multithread"] is True
        assert reply["content_length"] is None and reply["body"] == ""


def test_an_application_error_is_gunicorns_500_page_and_is_logged(server: RunningServer) -> None:
    reply = requests.get(server.base_url + "/boom", timeout=10)
    assert reply.status_code == 500
    assert "Internal Server Error" in reply.text
    assert "the application failed on purpose" not in reply.text
    deadline = time.monotonic() + 5
    while "the application failed on purpose" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert "Error handling request GET /boom" in log
    assert "RuntimeError: the application failed on purpose" in log
    # The worker survived: the next request is served.
    assert requests.get(server.base_url + "/echo", timeout=10).status_code == 200


def test_the_access_log_keeps_its_format_without_query_strings(server: RunningServer) -> None:
    assert requests.get(server.base_url + "/echo?code=secret-code-value", timeout=10).status_code == 200
    deadline = time.monotonic() + 5
    while '"GET /echo HTTP/1.1" 200' not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert '127.0.0.1 "GET /echo HTTP/1.1" 200 ' in log
    assert "secret-code-value" not in log


# -- broken framing and caps -----------------------------------------------------------------------

BROKEN = {
    "Content-Length and Transfer-Encoding": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxx",
    "a Content-Length that is not a number": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\nx",
    "a chunk size that is not hex": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "a chunk without its CRLF": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
    "a bad chunk extension": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;=\r\nab\r\n0\r\n\r\n",
    "a forbidden trailer": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n",
    "chunked in HTTP/1.0": b"POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a bare LF in the head": b"GET /echo HTTP/1.1\nHost: t\n",
    "a request line that is not one": b"GET\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", BROKEN.values(), ids=list(BROKEN))
def test_broken_framing_is_a_400_and_the_connection_closes(server: RunningServer, request_bytes: bytes) -> None:
    with RawClient(port_of(server)) as client:
        client.send(request_bytes)
        response = client.response()
        assert response.status == 400
        assert response.headers["connection"] == "close"
        rest, seconds = client.until_closed(timeout=5)
        assert rest == b"" and seconds < 5


def test_a_body_over_the_cap_is_413_without_being_read(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        # Only the head is sent: the answer cannot wait for the 4 MiB.
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\nExpect: 100-continue\r\n\r\n")
        response = client.response()
        assert response.status == 413  # and no 100 (Continue) before it
        assert response.headers["connection"] == "close"
    with RawClient(port_of(server)) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n400000\r\n")
        assert client.response().status == 413
    # Up to the cap, the body is the application's to judge.
    with RawClient(port_of(server)) as client:
        client.send(post("/echo", b"b" * (1024 * 1024 + 1)))
        assert len(echoed(client.response())["body"]) == 1024 * 1024 + 1


def test_a_head_over_the_cap_is_431(server: RunningServer) -> None:
    with RawClient(port_of(server)) as client:
        client.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-Filler-%d: %s\r\n" % (n, b"f" * 1000) for n in range(70)))
        response = client.response()
        assert response.status == 431
        assert response.headers["connection"] == "close"


# -- deadlines -------------------------------------------------------------------------------------


def run_concurrently(checks: list[Callable[[], None]]) -> None:
    """Run the checks in threads (they mostly wait) and re-raise the first failure."""
    failures: list[BaseException] = []

    def run(check: Callable[[], None]) -> None:
        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(check,)) for check in checks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if failures:
        raise failures[0]


def stalled_head(port: int, low: float, high: float) -> Callable[[], None]:
    def check() -> None:
        with RawClient(port) as client:
            client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Partial: ")
            data, seconds = client.until_closed(timeout=high + 5)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"Connection: close" in data
            assert low <= seconds <= high, seconds
    return check


def stalled_body(port: int, low: float, high: float) -> Callable[[], None]:
    def check() -> None:
        with RawClient(port) as client:
            client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\npartial")
            data, seconds = client.until_closed(timeout=high + 5)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            assert low <= seconds <= high, seconds
    return check


def test_short_deadlines_count_from_the_first_byte_and_idle_connections_close_silently(tmp_path: Path) -> None:
    env = {"REQUEST_HEADER_TIMEOUT": "2", "REQUEST_BODY_TIMEOUT": "4", "KEEPALIVE_TIMEOUT": "3"}
    with running_server(tmp_path, command=gunicorn(), **env) as server:
        port = port_of(server)

        def trickled_body_past_the_request_deadline() -> None:
            # Each byte arrives well within any per-read timeout; the whole request does not.
            with RawClient(port) as client:
                client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
                started = time.monotonic()
                client.sock.settimeout(0.5)
                received = b""
                while time.monotonic() - started < 10 and not received:
                    try:
                        client.send(b"x")
                        received = client.sock.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                assert received.startswith(b"HTTP/1.1 408 "), received
                assert 3 <= time.monotonic() - started <= 7

        def new_connection_that_sends_nothing() -> None:
            with RawClient(port) as client:
                data, seconds = client.until_closed(timeout=10)
                assert data == b""  # nothing of a request arrived: no 408, just the close
                assert 1.5 <= seconds <= 5, seconds

        def idle_kept_alive_connection() -> None:
            with RawClient(port) as client:
                client.send(get("/echo"))
                assert client.response().status == 200
                data, seconds = client.until_closed(timeout=10)
                assert data == b""
                assert 2.5 <= seconds <= 6, seconds

        run_concurrently([
            stalled_head(port, 1.5, 5),
            stalled_body(port, 3.5, 7),
            trickled_body_past_the_request_deadline,
            new_connection_that_sends_nothing,
            idle_kept_alive_connection,
        ])



# -- admission: one request runs at a time per worker, unless it waits on something ----------------


def concurrently(urls: list[str]) -> list[requests.Response]:
    replies: dict[int, requests.Response] = {}
    barrier = threading.Barrier(len(urls))

    def fetch(index: int) -> None:
        barrier.wait(timeout=10)
        replies[index] = requests.get(urls[index], timeout=30)

    threads = [threading.Thread(target=fetch, args=(index,)) for index in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return [replies[index] for index in range(len(urls))]


def test_cpu_bound_requests_run_one_after_another_in_a_worker(tmp_path: Path) -> None:
    with running_server(tmp_path, command=gunicorn(workers=1), WORKER_ACTIVE_MS="5000") as server:
        replies = concurrently([server.base_url + "/spin?seconds=0.2"] * 3)
    spans = sorted((reply.json()["started"], reply.json()["ended"]) for reply in replies)
    for (_, ended), (started, _) in zip(spans, spans[1:]):
        assert started >= ended, spans  # no overlap: each began after the previous one ended


def test_a_request_waiting_on_something_does_not_hold_up_the_next(tmp_path: Path) -> None:
    with running_server(tmp_path, command=gunicorn(workers=1)) as server:
        slow = threading.Thread(target=lambda: requests.get(server.base_url + "/slow?seconds=6", timeout=30))
        slow.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert requests.get(server.base_url + "/echo", timeout=30).status_code == 200
        # Not after the 6 s call: it stopped counting against the limit after 20 ms.
        assert time.monotonic() - started < 3
        slow.join(timeout=30)


# -- the worker's life -----------------------------------------------------------------------------


def test_a_client_that_does_not_read_its_response_frees_its_thread(tmp_path: Path) -> None:
    env = {"WORKER_THREADS": "1", "RESPONSE_WRITE_TIMEOUT": "2"}
    with running_server(tmp_path, command=gunicorn(workers=1), **env) as server:
        with RawClient(port_of(server)) as stuck:
            stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.send(get("/big?bytes=50000000"))  # far more than the socket buffers hold
            time.sleep(0.5)
            # The one thread is blocked writing; once the write deadline passes it serves again.
            started = time.monotonic()
            reply = requests.get(server.base_url + "/echo", timeout=15)
            assert reply.status_code == 200
            assert time.monotonic() - started < 10
        assert "did not read its response within 2s" in server.log_text()


def test_a_busy_thread_does_not_stop_the_heartbeat_and_sigterm_lets_it_finish(tmp_path: Path) -> None:
    # With a 2-second worker timeout, a sync worker busy for 4 s would be killed by the arbiter.
    with running_server(tmp_path, command=gunicorn("--timeout", "2", workers=1)) as server:
        replies: list[requests.Response] = []
        slow = threading.Thread(target=lambda: replies.append(requests.get(server.base_url + "/slow?seconds=4", timeout=20)))
        slow.start()
        time.sleep(3)
        server.process.send_signal(signal.SIGTERM)
        slow.join(timeout=20)
        assert [reply.status_code for reply in replies] == [200]
        assert replies[0].headers["Connection"] == "close"  # a stopping worker closes
        assert server.process.wait(timeout=20) == 0
    log = server.log_text()
    assert "WORKER TIMEOUT" not in log
    assert '"GET /slow HTTP/1.1" 200' in log


@pytest.mark.parametrize("sig, graceful_timeout, limit", [
    (signal.SIGQUIT, "30", 3.0),  # immediate: the request waiting on its "upstream" is dropped
    (signal.SIGTERM, "2", 6.0),  # graceful, but no longer than graceful_timeout
])
def test_a_request_stuck_in_a_thread_does_not_hold_the_stop(tmp_path: Path, sig: int, graceful_timeout: str, limit: float) -> None:
    with running_server(tmp_path, command=gunicorn("--graceful-timeout", graceful_timeout, workers=1)) as server:
        with RawClient(port_of(server)) as client:
            client.send(get("/slow?seconds=60"))
            time.sleep(0.5)
            started = time.monotonic()
            server.process.send_signal(sig)
            server.process.wait(timeout=30)
            assert time.monotonic() - started < limit


def test_max_requests_restarts_the_worker_and_serving_goes_on(tmp_path: Path) -> None:
    command = gunicorn("--max-requests", "3", "--max-requests-jitter", "0", workers=1)
    with running_server(tmp_path, command=command) as server:
        statuses = [requests.get(server.base_url + "/echo", timeout=10).status_code for _ in range(10)]
        assert statuses == [200] * 10
        log = server.log_text()
    assert "Autorestarting worker after current request." in log
    assert log.count("Booting worker with pid") >= 3


@pytest.mark.parametrize("flags, refused", [
    (["--certfile", "cert.pem", "--keyfile", "key.pem"], "TLS"),
    (["--protocol", "uwsgi"], "protocol=uwsgi"),
    (["--proxy-protocol", "v1"], "proxy_protocol=v1"),
])
def test_what_it_does_not_serve_is_refused_at_start_up(tmp_path: Path, flags: list[str], refused: str) -> None:
    (tmp_path / "cert.pem").touch()
    (tmp_path / "key.pem").touch()
    flags = [str(tmp_path / flag) if flag.endswith(".pem") else flag for flag in flags]
    command = [part.replace("{port}", "0") for part in gunicorn(*flags, workers=1)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "BufferingWorker does not support" in result.stderr and refused in result.stderr


def test_a_wrong_setting_stops_the_server_naming_the_variable(tmp_path: Path) -> None:
    command = [part.replace("{port}", "0") for part in gunicorn(workers=1)]
    env = {**os.environ, "REQUEST_HEADER_TIMEOUT": "soon"}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    assert "REQUEST_HEADER_TIMEOUT must be an integer number of seconds, got 'soon'" in result.stderr
