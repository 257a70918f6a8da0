"""The pages a person sees (issue 10 §3) through Flask's test client: the service's name in every
title, what the consent page says of each kind of client, scopes in plain words, consent asked
every time, and the status page at ``/``. The browser tests (tests/browser) check the same pages
in Chromium for layout, keyboard and script safety."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
from flask import Flask

from mcp_oauth_bridge.adapters.http.scope_descriptions import UNDESCRIBED_SCOPE, describe_scopes
from mcp_oauth_bridge.domain.model import OPERATOR_CLIENT_KIND, Client
from mcp_oauth_bridge.domain.ports import CachedMetadataDocument
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import PUBLIC_URL, environment_for
from .oauth_flow import REDIRECT_URI, FlaskTransport, OAuthClient, pkce_pair

TITLE = re.compile(r"<title>(.*?)</title>", re.S)
HEADING = re.compile(r"<h1[^>]*>(.*?)</h1>", re.S)


def title_of(page: str) -> str:
    match = TITLE.search(page)
    assert match is not None
    return html.unescape(match.group(1))


def heading_of(page: str) -> str:
    match = HEADING.search(page)
    assert match is not None
    return html.unescape(" ".join(re.sub(r"<[^>]+>", "", match.group(1)).split()))


@pytest.fixture
def named_app(tmp_path: Path) -> Flask:
    settings = load_settings(environment_for(tmp_path, SERVICE_NAME="Contoso"), dotenv_path=None)
    return create_app(settings)


def stored_client(app: Flask, kind: str, client_id: str, client_name: str | None) -> OAuthClient:
    app.extensions["container"].clients().add(
        Client(
            client_id=client_id,
            redirect_uris=(REDIRECT_URI,),
            grant_types=("authorization_code",),
            response_types=("code",),
            token_endpoint_auth_method="none",
            issued_at=1,
            client_name=client_name,
            extra_metadata={"client_uri": "https://unrelated.example"},
            kind=kind,
        )
    )
    return OAuthClient(FlaskTransport(app.test_client()), client_id=client_id)


def test_pages_name_the_public_host_without_service_name(oauth: OAuthClient) -> None:
    page = oauth.authorize(pkce_pair()[1]).text
    assert title_of(page) == "“Test Client” wants to use your tools at 127.0.0.1"
    assert heading_of(page) == title_of(page)
    error = oauth.authorize(pkce_pair()[1], code_challenge_method="plain").text
    assert title_of(error) == "This sign-in request cannot be completed · 127.0.0.1"


def test_self_registered_client_is_named_as_self_declared(named_app: Flask) -> None:
    client = OAuthClient(FlaskTransport(named_app.test_client()))
    assert client.register(client_name="Claude", client_uri="https://claude.ai").status == 201
    page = client.authorize(pkce_pair()[1]).text
    assert heading_of(page) == "“Claude” wants to use your tools at Contoso"
    assert page.count("unverified · self-declared") == 2
    assert '<span class="host">https://claude.ai/</span>' in page
    assert 'class="verified"' not in page and 'class="trusted"' not in page and "✓" not in page


def test_self_registered_client_without_a_name_is_not_given_one(named_app: Flask) -> None:
    client = OAuthClient(FlaskTransport(named_app.test_client()))
    assert client.register(client_name=None).status == 201
    page = client.authorize(pkce_pair()[1]).text
    assert heading_of(page) == "An application that gave no name wants to use your tools at Contoso"
    # Its client_id is not a name either.
    assert client.client_id not in heading_of(page)


def test_metadata_document_client_shows_the_host_of_its_client_id_as_verified(named_app: Flask) -> None:
    client_id = "https://xn--bcher-kva.example/client.json"
    # The document as a fetch leaves it in the shared cache (nothing is fetched here).
    named_app.extensions["container"].metadata_documents().put_document(
        CachedMetadataDocument(
            client_id=client_id,
            document={"client_id": client_id, "client_name": "Bücher", "redirect_uris": [REDIRECT_URI],
                      "client_uri": "https://unrelated.example"},
            fetched_at=int(time.time()),
            fresh_until=int(time.time()) + 3600,
            stale_until=int(time.time()) + 7200,
        )
    )
    client = OAuthClient(FlaskTransport(named_app.test_client()), client_id=client_id)
    page = client.authorize(pkce_pair()[1]).text
    assert heading_of(page) == "Bücher wants to use your tools at Contoso"
    assert (
        'published at <span class="host">xn--bcher-kva.example</span> '
        '(shown by some browsers as <span class="host">bücher.example</span>).'
    ) in page
    # Its own claims beyond the host are not shown, let alone as verified.
    assert "unrelated.example" not in page and "self-declared" not in page


def test_operator_client_is_shown_as_added_by_the_administrators(named_app: Flask) -> None:
    client = stored_client(named_app, OPERATOR_CLIENT_KIND, "mob_client_operator", "Mail Assistant")
    page = client.authorize(pkce_pair()[1]).text
    assert heading_of(page) == "Mail Assistant wants to use your tools at Contoso"
    assert "Added by the administrators of Contoso as <strong>Mail Assistant</strong>." in " ".join(page.split())
    assert "self-declared" not in page and "unrelated.example" not in page


def test_a_client_of_an_unknown_kind_is_refused(named_app: Flask) -> None:
    # A row no release of ours writes (a newer one's, after a downgrade): never trusted.
    client = stored_client(named_app, "someday", "mob_client_future", "Future")
    page = client.authorize(pkce_pair()[1])
    assert page.status == 400 and "Location" not in page.headers
    assert heading_of(page.text) == "This sign-in request cannot be completed"


def test_scopes_are_described_in_plain_words_with_their_names(tmp_path: Path) -> None:
    settings = load_settings(environment_for(tmp_path, SCOPES="offline_access Sites.Selected"), dotenv_path=None)
    client = OAuthClient(FlaskTransport(create_app(settings).test_client()))
    client.register()
    page = client.authorize(pkce_pair()[1], scope="User.Read offline_access Sites.Selected").text
    rows = re.findall(r"<tr><td>(.*?)</td><td><code>(.*?)</code></td></tr>", page)
    assert rows == [
        ("Read your basic profile (name, username and email address)", "User.Read"),
        ("Stay connected (refresh access without asking again)", "offline_access"),
        (UNDESCRIBED_SCOPE, "Sites.Selected"),
    ]


def test_scope_descriptions_match_names_exactly() -> None:
    # RFC 6749 §3.3: scope names are case-sensitive; a near miss is not described.
    described = describe_scopes(["Mail.Read", "mail.read", "Mail.Read.All"])
    assert [(d.description, d.described) for d in described] == [
        ("Read your mail", True),
        (UNDESCRIBED_SCOPE, False),
        (UNDESCRIBED_SCOPE, False),
    ]


def test_consent_is_asked_again_every_time(oauth: OAuthClient) -> None:
    # Nothing is remembered: the same browser, client and redirect URI, right after an approval.
    oauth.login(state="first")
    again = oauth.authorize(pkce_pair()[1], state="second")
    assert again.status == 200
    assert "Location" not in again.headers
    assert 'value="approve"' in again.text


# -- the status page ---------------------------------------------------------------------------


def test_status_page_says_what_the_address_is(named_app: Flask) -> None:
    reply = named_app.test_client().get("/")
    assert reply.status_code == 200
    assert reply.mimetype == "text/html"
    assert reply.headers["Cache-Control"] == "public, max-age=300"
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    page = reply.get_data(as_text=True)
    assert heading_of(page) == "Contoso"
    assert title_of(page) == "Contoso: MCP server"
    assert "OAuth 2.1" in page and "Settings → Connectors → Add custom connector" in page
    assert f"<code>{PUBLIC_URL}/mcp</code>" in page
    assert f'href="{PUBLIC_URL}/.well-known/oauth-authorization-server"' in page
    assert f'href="{PUBLIC_URL}/.well-known/oauth-protected-resource"' in page
    # No cookie: nothing about the visitor is kept, and a shared cache may keep the page.
    assert "Set-Cookie" not in reply.headers


def test_status_page_answers_head(named_app: Flask) -> None:
    reply = named_app.test_client().head("/")
    assert reply.status_code == 200
    assert reply.mimetype == "text/html"
    assert reply.get_data() == b""


def test_status_page_shows_no_secret(tmp_path: Path) -> None:
    env = environment_for(tmp_path)
    page = create_app(load_settings(env, dotenv_path=None)).test_client().get("/").get_data(as_text=True)
    for name in ("ENCRYPTION_KEYS", "TOKEN_HASH_KEY", "DATA_DIR"):
        assert env[name] not in page


def test_the_protected_resource_is_named_after_the_service(named_app: Flask, app: Flask) -> None:
    assert named_app.test_client().get("/.well-known/oauth-protected-resource").get_json()["resource_name"] == "Contoso"
    # Without SERVICE_NAME: the public host, as the pages say.
    assert app.test_client().get("/.well-known/oauth-protected-resource").get_json()["resource_name"] == "127.0.0.1"
