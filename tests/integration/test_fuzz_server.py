"""Malformed HTTP/1.1 over raw sockets against the real server (RFC 9112 §3 request line, §5
field syntax, §6 message body and chunked coding): what Flask's test client cannot send. Every
answer, if there is one, is below 500 and carries no traceback; the server logs no traceback and
still answers afterwards. Independent of gunicorn's worker class: each request is complete or
half-closed, so no worker waits on it."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from .fuzzing import TRACEBACK
from .oauth_flow import HttpTransport, OAuthClient
from .servers import running_server

pytestmark = [pytest.mark.slow, pytest.mark.serial]

# Long enough for any answer from a loopback server; a case that gets none is not an error
# (closing the connection is a fine answer to garbage).
READ_DEADLINE = 5.0
# RFC 9112 §6.1: "A server that receives a request message with a transfer coding it does not
# understand SHOULD respond with 501 (Not Implemented)." The only 5xx a request may earn.
ALLOWED_5XX = {"unknown transfer coding": {501}}
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})", re.MULTILINE)
FORM = b"Content-Type: application/x-www-form-urlencoded\n"
# Replaced by a real access token, so that /mcp reads the body.
TOKEN = b"{access_token}"


def request(head: bytes, body: bytes = b"") -> bytes:
    return head.replace(b"\n", b"\r\n") + b"\r\n" + body


CASES: dict[str, bytes] = {
    # request lines (RFC 9112 §3)
    "empty lines": b"\r\n\r\n\r\n",
    "method only": b"GET\r\n\r\n",
    "unknown version": request(b"GET /healthz HTTP/9.9\nHost: x\n"),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "TLS client hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\x00" * 40,
    "binary garbage": bytes(range(256)) * 4,
    "lowercase method": request(b"get /healthz HTTP/1.1\nHost: x\n"),
    "unknown method": request(b"FOO /oauth/token HTTP/1.1\nHost: x\n"),
    "very long method": request(b"A" * 5000 + b" / HTTP/1.1\nHost: x\n"),
    "request line too long": request(b"GET /" + b"a" * 10000 + b" HTTP/1.1\nHost: x\n"),
    "tabs in the request line": request(b"GET\t/healthz\tHTTP/1.1\nHost: x\n"),
    "extra spaces in the request line": request(b"GET  /healthz  HTTP/1.1\nHost: x\n"),
    "bare LF line ends": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "no Host": request(b"GET /healthz HTTP/1.1\n"),
    "HTTP/1.0 without Host": request(b"GET /healthz HTTP/1.0\n"),
    "asterisk target": request(b"OPTIONS * HTTP/1.1\nHost: x\n"),
    "absolute target": request(b"GET http://evil.example/healthz HTTP/1.1\nHost: x\n"),
    "CONNECT": request(b"CONNECT evil.example:443 HTTP/1.1\nHost: evil.example:443\n"),
    "NUL in the path": request(b"GET /oauth/token%00 HTTP/1.1\nHost: x\n"),
    "raw NUL in the path": request(b"GET /heal\x00thz HTTP/1.1\nHost: x\n"),
    "encoded non-UTF-8 path": request(b"GET /%ff%fe HTTP/1.1\nHost: x\n"),
    "raw non-UTF-8 path": request(b"GET /\xff\xfe HTTP/1.1\nHost: x\n"),
    "dot segments": request(b"GET /..%2f..%2fetc/passwd HTTP/1.1\nHost: x\n"),
    "raw non-UTF-8 query at the sign-in page": request(b"GET /fake-idp/authorize?state=\xff\xfe&nonce=n&code_challenge=c HTTP/1.1\nHost: x\n"),
    "raw non-UTF-8 query at authorize": request(b"GET /oauth/authorize?client_id=\xff\xfe HTTP/1.1\nHost: x\n"),
    "raw non-UTF-8 query at the callback": request(b"GET /oauth/callback?state=\xff\xfe HTTP/1.1\nHost: x\n"),
    "percent garbage in the query": request(b"GET /oauth/authorize?%zz=%&client_id=%ff%00 HTTP/1.1\nHost: x\n"),
    # header fields (RFC 9112 §5)
    "header without colon": request(b"GET /healthz HTTP/1.1\nHost: x\nNoColonHere\n"),
    "space before colon": request(b"GET /healthz HTTP/1.1\nHost : x\n"),
    "obsolete line folding": request(b"GET /healthz HTTP/1.1\nHost: x\nX-A: a\n b\n"),
    "NUL in a header": request(b"GET /healthz HTTP/1.1\nHost: x\nX-A: a\x00b\n"),
    "non-UTF-8 header": request(b"GET /mcp HTTP/1.1\nHost: x\nAuthorization: Bearer \xff\xfe\nOrigin: \xff\n"),
    "control characters in headers": request(b"POST /mcp HTTP/1.1\nHost: x\nAuthorization: Bearer \x01\x02\x7f\nContent-Length: 2\n", b"{}"),
    "huge header": request(b"GET /healthz HTTP/1.1\nHost: x\nX-A: " + b"a" * 100_000 + b"\n"),
    "huge Authorization": request(b"POST /oauth/token HTTP/1.1\nHost: x\nAuthorization: Basic " + b"QUFB" * 2000 + b"\n" + FORM + b"Content-Length: 0\n"),
    "too many headers": request(b"GET /healthz HTTP/1.1\nHost: x\n" + b"X-N: v\n" * 300),
    "two Hosts": request(b"GET /healthz HTTP/1.1\nHost: x\nHost: y\n"),
    "non-UTF-8 Host": request(b"GET /oauth/authorize HTTP/1.1\nHost: \xff\xfe\n"),
    "empty header name": request(b"GET /healthz HTTP/1.1\nHost: x\n: v\n"),
    "junk Cookie and Forwarded": request(b"GET /oauth/authorize HTTP/1.1\nHost: x\nCookie: =;=;\xff\nX-Forwarded-For: \xff, ,,\nForwarded: for=\"\n"),
    # message bodies (RFC 9112 §6, §7)
    "Content-Length and Transfer-Encoding": request(
        b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 5\nTransfer-Encoding: chunked\n", b"0\r\n\r\n"
    ),
    "two different Content-Lengths": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 5\nContent-Length: 6\n", b"a=b&c"),
    "negative Content-Length": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: -1\n", b"a"),
    "Content-Length not a number": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: abc\n", b"a"),
    "huge Content-Length": request(b"POST /oauth/register HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 99999999999999999999\n", b"{}"),
    "Content-Length with a sign": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: +3\n", b"a=b"),
    "body shorter than Content-Length (token)": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 100\n", b"grant_type=refresh_token"),
    "body shorter than Content-Length (mcp)": request(
        b"POST /mcp HTTP/1.1\nHost: x\nContent-Type: application/json\nAuthorization: Bearer " + TOKEN + b"\nContent-Length: 1000\n", b'{"jsonrpc":'
    ),
    "body shorter than Content-Length (register)": request(
        b"POST /oauth/register HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 1000\n", b'{"redirect_uris":['
    ),
    "body shorter than Content-Length (consent)": request(b"POST /oauth/consent HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 500\n", b"pending_id=x"),
    "invalid chunk size": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk size overflow": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"ffffffffffffffffffffffff\r\nabc\r\n"),
    "negative chunk size": request(b"POST /oauth/introspect HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"-5\r\nabc\r\n0\r\n\r\n"),
    "chunk without its CRLF": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"5\r\nhelloXX0\r\n\r\n"),
    "chunk longer than announced": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"2\r\nhello\r\n0\r\n\r\n"),
    "truncated chunked body": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"10\r\ngrant_"),
    "chunked without the last chunk": request(b"POST /mcp HTTP/1.1\nHost: x\nAuthorization: Bearer " + TOKEN + b"\nTransfer-Encoding: chunked\n", b"2\r\n{}\r\n"),
    "junk chunk extensions and trailers": request(
        b"POST /oauth/revoke HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"7;\xff=\"x\r\ntoken=a\r\n0\r\nX-Trailer: \xff\r\nNoColon\r\n\r\n"
    ),
    "a well-formed chunked form": request(
        b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked\n", b"b\r\ngrant_type=\r\n0\r\n\r\n"
    ),
    "gzip, chunked": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: gzip, chunked\n", b"0\r\n\r\n"),
    "chunked, chunked": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: chunked, chunked\n", b"0\r\n\r\n"),
    "unknown transfer coding": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding: xchunked\n", b"0\r\n\r\n"),
    "space before the Transfer-Encoding colon": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Transfer-Encoding : chunked\n", b"0\r\n\r\n"),
    "Expect 100-continue": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Expect: 100-continue\nContent-Length: 11\n", b"grant_type="),
    "non-UTF-8 form body": request(b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 15\n", b"grant_type=\xff\xfe\xed\xa0"),
    "Upgrade to h2c": request(b"GET /healthz HTTP/1.1\nHost: x\nConnection: Upgrade, HTTP2-Settings\nUpgrade: h2c\nHTTP2-Settings: AAMAAABkAAQAAP__\n"),
    "pipelined request and garbage": request(b"GET /healthz HTTP/1.1\nHost: x\n") + b"\x00\xff garbage\r\n\r\n",
    "pipelined smuggling attempt": request(
        b"POST /oauth/token HTTP/1.1\nHost: x\n" + FORM + b"Content-Length: 4\nTransfer-Encoding: chunked\n",
        b"0\r\n\r\nGET /oauth/authorize?client_id=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    ),
}


def exchange(address: tuple[str, int], payload: bytes) -> bytes:
    """Send the payload, half-close, and read whatever comes back until the server closes."""
    with socket.create_connection(address, timeout=READ_DEADLINE) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed first: read what it said
        received = b""
        deadline = time.monotonic() + READ_DEADLINE
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            received += chunk
        return received


def access_token(base_url: str) -> bytes:
    client = OAuthClient(HttpTransport(base_url))
    assert client.register().status == 201
    reply = client.exchange(*client.login())
    assert reply.status == 200, reply.text
    token: str = reply.json()["access_token"]
    return token.encode()


def test_malformed_http_gets_no_5xx_and_no_traceback(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        parts = urlsplit(server.base_url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        token = access_token(server.base_url)
        problems: list[str] = []
        answered = 0
        for name, payload in CASES.items():
            response = exchange(address, payload.replace(TOKEN, token))
            statuses = [int(status) for status in STATUS_LINE.findall(response)]
            answered += bool(statuses)
            if any(status >= 500 and status not in ALLOWED_5XX.get(name, ()) for status in statuses):
                problems.append(f"{name}: {statuses} …{response[-240:]!r}")
            if TRACEBACK.search(response.decode("latin-1")):
                problems.append(f"{name}: traceback in the answer …{response[-240:]!r}")
        # Most cases are answered (400s from the server or the app), so the checks saw answers.
        assert answered >= len(CASES) // 2, answered
        assert requests.get(server.base_url + "/healthz", timeout=10).status_code == 200
        log = server.log_text()
    assert not problems, "\n".join(problems)
    assert "Traceback (most recent call last)" not in log, log[-5000:]
