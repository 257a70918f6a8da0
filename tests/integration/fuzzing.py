"""The seeded request fuzzer behind test_fuzz*.py: hostile requests built from each endpoint's own
parameter names (RFC 6749 §3.1, RFC 7591 §3, RFC 7009 §2.1, RFC 7662 §2.1, MCP Streamable HTTP),
sent as raw WSGI environs through Flask's test client, and the checks every answer must pass.

Everything is drawn from ``random.Random`` seeded per route and per scenario, so a run is
repeatable and a route added later does not shift the requests of the others. The requests
never contain the traceback markers the checks look for, so an echoed parameter cannot pass
for a leaked traceback.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote_from_bytes, urlencode

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from marshmallow import Schema
from werkzeug.test import TestResponse, create_environ

from mcp_oauth_bridge.adapters.http import fake_idp
from mcp_oauth_bridge.adapters.http.mcp_protocol import LEGACY_VERSIONS, MODERN_VERSIONS
from mcp_oauth_bridge.adapters.http.schemas import (
    AuthorizationRequestSchema,
    CallbackSchema,
    ConsentSchema,
    TokenReferenceSchema,
    TokenRequestSchema,
)

from .conftest import PUBLIC_URL

SEED = int(os.environ.get("FUZZ_SEED", "20260801"))
# Multiplies every example count (FUZZ_SCALE=10 for a long hunt by hand; CI runs 1).
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))

REDIRECT_URI = "http://127.0.0.1:9999/callback"
HOST = PUBLIC_URL.split("://", 1)[1]

# What a leaked traceback or exception looks like in a response.
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "|\b[A-Z][A-Za-z]*(?:Error|Exception)\b')
# RFC 6749 §5.2: the error code is %x20-21 / %x23-5B / %x5D-7E.
ERROR_CODE = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")

# The blueprints whose every answer is JSON: OAuth errors, or JSON-RPC ones on /mcp.
OAUTH_JSON_BLUEPRINTS = frozenset({"token", "registration", "metadata"})
JSONRPC_BLUEPRINT = "mcp"
# Successful answers without a body.
EMPTY_SUCCESS = {("token.revoke", 200), ("mcp.mcp_endpoint", 202)}

MODERN = MODERN_VERSIONS[0]
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"

# The declared parameters of each endpoint (the fuzz uses them as its parameter names).
SCHEMAS: dict[str, tuple[type[Schema], ...]] = {
    "authorization.authorize": (AuthorizationRequestSchema,),
    "authorization.consent": (ConsentSchema,),
    "authorization.callback": (CallbackSchema,),
    "token.token": (TokenRequestSchema,),
    "token.revoke": (TokenReferenceSchema,),
    "token.introspect": (TokenReferenceSchema,),
    "fake_idp.sign_in_page": (fake_idp.SignInRequestSchema,),
    "fake_idp.sign_in": (fake_idp.SignInSchema,),
}
REGISTRATION_FIELDS = (
    "redirect_uris", "client_name", "token_endpoint_auth_method", "grant_types", "response_types",
    "scope", "client_uri", "logo_uri", "tos_uri", "policy_uri", "contacts", "software_id",
    "software_version", "application_type", "jwks_uri", "jwks", "client_id", "client_secret",
)
ALL_PARAMETER_NAMES = sorted(
    {name for schemas in SCHEMAS.values() for schema in schemas for name in schema().fields} | {"token"}
)
JUNK_NAMES = ("", "x", "a[]", "grant_type[]", "%", "=", "__proto__", "client_id ", "CLIENT_ID", "é", "\x00")


def parameter_names(endpoint: str | None) -> list[str]:
    schemas = SCHEMAS.get(endpoint or "", ())
    return sorted({name for schema in schemas for name in schema().fields})


# -- requests ---------------------------------------------------------------------------------


@dataclass
class FuzzRequest:
    """One request as a WSGI server would hand it over: latin-1 strings for the bytes."""

    method: str
    path: str
    query: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # "auto": the body's length; None: no Content-Length (with ``chunked``: a terminated stream).
    content_length: str | None = "auto"
    chunked: bool = False
    # The server fails while the app reads the body (as gunicorn does on broken chunked framing).
    broken_input: bool = False

    def environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = create_environ(base_url=PUBLIC_URL)
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ.pop(key, None)
        environ.update(
            REQUEST_METHOD=self.method,
            PATH_INFO=self.path,
            QUERY_STRING=self.query.decode("latin-1"),
            REMOTE_ADDR="127.0.0.1",
        )
        environ["wsgi.input"] = BrokenInput(self.body) if self.broken_input else io.BytesIO(self.body)
        if self.chunked:
            environ["wsgi.input_terminated"] = True
        elif self.content_length == "auto":
            environ["CONTENT_LENGTH"] = str(len(self.body))
        elif self.content_length is not None:
            environ["CONTENT_LENGTH"] = self.content_length
        for name, value in self.headers:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            # As servers do: repeated headers are joined (cookies with "; ").
            if key in environ and key.startswith("HTTP_"):
                environ[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
            else:
                environ[key] = value
        return environ

    def text(self) -> str:
        parts = [self.method, self.path, self.query.decode("latin-1"), self.body.decode("latin-1")]
        parts += [f"{name}: {value}" for name, value in self.headers]
        return "\n".join(parts)

    def describe(self) -> str:
        """A reproducer short enough for a failure message."""
        headers = ", ".join(f"{name}: {_short(value.encode('latin-1'))}" for name, value in self.headers)
        length = "chunked" if self.chunked else self.content_length
        broken = " (the input fails after half the body)" if self.broken_input else ""
        return (
            f"{self.method} {self.path}?{_short(self.query)} [{headers}] "
            f"Content-Length={length} body={_short(self.body)}{broken}"
        )


class ChunkParseError(Exception):
    """What gunicorn raises from wsgi.input on broken chunked framing (its ParseException
    subclasses, which are neither OSError nor ValueError)."""


class BrokenInput:
    """A wsgi.input that gives half the body, then fails as a server's parser would."""

    def __init__(self, body: bytes) -> None:
        self._data = io.BytesIO(body[: len(body) // 2])

    def read(self, size: int | None = -1) -> bytes:
        data = self._data.read(size)
        if size is None or size < 0 or len(data) < size:
            raise ChunkParseError("Invalid chunk size")
        return data

    def readline(self, size: int | None = -1) -> bytes:
        raise ChunkParseError("Invalid chunk size")


def _short(data: bytes, limit: int = 120) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}…(+{len(data) - limit} bytes)"


def is_clean(request: FuzzRequest) -> bool:
    """A request that cannot make an echo look like a traceback."""
    return TRACEBACK.search(request.text()) is None


# -- values -----------------------------------------------------------------------------------

UNICODE = ("é", "日本語", "😀", "\u202eevil", "\u200b", "e\u0301", "\ufeff", "Ω" * 50, "\U0010ffff")
BAD_BYTES = (
    b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf", b"\xf4\x90\x80\x80",
    b"\x80", b"\xe2\x82",
)
CONTROL = (b"\x00", b"\x01\x02\x1f", b"\x7f", b"\r\n", b"\t", b"\x0b\x0c", b"a\x00b", b"\x1b[31m")
PERCENT_GARBAGE = (
    b"%", b"%z", b"%zz", b"%%", b"%0", b"%00", b"%ff", b"%FF%FE", b"%u00e9", b"%ed%a0%80", b"%c3",
    b"%2", b"%%32%30", b"+", b"++", b"&", b"=", b";", b"#", b"%25", b"%0d%0a", b"%e2%80%ae",
)
WORDS = (
    b"code", b"approve", b"deny", b"sign_in", b"cancel", b"authorization_code", b"refresh_token",
    b"S256", b"plain", b"none", b"access_token", b"User.Read", b"openid", b"offline_access",
    b"null", b"true", b"{}", b"[]", b"0", b"-1", b"1e999", b"9" * 40, b"NaN",
    b"http://127.0.0.1:9999/callback", b"http://127.0.0.1:8000/mcp", b"https://evil.example\\.claude.ai/cb",
    b"javascript:alert(1)", b"http://[::1", b"http://%zz/", b"mob_at_", b"mob_rt_x", b"mob_ac_",
    b"fake_code.e30.x", b"fake_code..", b"a.b.c.d", b"mob_tx_", b"mob_csrf_", b"mob_st_",
)

# URIs that parsers disagree on or choke on (urlsplit raises ValueError on some).
URIS = (
    b"http://[::1", b"http://[zz]/callback", b"http://[::1]:x/callback", b"http://127.0.0.1:99999/callback",
    b"http://127.0.0.1:x/callback", b"http://127.0.0.1:0/callback", b"http://127.0.0.1:9999/callback#f",
    b"HTTP://127.0.0.1:9999/callback", b"http://127.0.0.1:9999/callback/", b"http://127.0.0.1:9999/callback?x=1",
    b"http://localhost:9999/callback", b"http://[::1]:9999/callback", b"http://user:pw@127.0.0.1:9999/callback",
    b"http://127.0.0.1:9999/%2e%2e/callback", b"http://127.0.0.1:9999\\@evil.example/callback", b"//evil.example/cb",
    b"http:evil", b"https://xn--80ak6aa92e.example/cb", b"https://\xd0\xb0pple.example/cb", b"https://ex%41mple.com/",
    b"https://evil.example%2e/cb", b"com.example.app:/cb", b"search-ms:query=x", b"ms-msdt:/id", b"data:text/html,x",
    b"file:///etc/passwd", b"http://127.0.0.1:8000/mcp/", b"https://[", b"http://]", b"http://a:b:c/",
)


def junk_bytes(rng: random.Random) -> bytes:
    """A parameter value: empty, long, broken encodings, controls, unicode, or a plausible word."""
    kind = rng.randrange(13)
    if kind == 0:
        return b""
    if kind == 12:
        return rng.choice(URIS)
    if kind == 1:
        return bytes([rng.choice(b"aZ9-._~")]) * rng.choice((4095, 4096, 4097, 20000))
    if kind == 2:
        return rng.choice(BAD_BYTES) * rng.randint(1, 3)
    if kind == 3:
        return rng.choice(CONTROL)
    if kind == 4:
        return rng.choice(UNICODE).encode("utf-8")
    if kind == 5:
        # A lone surrogate, as a careless encoder would write it.
        return chr(rng.randrange(0xD800, 0xE000)).encode("utf-8", "surrogatepass")
    if kind == 6:
        return rng.choice(PERCENT_GARBAGE)
    if kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
    if kind == 8:
        return b" " * rng.randint(1, 3) + rng.choice(WORDS) + b" " * rng.randint(0, 2)
    return rng.choice(WORDS)


def junk_text(rng: random.Random) -> str:
    """A JSON string value: like junk_bytes, but surrogates as text."""
    kind = rng.randrange(6)
    if kind == 0:
        return chr(rng.randrange(0xD800, 0xE000)) + rng.choice(("", "x", "\udc00"))
    if kind == 1:
        return "\x00" + rng.choice(UNICODE)
    return junk_bytes(rng).decode("utf-8", "replace")


def encode_pair(rng: random.Random, name: bytes, value: bytes) -> bytes:
    """One name=value of a query string or form body, encoded well or not."""
    mode = rng.randrange(6)
    if mode < 3:
        return quote_from_bytes(name, safe=b"").encode() + b"=" + quote_from_bytes(value, safe=b"").encode()
    if mode == 3:
        # Raw: may carry &, =, %, spaces and bytes that are not UTF-8.
        return name + b"=" + value
    if mode == 4:
        return quote_from_bytes(name, safe=b"").encode()  # no "=" at all
    return name + b"=" + quote_from_bytes(value, safe=b"").encode().replace(b"%20", b"+")


def encode_pairs(rng: random.Random, pairs: Sequence[tuple[bytes, bytes]], *, tidy: bool = False) -> bytes:
    if tidy:
        return urlencode([(n, v) for n, v in pairs]).encode()
    encoded = [encode_pair(rng, name, value) for name, value in pairs]
    separator = rng.choice((b"&", b"&", b"&", b";", b"&&"))
    text = separator.join(encoded)
    if rng.random() < 0.1:
        text = rng.choice((b"&", b"?", b"=")) + text + rng.choice((b"", b"&", b"%"))
    return text


def random_pairs(rng: random.Random, names: Sequence[str], *, count: int | None = None) -> list[tuple[bytes, bytes]]:
    """Parameters named after the endpoint's own (empty, repeated, junk) and some strangers."""
    pairs: list[tuple[bytes, bytes]] = []
    for _ in range(count if count is not None else rng.randint(0, 8)):
        roll = rng.random()
        if names and roll < 0.7:
            name = rng.choice(names).encode()
        elif roll < 0.85:
            name = rng.choice(ALL_PARAMETER_NAMES).encode()
        else:
            name = rng.choice(JUNK_NAMES).encode("utf-8")
        pairs.append((name, junk_bytes(rng)))
        if rng.random() < 0.1:
            # The same parameter again (RFC 6749 §3.1: MUST NOT be included more than once).
            pairs.append((name, rng.choice((b"", pairs[-1][1], junk_bytes(rng)))))
    return pairs


# -- JSON -------------------------------------------------------------------------------------


def json_text(rng: random.Random, value: Any, *, duplicate_keys: bool = False) -> str:
    """JSON with surrogates kept as escapes, and optionally every object's first key repeated."""
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k))}:{json_text(rng, v, duplicate_keys=duplicate_keys)}" for k, v in value.items()]
        if duplicate_keys and value:
            first = next(iter(value))
            items.append(f"{json.dumps(str(first))}:{json_text(rng, junk_json_value(rng, 1))}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(rng, v, duplicate_keys=duplicate_keys) for v in value) + "]"
    if isinstance(value, RawJson):
        return value.text
    return json.dumps(value)


@dataclass(frozen=True)
class RawJson:
    """A token json.dumps would not write: NaN, huge numbers, deep nesting."""

    text: str


RAW_JSON = (
    RawJson("NaN"), RawJson("Infinity"), RawJson("-Infinity"), RawJson("1e99999"), RawJson("-0"),
    RawJson("9" * 5000), RawJson("1" + "0" * 400), RawJson("[" * 3000 + "]" * 3000),
    RawJson('{"a":' * 3000 + "1" + "}" * 3000), RawJson("0.1e-99999"),
)


def junk_json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**31, 2**63, 10**30, -(10**30)))
    if kind == 3:
        return rng.choice((0.5, 1e308, -1e-308, 3.0))
    if kind == 4:
        return rng.choice(RAW_JSON)
    if kind in (5, 6, 7):
        return junk_text(rng)
    if kind == 8:
        return [junk_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 9:
        return {junk_text(rng): junk_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return rng.choice(("", " ", "code", REDIRECT_URI, "none", "client_secret_basic"))


def registration_document(rng: random.Random) -> Any:
    """Client metadata (RFC 7591 §2): mostly well-formed with a few fields wrong."""
    document: dict[str, Any] = {
        "redirect_uris": [REDIRECT_URI],
        "client_name": "Fuzz client",
        "token_endpoint_auth_method": rng.choice(("none", "client_secret_post", "client_secret_basic")),
    }
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(REGISTRATION_FIELDS)
        document[name] = junk_json_value(rng)
    if rng.random() < 0.3:
        document["redirect_uris"] = [junk_text(rng) for _ in range(rng.randint(0, 3))] + rng.choice(([], [REDIRECT_URI]))
    if rng.random() < 0.2:
        document["client_name"] = junk_text(rng)
    if rng.random() < 0.1:
        del document["redirect_uris"]
    return document


DISPLAYED_FIELDS = ("client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri", "software_id", "software_version", "contacts", "scope")


def displayed_metadata(rng: random.Random) -> dict[str, Any]:
    """Client metadata that may well be accepted, with junk in what pages and logs show."""
    document: dict[str, Any] = {
        "redirect_uris": [
            rng.choice((REDIRECT_URI, "https://client.example/cb", "com.example.app:/cb", "http://localhost/cb"))
            if rng.random() < 0.8
            else rng.choice(URIS).decode("utf-8", "surrogateescape")
        ],
        "token_endpoint_auth_method": rng.choice(("none", "client_secret_post", "client_secret_basic")),
    }
    for name in rng.sample(DISPLAYED_FIELDS, rng.randint(1, 3)):
        text = junk_text(rng)
        if name.endswith("_uri"):
            text = "https://client.example/" + text
        document[name] = [text] if name == "contacts" else text
    return document


def mcp_message(rng: random.Random) -> Any:
    """A JSON-RPC message for /mcp: a real method with junk in places, or junk."""
    method = rng.choice(("initialize", "ping", "tools/list", "tools/call", "server/discover", "notifications/initialized"))
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rng.choice((1, "a", 0, 2**53)), "method": method}
    params: dict[str, Any] = {}
    if method == "initialize":
        params = {"protocolVersion": rng.choice(LEGACY_VERSIONS), "capabilities": {}, "clientInfo": {"name": "f", "version": "1"}}
    elif method == "tools/call":
        params = {"name": "whoami", "arguments": {}}
    elif method.startswith("notifications/"):
        del message["id"]
    if rng.random() < 0.5:
        params["_meta"] = {META_VERSION: MODERN, META_CAPABILITIES: {}}
    message["params"] = params
    for _ in range(rng.randint(0, 3)):
        target = rng.choice(("id", "method", "jsonrpc", "params", "name", "arguments", "_meta", "version", "drop", "extra"))
        if target == "drop":
            message.pop(rng.choice(("id", "method", "jsonrpc", "params")), None)
        elif target in ("name", "arguments"):
            params[target] = junk_json_value(rng)
        elif target == "_meta":
            params["_meta"] = rng.choice((junk_json_value(rng), {META_VERSION: junk_json_value(rng), META_CAPABILITIES: {}}))
        elif target == "version":
            params["protocolVersion"] = junk_json_value(rng)
        elif target == "extra":
            message[junk_text(rng)] = junk_json_value(rng)
        else:
            message[target] = junk_json_value(rng)
    if rng.random() < 0.05:
        return [message, message]
    return message


def json_body(rng: random.Random, document: Any) -> bytes:
    roll = rng.random()
    if roll < 0.75:
        return json_text(rng, document, duplicate_keys=rng.random() < 0.15).encode("utf-8", "surrogatepass")
    if roll < 0.85:
        return json_text(rng, junk_json_value(rng)).encode("utf-8", "surrogatepass")
    if roll < 0.9:
        return json.dumps(document if not isinstance(document, RawJson) else None, default=str).encode("utf-16")
    return junk_bytes(rng)


# -- headers ----------------------------------------------------------------------------------

CONTENT_TYPES = (
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=UTF-8",
    "APPLICATION/X-WWW-FORM-URLENCODED", "application/x-www-form-urlencoded;charset=latin-1",
    "application/x-www-form-urlencoded; charset=\"", "application/json", "application/json; charset=utf-16",
    "text/plain", "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=x",
    "", ";", "application/x-www-form-urlencoded\x00", "*/*", "application/", "x" * 5000,
)


def header_text(rng: random.Random) -> str:
    """A header value as a server passes it on: latin-1, no line breaks."""
    value = junk_bytes(rng).replace(b"\r", b"").replace(b"\n", b"")
    return value.decode("latin-1")


def basic_credentials(rng: random.Random, real: Sequence[tuple[str, str]] = ()) -> str:
    kind = rng.randrange(8)
    if kind == 0 and real:
        client_id, secret = rng.choice(real)
        pair = f"{client_id}:{rng.choice((secret, '', secret + 'x', secret[:-1]))}".encode()
    elif kind == 1:
        pair = junk_bytes(rng) + b":" + junk_bytes(rng)
    elif kind == 2:
        pair = junk_bytes(rng)
    elif kind == 3:
        return "Basic " + rng.choice(("!!!", "====", "YQ", "Y", "YTpi\x00", "", "   ", "YTpi YTpi", "%zz"))
    elif kind == 4:
        return rng.choice(("Basic", "basic ", "BASIC YTpi", "Basic\tYTpi", "Basic " + "A" * 100000))
    else:
        pair = rng.choice((b":", b"a:", b":b", b"a:b:c", b"%zz:%ff", b"\x00:\x00", b"\xff:\xfe", b"+:+"))
    return rng.choice(("Basic ", "basic ", "Basic  ")) + base64.b64encode(pair).decode()


def bearer(rng: random.Random, real: Sequence[str] = ()) -> str:
    if real and rng.random() < 0.5:
        token = rng.choice(real)
        return rng.choice(("Bearer ", "bearer ", "Bearer  ")) + rng.choice((token, token + "x", token[:-1], token + " x"))
    return rng.choice(("Bearer ", "Bearer", "bearer ", "Token ", "DPoP ", "")) + header_text(rng)


def random_headers(rng: random.Random, *, mcp: bool = False, bearers: Sequence[str] = (), basics: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if rng.random() < 0.35:
        headers.append(("Authorization", rng.choice((basic_credentials(rng, basics), bearer(rng, bearers), header_text(rng)))))
        if rng.random() < 0.1:
            headers.append(("Authorization", bearer(rng, bearers)))
    if rng.random() < 0.2:
        headers.append(("Origin", rng.choice(("null", PUBLIC_URL, "https://evil.example", "http://localhost:6274", "", header_text(rng)))))
    if rng.random() < 0.25:
        headers.append(("Cookie", rng.choice((
            "mob_browser=" + header_text(rng), "__Host-mob_browser=" + header_text(rng), "=;=;;",
            'mob_browser="unterminated', "mob_browser=a; mob_browser=b", header_text(rng), "a=" + "b" * 10000,
        ))))
    if rng.random() < 0.1:
        headers.append(("Host", rng.choice(("evil.example", "", "[::1", "a b", HOST + "\x00", "127.0.0.1:99999", header_text(rng)))))
    if rng.random() < 0.1:
        headers.append((rng.choice(("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")), header_text(rng)))
    if rng.random() < 0.1:
        headers.append(("Accept", rng.choice(("application/json, text/event-stream", "*/*", "text/html", header_text(rng)))))
    if rng.random() < 0.05:
        headers.append(("Transfer-Encoding", rng.choice(("chunked", "gzip", header_text(rng)))))
    if rng.random() < 0.05:
        headers.append(("Expect", "100-continue"))
    if rng.random() < 0.1:
        # A CORS preflight's questions (answered by flask-cors on OPTIONS).
        headers.append(("Access-Control-Request-Method", rng.choice(("POST", "GET", "", header_text(rng)))))
        headers.append(("Access-Control-Request-Headers", rng.choice(("authorization, content-type", "", header_text(rng)))))
    if mcp:
        versions = (MODERN, *LEGACY_VERSIONS, "", "2026-07-28 ", "1.0", "=?base64?MjAyNi0wNy0yOA==?=")
        if rng.random() < 0.6:
            headers.append(("MCP-Protocol-Version", rng.choice(versions) if rng.random() < 0.7 else header_text(rng)))
        if rng.random() < 0.4:
            methods = ("initialize", "ping", "tools/list", "tools/call", "server/discover")
            headers.append(("Mcp-Method", rng.choice(methods) if rng.random() < 0.6 else header_text(rng)))
        if rng.random() < 0.3:
            headers.append(("Mcp-Name", rng.choice((
                "whoami", "=?base64?d2hvYW1p?=", "=?base64?!!!?=", "=?base64?/w==?=", "=?base64??=",
                "=?base64?7aCA?=", header_text(rng),
            ))))
        if rng.random() < 0.05:
            headers.append(("MCP-Protocol-Version", MODERN))
    return headers


def with_body_framing(rng: random.Random, request: FuzzRequest) -> FuzzRequest:
    """Content-Length that lies, is not a number, or is absent (a chunked, terminated stream)."""
    roll = rng.random()
    if roll < 0.78:
        return request
    if roll < 0.81:
        request.broken_input = True
        request.chunked = rng.random() < 0.5
    elif roll < 0.85:
        request.chunked = True
    else:
        request.content_length = rng.choice((
            str(len(request.body) + rng.randint(1, 100)), str(max(0, len(request.body) - 1)), "abc", "-1", "",
            "99999999999999999999999", "+5", " 3", "1e3", "0x10", str(2**63), None,
        ))
    return request


# -- responses --------------------------------------------------------------------------------


@dataclass
class Finding:
    problem: str
    request: str
    status: int
    body: str


class ErrorLog(logging.Handler):
    """Collects ERROR records (an exception the app logged) while attached to the root logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        taken, self.records = self.records, []
        return taken


def describe_record(record: logging.LogRecord) -> str:
    """The exception's class and the innermost line of our code it passed (its message varies
    with the input, so it stays out: one kind of failure is one line of the report)."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        tb = exc.__traceback__
        where = "?"
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if "/src/" in filename or "mcp_oauth_bridge" in filename:
                where = f"{filename.rsplit('/src/', 1)[-1]}:{tb.tb_lineno}"
            tb = tb.tb_next
        return f"logged {type(exc).__name__} at {where}"
    return f"logged at {record.levelname}: {record.msg}"


def blueprint_of(endpoint: str | None) -> str | None:
    return endpoint.split(".", 1)[0] if endpoint and "." in endpoint else None


def check_response(endpoint: str | None, request: FuzzRequest, response: TestResponse, logged: Sequence[logging.LogRecord]) -> list[str]:
    """Every problem with one answer: 5xx, a traceback, an exception in the log, or the wrong
    shape for a JSON endpoint (RFC 6749 §5.2 error object, JSON-RPC 2.0 error object)."""
    problems: list[str] = []
    status = response.status_code
    body = response.get_data()
    text = body.decode("utf-8", "replace")
    where = endpoint or request.path
    if status >= 500:
        problems.append(f"{status} from {where}")
    if TRACEBACK.search(text) or any(TRACEBACK.search(value) for _, value in response.headers.items()):
        problems.append(f"traceback text in the answer from {where}")
    problems += [f"{describe_record(record)} ({where})" for record in logged]
    blueprint = blueprint_of(endpoint)
    if request.method in ("HEAD", "OPTIONS") or blueprint is None:
        return problems
    if blueprint in OAUTH_JSON_BLUEPRINTS or blueprint == JSONRPC_BLUEPRINT:
        problems += _json_problems(endpoint or "", blueprint, status, response, body)
    elif status >= 400 and body and response.mimetype != "text/html":
        problems.append(f"{where} answered {status} with {response.mimetype}, not an HTML page")
    return problems


def _json_problems(endpoint: str, blueprint: str, status: int, response: TestResponse, body: bytes) -> list[str]:
    if not body and (endpoint, status) in EMPTY_SUCCESS:
        return []
    if response.mimetype != "application/json":
        return [f"{endpoint} answered {status} with {response.mimetype or 'no content type'}, not JSON"]
    try:
        document = json.loads(body)
    except ValueError:
        return [f"{endpoint} answered {status} with a body that is not JSON"]
    if not isinstance(document, dict):
        return [f"{endpoint} answered {status} with JSON that is not an object"]
    if status < 400:
        return []
    if blueprint == JSONRPC_BLUEPRINT and "jsonrpc" in document:
        error = document.get("error")
        if document.get("jsonrpc") != "2.0" or "id" not in document or not isinstance(error, dict):
            return [f"{endpoint} answered {status} with a malformed JSON-RPC error"]
        if not isinstance(error.get("code"), int) or not isinstance(error.get("message"), str):
            return [f"{endpoint} answered {status} with a JSON-RPC error without code and message"]
        return []
    if blueprint == JSONRPC_BLUEPRINT and not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        return [f"{endpoint} answered {status} with an OAuth error but no Bearer challenge"]
    error_code = document.get("error")
    if not isinstance(error_code, str) or not ERROR_CODE.match(error_code):
        return [f"{endpoint} answered {status} without an RFC 6749 §5.2 error code"]
    description = document.get("error_description")
    if description is not None and not isinstance(description, str):
        return [f"{endpoint} answered {status} with a non-string error_description"]
    return []


# -- the driver -------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Sends requests through the test client and keeps every problem with its reproducer."""

    app: Flask
    log: ErrorLog
    client: FlaskClient = field(init=False)
    findings: list[Finding] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        self.client = self.app.test_client(use_cookies=False)
        self._adapter = self.app.url_map.bind(HOST)

    def endpoint_for(self, request: FuzzRequest) -> str | None:
        """The endpoint whose path this is (by any method: a 405 still belongs to it)."""
        for method in (request.method, "GET", "POST"):
            try:
                endpoint, _ = self._adapter.match(request.path, method=method)
                return str(endpoint)
            except Exception:  # noqa: BLE001 - werkzeug's routing exceptions: not this method or not a path
                continue
        return None

    def send(self, request: FuzzRequest, endpoint: str | None = None, *, after: FuzzRequest | None = None) -> TestResponse:
        """Send one request; ``after``: the request that set it up, named in the reproducer."""
        assert is_clean(request), request.describe()
        endpoint = endpoint or self.endpoint_for(request)
        self.log.take()
        response = self.client.open(Request(request.environ()), buffered=True)
        self.sent += 1
        logged = self.log.take()
        detail = " | ".join(f"{type(r.exc_info[1]).__name__}: {r.exc_info[1]}"[:160] for r in logged if r.exc_info and r.exc_info[1])
        body = response.get_data(as_text=True)[:160]
        for problem in check_response(endpoint, request, response, logged):
            reproducer = request.describe() if after is None else f"after {after.describe()}:\n      {request.describe()}"
            self.findings.append(Finding(problem, reproducer, response.status_code, detail or body))
        return response

    def assert_no_findings(self) -> None:
        if self.findings:
            # pytest.fail: the report says it all; assert would also print the findings' repr.
            pytest.fail(self.report(), pytrace=False)

    def report(self) -> str:
        """The problems, grouped, each with its first reproducers."""
        groups: dict[str, list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault(finding.problem, []).append(finding)
        lines = [f"{len(self.findings)} problems in {self.sent} requests:"]
        for signature, findings in sorted(groups.items(), key=lambda item: -len(item[1])):
            lines.append(f"- {signature} ×{len(findings)}")
            for finding in findings[:2]:
                lines.append(f"    {finding.request}\n      → {finding.status} {finding.body!r}")
        return "\n".join(lines)


def attach_error_log() -> ErrorLog:
    handler = ErrorLog()
    logging.getLogger().addHandler(handler)
    return handler


def detach_error_log(handler: ErrorLog) -> None:
    logging.getLogger().removeHandler(handler)


def scaled(count: int) -> int:
    return max(1, round(count * SCALE))


def seeded(*parts: object) -> random.Random:
    """A generator of its own for each route or scenario: adding one shifts no other."""
    return random.Random(hashlib.sha256(":".join(map(str, (SEED, *parts))).encode()).digest())


def clean(rng: random.Random, build: Callable[[random.Random], FuzzRequest]) -> FuzzRequest:
    """A built request that carries no traceback marker (drawn again until it does not)."""
    for _ in range(100):
        request = build(rng)
        if is_clean(request):
            return request
    raise AssertionError("the generator keeps producing traceback markers")


def form_request(method: str, path: str, pairs: Iterable[tuple[str, str]], headers: Sequence[tuple[str, str]] = ()) -> FuzzRequest:
    """A well-formed form POST (or a GET with the pairs as its query)."""
    encoded = urlencode(list(pairs)).encode()
    if method == "GET":
        return FuzzRequest("GET", path, query=encoded, headers=list(headers))
    return FuzzRequest(method, path, body=encoded, headers=[("Content-Type", "application/x-www-form-urlencoded"), *headers])


def json_request(path: str, document: Any, headers: Sequence[tuple[str, str]] = ()) -> FuzzRequest:
    return FuzzRequest("POST", path, body=json.dumps(document).encode(), headers=[("Content-Type", "application/json"), *headers])
