"""SafeMetadataFetcher against scripted servers on loopback (draft-ietf-oauth-client-id-metadata-document
§5 only a 200, no redirects; §8.6 SSRF; §8.7 size): what it sends, which answers it refuses, its
deadlines, TLS pinned to the URL's name, merged concurrent fetches.

Names resolve through a stub resolver to loopback addresses and every connection goes through
LoopbackOnlyOpener, so nothing here can reach beyond the machine whatever the fetcher does.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from mcp_oauth_bridge.adapters.metadata_fetcher import SafeMetadataFetcher
from mcp_oauth_bridge.domain.ports import FetchedDocument, MetadataDocumentUnavailable

from .scripted_http import (
    Handler,
    LocalCA,
    LoopbackOnlyOpener,
    ScriptedHttpServer,
    answer,
    response_head,
    send_then_hold,
    trickle,
)

DOCUMENT = json.dumps({"client_id": "placeholder", "client_name": "bodymarker", "redirect_uris": []}).encode()
JSON = ("Content-Type", "application/json")

Serve = Callable[..., ScriptedHttpServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ScriptedHttpServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> ScriptedHttpServer:
        server = ScriptedHttpServer(handler, tls=tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class MapResolver:
    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        return self.names.get(host, [])


class Harness:
    def __init__(self, **options: Any) -> None:
        self.resolver = MapResolver({"localhost": ["127.0.0.1"]})
        self.opener = LoopbackOnlyOpener()
        options.setdefault("allow_loopback", True)
        self.fetcher = SafeMetadataFetcher(resolve=self.resolver, open_socket=self.opener, **options)

    def fetch(self, url: str) -> FetchedDocument:
        return self.fetcher.fetch(url)

    def refusal(self, url: str) -> str:
        with pytest.raises(MetadataDocumentUnavailable) as raised:
            self.fetcher.fetch(url)
        return str(raised.value)


def url(server: ScriptedHttpServer, path: str = "/client-metadata") -> str:
    return f"http://localhost:{server.port}{path}"


def test_fetches_the_document_and_sends_nothing_of_ours(serve: Serve) -> None:
    server = serve(answer(200, [JSON, ("Cache-Control", "max-age=600")], DOCUMENT))
    document = Harness().fetch(url(server, "/clients/one?version=2"))
    assert document == FetchedDocument(body=DOCUMENT, max_age=600)
    [request] = server.requests
    assert request.request_line == "GET /clients/one?version=2 HTTP/1.1"
    # The name, not the address it resolved to.
    assert request.header("Host") == [f"localhost:{server.port}"]
    assert request.header("Accept") == ["application/json"]
    assert request.header("User-Agent") == ["mcp-oauth-bridge"]
    sent = {name.lower() for name, _ in request.headers}
    assert sent == {"host", "accept", "accept-encoding", "user-agent", "connection"}
    assert not sent & {"cookie", "authorization", "proxy-authorization"}


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/jrd+json"])
def test_json_or_no_content_type_is_taken(serve: Serve, content_type: str | None) -> None:
    fields = [("Content-Type", content_type)] if content_type else []
    server = serve(answer(200, fields, DOCUMENT))
    assert Harness().fetch(url(server)).body == DOCUMENT


@pytest.mark.parametrize("fields", [[("Content-Type", "text/html")], [("Content-Type", "text/json")],
                                    [("Content-Type", "application/jsonp")], [("Content-Type", "application/xml")],
                                    [JSON, ("Content-Encoding", "gzip")]])
def test_wrong_content_is_refused(serve: Serve, fields: list[tuple[str, str]]) -> None:
    server = serve(answer(200, fields, DOCUMENT))
    assert "answered with wrong content" in Harness().refusal(url(server))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(serve: Serve, status: int) -> None:
    target = serve(answer(200, [JSON], DOCUMENT))
    origin = serve(answer(status, [("Location", url(target))]))
    message = Harness().refusal(url(origin))
    assert message == f"the host localhost answered with a redirect ({status}), which is not followed"
    assert origin.connections == 1
    assert target.connections == 0


@pytest.mark.parametrize("status", [201, 204, 403, 404, 500, 503])
def test_only_200_counts(serve: Serve, status: int) -> None:
    server = serve(answer(status, [JSON], b"" if status == 204 else DOCUMENT))
    assert Harness().refusal(url(server)) == f"the host localhost answered {status} instead of 200"


# -- size -----------------------------------------------------------------------------------------
# Each oversized answer is followed by an open, silent connection: a fetcher that waited for the
# rest instead of stopping at the cap would end at the deadline ("did not answer in time").

TOO_LARGE = "the answer of localhost is larger than 5120 bytes"


def test_an_announced_oversized_body_is_refused_before_reading(serve: Serve) -> None:
    server = serve(send_then_hold(response_head(200, [JSON, ("Content-Length", "1000000")])))
    assert Harness().refusal(url(server)) == TOO_LARGE


def test_an_oversized_body_without_length_is_cut_at_the_cap(serve: Serve) -> None:
    server = serve(send_then_hold(response_head(200, [JSON]) + b"x" * 6000))
    assert Harness().refusal(url(server)) == TOO_LARGE


def test_an_oversized_chunked_body_is_cut_at_the_cap(serve: Serve) -> None:
    chunk = b"x" * 3000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2))
    server = serve(send_then_hold(response_head(200, [JSON, ("Transfer-Encoding", "chunked")]) + body))
    assert Harness().refusal(url(server)) == TOO_LARGE


def test_endless_headers_are_cut_too(serve: Serve) -> None:
    head = response_head(200, [(f"X-Filler-{index}", "f" * 1000) for index in range(30)])[:-2]
    server = serve(send_then_hold(head))
    assert Harness().refusal(url(server)) == TOO_LARGE


@pytest.mark.parametrize("content_length", [True, False])
def test_the_cap_is_inclusive(serve: Serve, content_length: bool) -> None:
    exact = serve(answer(200, [JSON], b"a" * 100, content_length=content_length))
    assert Harness(max_bytes=100).fetch(url(exact)).body == b"a" * 100
    over = serve(answer(200, [JSON], b"a" * 101, content_length=content_length))
    assert Harness(max_bytes=100).refusal(url(over)) == "the answer of localhost is larger than 100 bytes"


# -- deadlines ------------------------------------------------------------------------------------

TIMED_OUT = "the host localhost did not answer in time"


def timed_refusal(harness: Harness, target: str) -> tuple[str, float]:
    started = time.monotonic()
    message = harness.refusal(target)
    return message, time.monotonic() - started


def test_a_trickling_body_is_cut_at_the_total_deadline(serve: Serve) -> None:
    head = response_head(200, [JSON, ("Content-Length", "100")])
    server = serve(lambda connection, stop: (connection.sendall(head), trickle(b"x" * 100, 0.05)(connection, stop)))
    message, elapsed = timed_refusal(Harness(total_timeout=0.5), url(server))
    assert message == TIMED_OUT
    assert elapsed < 3  # generous: the 100 bytes at 20 per second take 5 s


def test_trickling_headers_are_cut_at_the_total_deadline(serve: Serve) -> None:
    server = serve(trickle(response_head(200, [("X-Slow", "s" * 200)]), 0.02))
    message, elapsed = timed_refusal(Harness(total_timeout=0.5), url(server))
    assert message == TIMED_OUT
    assert elapsed < 3  # the head alone takes 5 s


def test_a_server_that_never_answers(serve: Serve) -> None:
    server = serve(send_then_hold(b""))
    message, elapsed = timed_refusal(Harness(total_timeout=0.5), url(server))
    assert message == TIMED_OUT
    assert server.requests  # it did receive the request
    assert elapsed < 3


def test_a_refused_connection(serve: Serve) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    assert Harness().refusal(f"http://localhost:{port}/m") == "the connection to localhost failed"


def test_the_next_checked_address_is_tried(serve: Serve) -> None:
    server = serve(answer(200, [JSON], DOCUMENT))
    harness = Harness()
    # The server listens on 127.0.0.1 only: 127.0.0.2 refuses the connection.
    harness.resolver.names["localhost"] = ["127.0.0.2", "127.0.0.1"]
    assert harness.fetch(url(server)).body == DOCUMENT
    assert harness.opener.attempts == [("127.0.0.2", server.port), ("127.0.0.1", server.port)]


def test_a_malformed_answer(serve: Serve) -> None:
    server = serve(send_then_hold(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", hold=0))
    assert Harness().refusal(url(server)) == "the host localhost sent a malformed HTTP answer"


def test_a_truncated_body(serve: Serve) -> None:
    server = serve(send_then_hold(response_head(200, [JSON, ("Content-Length", "100")]) + b"{", hold=0))
    assert Harness().refusal(url(server)) == "the host localhost sent a malformed HTTP answer"


# -- TLS pinned to the name ------------------------------------------------------------------------


def tls_harness(ca: LocalCA | None) -> Harness:
    harness = Harness(ssl_context=ca.client_context() if ca else None)
    harness.resolver.names["cimd.test"] = ["127.0.0.1"]
    return harness


def test_tls_to_a_checked_address_under_the_urls_name(serve: Serve, tmp_path: Path) -> None:
    ca = LocalCA.create(tmp_path)
    server = serve(answer(200, [JSON], DOCUMENT), tls=ca.server_context("cimd.test"))
    harness = tls_harness(ca)
    assert harness.fetch(f"https://cimd.test:{server.port}/m").body == DOCUMENT
    assert server.server_names == ["cimd.test"]  # SNI
    assert server.requests[0].header("Host") == [f"cimd.test:{server.port}"]
    # Resolved once, connected to the address that was checked.
    assert harness.resolver.calls == [("cimd.test", server.port)]
    assert harness.opener.attempts == [("127.0.0.1", server.port)]


def test_tls_refuses_a_certificate_for_another_name(serve: Serve, tmp_path: Path) -> None:
    ca = LocalCA.create(tmp_path)
    server = serve(answer(200, [JSON], DOCUMENT), tls=ca.server_context("other.test"))
    message = tls_harness(ca).refusal(f"https://cimd.test:{server.port}/m")
    assert message == "the TLS certificate of cimd.test is not valid for it"
    assert server.requests == []


def test_tls_refuses_an_untrusted_certificate(serve: Serve, tmp_path: Path) -> None:
    server = serve(answer(200, [JSON], DOCUMENT), tls=LocalCA.create(tmp_path).server_context("cimd.test"))
    # The default context trusts the system's CAs, not the test CA.
    message = tls_harness(None).refusal(f"https://cimd.test:{server.port}/m")
    assert message == "the TLS certificate of cimd.test is not valid for it"
    assert server.requests == []


# -- merged fetches ---------------------------------------------------------------------------------


def test_concurrent_fetches_of_one_url_make_one_request(serve: Serve) -> None:
    release = threading.Event()

    def held_answer(connection: socket.socket, stop: threading.Event) -> None:
        release.wait(10)
        answer(200, [JSON, ("Cache-Control", "max-age=60")], DOCUMENT)(connection, stop)

    server = serve(held_answer)
    harness = Harness()
    results: list[FetchedDocument] = []
    threads = [threading.Thread(target=lambda: results.append(harness.fetch(url(server)))) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    # Give every thread time to join the fetch in flight (generous; a late one would show up as a
    # second connection).
    time.sleep(0.5)
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == [FetchedDocument(body=DOCUMENT, max_age=60)] * 8
    assert server.connections == 1
    # Nothing is kept once the fetch is over.
    harness.fetch(url(server))
    assert server.connections == 2


def test_the_log_names_the_host_and_outcome_only(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcp_oauth_bridge.adapters.metadata_fetcher")
    found = serve(answer(200, [JSON], DOCUMENT))
    missing = serve(answer(404, [JSON], DOCUMENT))
    harness = Harness()
    harness.fetch(url(found, "/m?token=secret-value"))
    harness.refusal(url(missing, "/m?token=secret-value"))
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"client metadata document from localhost: fetched {len(DOCUMENT)} bytes, max-age None",
        "client metadata document from localhost: not fetched: the host localhost answered 404 instead of 200",
    ]
    assert "secret-value" not in caplog.text and "bodymarker" not in caplog.text
