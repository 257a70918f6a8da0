"""What the fuzz found, pinned down: HTTP-level errors at the JSON endpoints answer in the
endpoint's own shape (RFC 6749 §5.2 error object, JSON-RPC 2.0 on /mcp), a query string that is
not UTF-8 is read leniently, and the fake IdP's sign-in errors are pages."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from werkzeug.exceptions import InternalServerError, TooManyRequests
from werkzeug.test import TestResponse

from mcp_oauth_bridge.adapters.http.errors import http_error_response

from .fuzzing import FuzzRequest
from .oauth_flow import OAuthClient, pkce_pair


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client(use_cookies=False)


def send(client: FlaskClient, request: FuzzRequest) -> TestResponse:
    return client.open(Request(request.environ()), buffered=True)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/oauth/token", "POST"),
        ("GET", "/token", "POST"),
        ("DELETE", "/oauth/register", "POST"),
        ("PUT", "/oauth/revoke", "POST"),
        ("GET", "/oauth/introspect", "POST"),
        ("POST", "/.well-known/oauth-authorization-server", "GET"),
        ("PATCH", "/.well-known/oauth-protected-resource/mcp", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_wrong_method_at_a_json_endpoint_is_an_oauth_error(client: FlaskClient, method: str, path: str, allowed: str) -> None:
    response = send(client, FuzzRequest(method, path))
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert "Method Not Allowed" in body["error_description"]
    assert allowed in response.headers["Allow"].split(", ")
    assert response.headers["Cache-Control"] == "no-store"


def test_a_method_mcp_does_not_know_is_a_jsonrpc_error(client: FlaskClient) -> None:
    response = send(client, FuzzRequest("PROPFIND", "/mcp"))
    assert response.status_code == 405
    body = response.get_json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == -32600
    assert "POST" in response.headers["Allow"].split(", ")


def test_a_wrong_method_at_a_browser_endpoint_stays_a_page(client: FlaskClient) -> None:
    response = send(client, FuzzRequest("POST", "/oauth/authorize"))
    assert response.status_code == 405
    assert response.mimetype == "text/html"


def test_an_mcp_body_shorter_than_its_content_length_is_a_jsonrpc_error(client: FlaskClient, tokens: dict[str, Any]) -> None:
    # werkzeug raises ClientDisconnected (a 400) when the stream ends before Content-Length.
    request = FuzzRequest(
        "POST", "/mcp", body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        headers=[("Authorization", f"Bearer {tokens['access_token']}"), ("Content-Type", "application/json")],
        content_length="100",
    )
    response = send(client, request)
    assert response.status_code == 400
    body = response.get_json()
    assert body["jsonrpc"] == "2.0" and body["error"]["code"] == -32600


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/oauth/token", "application/x-www-form-urlencoded"), ("/oauth/revoke", "application/x-www-form-urlencoded"), ("/oauth/register", "application/json")],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_the_server_cannot_deliver_is_invalid_request(client: FlaskClient, path: str, content_type: str, chunked: bool) -> None:
    # gunicorn raises its own exceptions from wsgi.input on broken chunked framing.
    request = FuzzRequest("POST", path, body=b"grant_type=refresh_token&token=x", headers=[("Content-Type", content_type)], chunked=chunked, broken_input=True)
    response = send(client, request)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "could not be read" in response.get_json()["error_description"]


def test_an_mcp_body_the_server_cannot_deliver_is_a_jsonrpc_error(client: FlaskClient, tokens: dict[str, Any]) -> None:
    request = FuzzRequest(
        "POST", "/mcp", body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        headers=[("Authorization", f"Bearer {tokens['access_token']}"), ("Content-Type", "application/json")], chunked=True, broken_input=True,
    )
    response = send(client, request)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]["code"] == -32600 and "could not be read" in body["error"]["message"]


@pytest.mark.parametrize(("path", "shape"), [("/oauth/token", "oauth"), ("/mcp", "jsonrpc"), ("/oauth/authorize", "page")])
def test_an_unhandled_exception_at_a_json_endpoint_is_a_server_error(app: Flask, path: str, shape: str) -> None:
    # What Flask hands the HTTPException handler when a view raised something unexpected.
    with app.test_request_context(path, method="GET" if shape == "page" else "POST"):
        response = http_error_response(InternalServerError())
    assert response.status_code == 500
    if shape == "oauth":
        assert json.loads(response.get_data())["error"] == "server_error"
    elif shape == "jsonrpc":
        assert json.loads(response.get_data())["error"]["code"] == -32603
    else:
        assert response.mimetype == "text/html"


def test_an_http_error_keeps_its_headers(app: Flask) -> None:
    with app.test_request_context("/oauth/token", method="POST"):
        response = http_error_response(TooManyRequests(retry_after=7))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.mimetype == "application/json"
    assert "error" in json.loads(response.get_data())


def sign_in_query(oauth: OAuthClient) -> bytes:
    to_idp = oauth.consent(oauth.authorize(pkce_pair()[1]))
    assert to_idp.status == 303, to_idp.text
    return to_idp.location.split("?", 1)[1].encode()


def test_a_raw_byte_that_is_not_utf8_in_the_sign_in_query_is_replaced(client: FlaskClient, oauth: OAuthClient) -> None:
    # request.args would raise UnicodeDecodeError here: a 500.
    response = send(client, FuzzRequest("GET", "/fake-idp/authorize", query=sign_in_query(oauth) + b"&username=\xff"))
    assert response.status_code == 200
    response = send(client, FuzzRequest("GET", "/fake-idp/authorize", query=b"state=\xff\xfe&nonce=n&code_challenge=c"))
    assert response.status_code == 200
    assert 'value="\ufffd\ufffd"' in response.get_data(as_text=True)


def test_a_malformed_sign_in_is_a_page(client: FlaskClient) -> None:
    response = send(client, FuzzRequest("POST", "/fake-idp/authorize", body=b"state=s&nonce=n", headers=[("Content-Type", "application/x-www-form-urlencoded")]))
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "code_challenge: Missing data for required field." in html.unescape(response.get_data(as_text=True))
