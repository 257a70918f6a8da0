"""Client registration over HTTP: client ID metadata documents served from loopback
(CIMD_ALLOW_LOOPBACK=true), CLIENT_REGISTRATION, REDIRECT_URI_ALLOWLIST, RFC 7592's client
configuration endpoint, and what the metadata advertises."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .document_server import DocumentHost, document_host  # noqa: F401 - the fixture
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair

CALLBACK = "http://127.0.0.1:9/callback"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[Flask] = []

    def build(**env: str) -> Flask:
        settings = load_settings(environment_for(tmp_path / str(len(apps)), **env), dotenv_path=None)
        app = create_app(settings)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["container"].storage_admin().close()


def doc_client(app: Flask, client_id: str, redirect_uri: str = CALLBACK) -> OAuthClient:
    client = OAuthClient(FlaskTransport(app.test_client()))
    client.client_id = client_id
    client.redirect_uri = redirect_uri
    return client


# -- metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "registration_endpoint", "documents"),
    [("open", True, True), ("metadata-documents", False, True), ("closed", False, False)],
)
def test_metadata_follows_the_registration_policy(make_app: Any, mode: str, registration_endpoint: bool, documents: bool) -> None:
    metadata = make_app(CLIENT_REGISTRATION=mode).test_client().get("/.well-known/oauth-authorization-server").get_json()
    assert ("registration_endpoint" in metadata) is registration_endpoint
    assert metadata["client_id_metadata_document_supported"] is documents
    assert "none" in metadata["token_endpoint_auth_methods_supported"]


@pytest.mark.parametrize("mode", ["metadata-documents", "closed"])
def test_register_answers_that_registration_is_closed(make_app: Any, mode: str) -> None:
    reply = OAuthClient(FlaskTransport(make_app(CLIENT_REGISTRATION=mode).test_client())).register()
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_client_metadata"
    assert "closed" in reply.json()["error_description"]


# -- client ID metadata documents ----------------------------------------------------------------


def test_a_document_client_signs_in_refreshes_revokes_and_introspects(make_app: Any, document_host: DocumentHost) -> None:
    client_id = document_host.client_document("/client.json", [CALLBACK], grant_types=[
        "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"])
    app = make_app(CIMD_ALLOW_LOOPBACK="true")
    client = doc_client(app, client_id)
    code, verifier = client.login()
    tokens = client.exchange(code, verifier)
    assert tokens.status == 200, tokens.text
    refreshed = client.refresh(tokens.json()["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    introspection = client.introspect(refreshed.json()["access_token"])
    assert introspection["active"] is True and introspection["client_id"] == client_id
    assert client.revoke(refreshed.json()["access_token"]).status == 200
    # One fetch: the document stayed fresh in the cache for the whole flow.
    assert document_host.count("/client.json") == 1


def test_an_unfetchable_document_is_an_error_page_never_a_redirect(make_app: Any, document_host: DocumentHost) -> None:
    client_id = document_host.publish("/gone.json", b"nope", status=404)
    app = make_app(CIMD_ALLOW_LOOPBACK="true")
    _, challenge = pkce_pair()
    page = doc_client(app, client_id).authorize(challenge)
    assert page.status == 400
    assert "Location" not in page.headers
    assert "text/html" in page.headers["Content-Type"]
    assert "404" in page.text and "127.0.0.1" in page.text


def test_a_document_with_another_client_id_is_refused(make_app: Any, document_host: DocumentHost) -> None:
    client_id = document_host.publish("/client.json", {"client_id": "https://elsewhere.example/c", "client_name": "x", "redirect_uris": [CALLBACK]})
    app = make_app(CIMD_ALLOW_LOOPBACK="true")
    _, challenge = pkce_pair()
    page = doc_client(app, client_id).authorize(challenge)
    assert page.status == 400 and "client_id" in page.text
    assert "Location" not in page.headers


def test_an_unknown_url_client_at_the_token_endpoint_is_invalid_client_without_a_fetch(
    make_app: Any, document_host: DocumentHost
) -> None:
    client_id = document_host.client_document("/client.json", [CALLBACK])
    app = make_app(CIMD_ALLOW_LOOPBACK="true")
    reply = doc_client(app, client_id).exchange("mob_ac_x", "v" * 43)
    assert reply.status == 401 and reply.json()["error"] == "invalid_client"
    assert document_host.count("/client.json") == 0


def test_url_client_ids_are_refused_when_registration_is_closed(make_app: Any, document_host: DocumentHost) -> None:
    client_id = document_host.client_document("/client.json", [CALLBACK])
    app = make_app(CIMD_ALLOW_LOOPBACK="true", CLIENT_REGISTRATION="closed")
    _, challenge = pkce_pair()
    page = doc_client(app, client_id).authorize(challenge)
    assert page.status == 400 and "Location" not in page.headers
    assert document_host.count("/client.json") == 0


def test_the_allowlist_refuses_a_documents_redirect(make_app: Any, document_host: DocumentHost) -> None:
    client_id = document_host.client_document("/client.json", ["http://127.0.0.1:9/other"])
    app = make_app(CIMD_ALLOW_LOOPBACK="true", REDIRECT_URI_ALLOWLIST="http://127.0.0.1:*/callback")
    _, challenge = pkce_pair()
    page = doc_client(app, client_id, "http://127.0.0.1:9/other").authorize(challenge)
    assert page.status == 400 and "Location" not in page.headers
    reply = OAuthClient(FlaskTransport(app.test_client()), redirect_uri="http://127.0.0.1:9/other").register()
    assert reply.status == 400 and reply.json()["error"] == "invalid_redirect_uri"
    assert OAuthClient(FlaskTransport(app.test_client()), redirect_uri=CALLBACK).register().status == 201


# -- RFC 7592 ------------------------------------------------------------------------------------


def test_client_configuration_endpoint(make_app: Any) -> None:
    app = make_app()
    oauth = OAuthClient(FlaskTransport(app.test_client()))
    registration = oauth.register().json()
    token, uri = registration["registration_access_token"], registration["registration_client_uri"]
    path = uri.removeprefix("http://127.0.0.1:8000")
    assert path == "/oauth/register/" + oauth.client_id
    http = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}

    read = http.get(path, headers=bearer)
    assert read.status_code == 200 and read.get_json()["client_id"] == oauth.client_id
    assert read.headers["Cache-Control"] == "no-store"

    replaced = http.put(path, headers=bearer, json={**{k: v for k, v in read.get_json().items()}, "client_name": "Renamed"})
    assert replaced.status_code == 200, replaced.get_data(as_text=True)
    assert replaced.get_json()["client_name"] == "Renamed"

    code, verifier = oauth.login()
    access = oauth.exchange(code, verifier).json()["access_token"]
    assert http.delete(path, headers=bearer).status_code == 204
    # Everything issued to it went with it.
    assert app.test_client().post("/mcp", headers={"Authorization": f"Bearer {access}"}, json={}).status_code == 401
    assert http.get(path, headers=bearer).status_code == 401


def test_client_configuration_never_reveals_whether_a_client_exists(make_app: Any) -> None:
    app = make_app()
    oauth = OAuthClient(FlaskTransport(app.test_client()))
    registration = oauth.register().json()
    other = OAuthClient(FlaskTransport(app.test_client()))
    other_token = other.register().json()["registration_access_token"]
    http = app.test_client()
    answers = set()
    for path, headers in [
        ("/oauth/register/" + oauth.client_id, {}),
        ("/oauth/register/" + oauth.client_id, {"Authorization": "Bearer wrong"}),
        ("/oauth/register/" + oauth.client_id, {"Authorization": f"Bearer {other_token}"}),
        ("/oauth/register/" + oauth.client_id, {"Authorization": f"Basic {registration['registration_access_token']}"}),
        ("/oauth/register/mob_client_nobody", {"Authorization": f"Bearer {other_token}"}),
        ("/oauth/register/mob_client_nobody", {}),
    ]:
        for method in ("get", "put", "delete"):
            reply = getattr(http, method)(path, headers=headers, json={"client_id": "x"})
            assert reply.status_code == 401
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            answers.add(reply.get_data())
    assert len(answers) == 1
    # Nothing was changed or deleted.
    assert http.get(
        "/oauth/register/" + oauth.client_id, headers={"Authorization": f"Bearer {registration['registration_access_token']}"}
    ).status_code == 200
