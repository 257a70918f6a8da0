"""Redirect URIs over HTTP: what registration refuses (RFC 8252 §7, RFC 9700 §4.1 and §4.11), where
the consent page says the browser goes (the WHATWG parse), caps, and text no page can show."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask

from mcp_oauth_bridge.adapters.http.registration import MAX_REGISTRATION_BYTES
from mcp_oauth_bridge.domain.model import Client
from mcp_oauth_bridge.domain.services.authorization import MAX_CLIENT_ID_LENGTH, MAX_STATE_LENGTH
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient, hidden_fields, pkce_pair

RETURN_LINK = re.compile(r'<a href="([^"]*)">Return to the application</a>')


def register(http: FlaskTransport, *redirect_uris: str, **metadata: Any) -> dict[str, Any]:
    reply = http.post("/oauth/register", json={"redirect_uris": list(redirect_uris), "token_endpoint_auth_method": "none", **metadata})
    result: dict[str, Any] = {"status": reply.status, **reply.json()}
    return result


# -- registration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("search-ms:query=invoice&crumb=location:evil.example", "operating system"),
        ("ms-officecmd:open", "operating system"),
        ("ms-msdt:-id%20PCWDiagnostic", "operating system"),
        ("myapp://callback", "reverse-domain"),
        ("https://evil.example\\.claude.ai/cb", "backslash"),
        ("https://user@client.example/cb", "user information"),
        ("https://client.example/cb#", "fragment"),
        ("HTTPS://EXAMPLE.com/cb", "use https://example.com/cb"),
        ("https://example.com:443/cb", "use https://example.com/cb"),
        ("https://example.com/a/../b", "use https://example.com/b"),
        ("https://example.com/%2e%2e/", "use https://example.com/"),
        ("https://ex%61mple.com/", "use https://example.com/"),
        ("https://0x7f.1/", "use https://127.0.0.1/"),
        ("http://evil.example/cb", "loopback"),
    ],
)
def test_registration_refuses_redirect_uris_a_browser_would_misread(http: FlaskTransport, uri: str, fragment: str) -> None:
    answer = register(http, "https://client.example/cb", uri)
    assert answer["status"] == 400
    assert answer["error"] == "invalid_redirect_uri"
    assert answer["error_description"].startswith("redirect_uris[1]")
    assert fragment in answer["error_description"]


def test_internationalised_host_is_registered_in_punycode(http: FlaskTransport) -> None:
    answer = register(http, "https://аррӏе.com/cb")
    assert answer["status"] == 201
    assert answer["redirect_uris"] == ["https://xn--80ak6aa92e.com/cb"]


def test_claudes_registration_is_accepted_with_its_urls_in_the_browsers_form(http: FlaskTransport) -> None:
    reply = http.post(
        "/oauth/register",
        json={
            "client_name": "Claude",
            "client_uri": "https://claude.ai",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
        },
    )
    assert reply.status == 201, reply.text
    assert reply.json()["redirect_uris"] == ["https://claude.ai/api/mcp/auth_callback"]
    assert reply.json()["client_uri"] == "https://claude.ai/"


def test_an_operator_admits_cursors_scheme_and_the_consent_page_names_the_app(tmp_path: Path) -> None:
    cursor = "cursor://anysphere.cursor-mcp/oauth/callback"
    default = create_app(load_settings(environment_for(tmp_path / "default"), dotenv_path=None))
    assert register(FlaskTransport(default.test_client()), cursor)["status"] == 400
    app = create_app(load_settings(environment_for(tmp_path / "cursor", EXTRA_REDIRECT_SCHEMES="cursor"), dotenv_path=None))
    http = FlaskTransport(app.test_client())
    registered = register(http, cursor, client_name="Cursor")
    assert registered["status"] == 201 and registered["redirect_uris"] == [cursor]
    page = consent_page(http, cursor)
    assert "cursor:" in page and "app on this device" in page


def test_registration_body_is_capped(http: FlaskTransport) -> None:
    document = json.dumps({"redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": "none"})
    at_cap = document + " " * (MAX_REGISTRATION_BYTES - len(document))
    client = http.client
    ok = client.post("/oauth/register", data=at_cap, content_type="application/json")
    assert ok.status_code == 201
    over = client.post("/oauth/register", data=at_cap + " ", content_type="application/json")
    assert over.status_code == 400
    assert over.json == {
        "error": "invalid_client_metadata",
        "error_description": f"registration body larger than {MAX_REGISTRATION_BYTES} bytes",
    }


@pytest.mark.parametrize(
    "field",
    ['"client_name": "Claude\\ud800"', '"contacts": ["ops@client.example", "\\udfff"]', '"x_unknown": {"a": ["\\ud83d"]}'],
)
def test_registration_refuses_text_utf8_cannot_encode(http: FlaskTransport, field: str) -> None:
    body = '{"redirect_uris": ["https://client.example/cb"], ' + field + "}"
    reply = http.client.post("/oauth/register", data=body, content_type="application/json")
    assert reply.status_code == 400
    assert reply.json["error"] == "invalid_client_metadata"
    assert "UTF-8" in reply.json["error_description"]


def test_unknown_metadata_is_not_echoed(http: FlaskTransport) -> None:
    answer = register(http, "https://client.example/cb", x_tracking="1", jwks_uri="https://client.example/jwks")
    assert answer["status"] == 201
    assert "x_tracking" not in answer and "jwks_uri" not in answer


# -- the consent page names what the browser goes to --------------------------------------------


def consent_page(http: FlaskTransport, redirect_uri: str) -> str:
    answer = register(http, redirect_uri, client_name="Tricky")
    assert answer["status"] == 201, answer
    client = OAuthClient(http, client_id=answer["client_id"], redirect_uri=answer["redirect_uris"][0])
    page = client.authorize(pkce_pair()[1])
    assert page.status == 200, page.text
    return page.text


@pytest.mark.parametrize(
    ("redirect_uri", "shown"),
    [
        (
            "https://аррӏе.com/cb",
            'back to <span class="host">xn--80ak6aa92e.com</span> '
            '(shown by some browsers as <span class="host">аррӏе.com</span>).',
        ),
        ("https://example.com./cb", 'back to <span class="host">example.com.</span>.'),
        ("https://client.example:8443/cb", 'back to <span class="host">client.example:8443</span>.'),
        ("https://192.0.2.10/cb", 'back to <span class="host">192.0.2.10</span>.'),
        ("http://[::1]:8080/cb", 'back to <span class="host">http://[::1]:8080</span>.'),
        ("http://localhost:6274/cb", 'back to <span class="host">http://localhost:6274</span>.'),
        (
            "com.example.app:/oauth/callback",
            'back to the app on this device that opens <span class="host">com.example.app:</span> links.',
        ),
    ],
)
def test_consent_page_names_the_destination_a_browser_goes_to(http: FlaskTransport, redirect_uri: str, shown: str) -> None:
    assert shown in consent_page(http, redirect_uri)


def add_legacy_client(app: Flask, *, redirect_uri: str, client_name: str | None = None) -> str:
    """A client stored under older, looser rules (as a database from before them may hold)."""
    client = Client(
        client_id="mob_client_legacy",
        redirect_uris=(redirect_uri,),
        grant_types=("authorization_code",),
        response_types=("code",),
        token_endpoint_auth_method="none",
        issued_at=1,
        client_name=client_name,
    )
    app.extensions["container"].clients().add(client)
    return client.client_id


@pytest.mark.parametrize(
    "stored_uri",
    ["https://evil.example\\.claude.ai/cb", "search-ms:query=x", "https://client.example@evil.example/cb"],
)
def test_legacy_redirect_uri_that_would_be_refused_is_never_a_destination(app: Flask, http: FlaskTransport, stored_uri: str) -> None:
    client = OAuthClient(http, client_id=add_legacy_client(app, redirect_uri=stored_uri), redirect_uri=stored_uri)
    for extra in ({}, {"response_type": "token"}):
        page = client.authorize(pkce_pair()[1], **extra)
        assert page.status == 400
        assert "Location" not in page.headers
        assert RETURN_LINK.search(page.text) is None and "href=" not in page.text.split("<main>")[1]
        assert "register the client again" in page.text


def test_text_utf8_cannot_encode_never_breaks_a_page(app: Flask, http: FlaskTransport) -> None:
    # Registration refuses it now; a row stored before that rule still renders.
    client_id = add_legacy_client(app, redirect_uri="https://client.example/cb", client_name="Claude\ud800")
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "https://client.example/cb",
        "code_challenge": pkce_pair()[1],
        "code_challenge_method": "S256",
    }
    page = http.client.get("/oauth/authorize?" + urlencode(query))
    assert page.status_code == 200
    text = page.get_data().decode("utf-8")
    assert "Claude\ufffd" in text
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"


# -- caps at /authorize --------------------------------------------------------------------------


def test_state_at_the_cap_reaches_consent_and_one_more_character_is_a_page_with_a_link(oauth: OAuthClient) -> None:
    challenge = pkce_pair()[1]
    assert oauth.authorize(challenge, state="s" * MAX_STATE_LENGTH).status == 200
    page = oauth.authorize(challenge, state="s" * (MAX_STATE_LENGTH + 1))
    assert page.status == 400 and "Location" not in page.headers
    match = RETURN_LINK.search(page.text)
    assert match is not None
    link = html.unescape(match.group(1))
    assert link.startswith(oauth.redirect_uri + "?error=invalid_request&")
    # The overlong state is the parameter in error: it is not sent back.
    assert "state=" not in link


def test_overlong_client_id_is_a_page_without_a_link(oauth: OAuthClient) -> None:
    oauth.client_id = "c" * (MAX_CLIENT_ID_LENGTH + 1)
    page = oauth.authorize(pkce_pair()[1])
    assert page.status == 400 and "Location" not in page.headers
    assert RETURN_LINK.search(page.text) is None
    assert f"client_id is longer than {MAX_CLIENT_ID_LENGTH}" in page.text


def test_consent_after_tricky_host_still_denies_with_a_redirect(http: FlaskTransport) -> None:
    answer = register(http, "https://аррӏе.com/cb")
    client = OAuthClient(http, client_id=answer["client_id"], redirect_uri=answer["redirect_uris"][0])
    page = client.authorize(pkce_pair()[1], state="st")
    assert set(hidden_fields(page.text)) == {"pending_id", "csrf_token"}
    reply = client.consent(page, decision="deny")
    assert reply.status == 303
    assert reply.location.startswith("https://xn--80ak6aa92e.com/cb?error=access_denied&")
    assert reply.query()["state"] == "st"
