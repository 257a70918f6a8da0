"""Empty parameters at every endpoint (RFC 6749 §3.1: "Parameters sent without a value MUST be
treated as if they were omitted from the request"): an empty required parameter is a missing one,
``invalid_request`` naming it (an error page on the browser steps), never a 500; an empty optional
one changes nothing."""

from __future__ import annotations

import html
from typing import Any, Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mcp_oauth_bridge.adapters.http import fake_idp
from mcp_oauth_bridge.adapters.http.schemas import (
    AuthorizationRequestSchema,
    CallbackSchema,
    ConsentSchema,
    TokenReferenceSchema,
    TokenRequestSchema,
)

from .oauth_flow import OAuthClient, hidden_fields, pkce_pair

FORM = "application/x-www-form-urlencoded"
MISSING = "Missing data for required field."

# Each form endpoint, how it is called, its schema, and whether its errors are pages.
FORM_ENDPOINTS = [
    ("GET", "/oauth/authorize", AuthorizationRequestSchema, "page"),
    ("GET", "/authorize", AuthorizationRequestSchema, "page"),
    ("POST", "/oauth/consent", ConsentSchema, "page"),
    ("GET", "/oauth/callback", CallbackSchema, "page"),
    ("GET", "/oauth/azure_callback", CallbackSchema, "page"),
    ("GET", "/fake-idp/authorize", fake_idp.SignInRequestSchema, "page"),
    ("POST", "/fake-idp/authorize", fake_idp.SignInSchema, "page"),
    ("POST", "/oauth/token", TokenRequestSchema, "json"),
    ("POST", "/token", TokenRequestSchema, "json"),
    ("POST", "/oauth/revoke", TokenReferenceSchema, "json"),
    ("POST", "/revoke", TokenReferenceSchema, "json"),
    ("POST", "/oauth/introspect", TokenReferenceSchema, "json"),
    ("POST", "/introspect", TokenReferenceSchema, "json"),
]
# What each endpoint says when every parameter is empty: the first thing it needs.
FIRST_MISSING = {
    "/oauth/authorize": "client_id is required",
    "/authorize": "client_id is required",
    "/oauth/consent": f"pending_id: {MISSING}",
    "/oauth/callback": "has no state",
    "/oauth/azure_callback": "has no state",
    "/fake-idp/authorize": f"state: {MISSING}",
    "/oauth/token": f"grant_type: {MISSING}",
    "/token": f"grant_type: {MISSING}",
    "/oauth/revoke": f"token: {MISSING}",
    "/revoke": f"token: {MISSING}",
    "/oauth/introspect": f"token: {MISSING}",
    "/introspect": f"token: {MISSING}",
}


def send(client: FlaskClient, method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None) -> TestResponse:
    encoded = urlencode(list(params.items()))
    if method == "GET":
        return client.get(f"{path}?{encoded}", headers=dict(headers or {}))
    return client.post(path, data=encoded, headers={"Content-Type": FORM, **(headers or {})})


def assert_invalid_request(response: TestResponse, kind: str, says: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    if kind == "json":
        assert response.get_json() == {"error": "invalid_request", "error_description": says}
    else:
        assert response.mimetype == "text/html"
        assert says in html.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize(("method", "path", "schema", "kind"), FORM_ENDPOINTS, ids=lambda v: v if isinstance(v, str) else "")
def test_every_parameter_sent_empty(client: FlaskClient, method: str, path: str, schema: Any, kind: str) -> None:
    response = send(client, method, path, {name: "" for name in sorted(schema().fields)})
    assert_invalid_request(response, kind, FIRST_MISSING[path])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# -- each required parameter empty, everything else genuine -------------------------------------


@pytest.mark.parametrize("path", ["/oauth/token", "/token"])
def test_an_empty_grant_type_is_missing(oauth: OAuthClient, client: FlaskClient, path: str) -> None:
    code, verifier = oauth.login()
    params = {
        "grant_type": "", "code": code, "redirect_uri": oauth.redirect_uri, "code_verifier": verifier,
        "client_id": oauth.client_id, "client_secret": oauth.client_secret or "",
    }
    assert_invalid_request(send(client, "POST", path, params), "json", f"grant_type: {MISSING}")


@pytest.mark.parametrize("path", ["/oauth/revoke", "/revoke", "/oauth/introspect", "/introspect"])
def test_an_empty_token_is_missing(oauth: OAuthClient, client: FlaskClient, tokens: dict[str, Any], path: str) -> None:
    params = {"token": "", "token_type_hint": "access_token", "client_id": oauth.client_id, "client_secret": oauth.client_secret or ""}
    assert_invalid_request(send(client, "POST", path, params), "json", f"token: {MISSING}")
    # The token was not touched.
    assert oauth.introspect(tokens["access_token"])["active"] is True


def consent_form(oauth: OAuthClient) -> dict[str, str]:
    _, challenge = pkce_pair()
    page = oauth.authorize(challenge)
    assert page.status == 200, page.text
    form = hidden_fields(page.text)
    form["decision"] = "approve"
    return form


@pytest.mark.parametrize("name", ["pending_id", "csrf_token", "decision"])
def test_an_empty_consent_field_is_missing(oauth: OAuthClient, name: str) -> None:
    genuine = consent_form(oauth)
    reply = oauth.http.post("/oauth/consent", data={**genuine, name: ""})
    assert reply.status == 400, reply.text
    assert f"{name}: {MISSING}" in html.unescape(reply.text)
    # The pending authorization still stands: the genuine answer goes through.
    assert oauth.http.post("/oauth/consent", data=genuine).status == 303


def sign_in_request(oauth: OAuthClient) -> dict[str, str]:
    """The fake IdP's sign-in parameters of a genuine, approved authorization."""
    to_idp = oauth.consent(oauth.authorize(pkce_pair()[1]))
    assert to_idp.status == 303, to_idp.text
    return {k: v[0] for k, v in parse_qs(urlsplit(to_idp.location).query).items() if k in ("state", "nonce", "code_challenge")}


@pytest.mark.parametrize("name", ["state", "nonce", "code_challenge"])
def test_an_empty_sign_in_page_parameter_is_missing(oauth: OAuthClient, client: FlaskClient, name: str) -> None:
    params = {**sign_in_request(oauth), name: ""}
    assert_invalid_request(send(client, "GET", "/fake-idp/authorize", params), "page", f"{name}: {MISSING}")


@pytest.mark.parametrize("name", ["state", "nonce", "code_challenge", "action"])
def test_an_empty_sign_in_field_is_missing(oauth: OAuthClient, client: FlaskClient, name: str) -> None:
    params = {**sign_in_request(oauth), "action": "sign_in", "username": "alice", name: ""}
    assert_invalid_request(send(client, "POST", "/fake-idp/authorize", params), "page", f"{name}: {MISSING}")


# -- an empty optional parameter is as if it were not there -------------------------------------


def test_empty_optional_parameters_of_the_authorization_request_are_omitted(oauth: OAuthClient) -> None:
    _, challenge = pkce_pair()
    # resource= would otherwise be refused as a resource this server does not serve (RFC 8707),
    # and scope= would be an empty request for scopes.
    page = oauth.authorize(challenge, state="", scope="", resource="")
    assert page.status == 200, page.text
    assert "pending_id" in hidden_fields(page.text)


def test_empty_optional_parameters_of_the_code_exchange_are_omitted(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    reply = oauth.exchange(code, verifier, resource="", scope="")
    assert reply.status == 200, reply.text
    assert reply.json()["token_type"] == "Bearer"


def test_empty_optional_parameters_of_the_refresh_grant_are_omitted(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    reply = oauth.refresh(tokens["refresh_token"], scope="", resource="")
    assert reply.status == 200, reply.text
    assert reply.json()["scope"] == tokens["scope"]


def test_an_empty_token_type_hint_is_omitted(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    reply = oauth.http.post(
        "/oauth/introspect",
        data={"client_id": oauth.client_id, "client_secret": oauth.client_secret or "", "token": tokens["access_token"], "token_type_hint": ""},
    )
    assert reply.status == 200, reply.text
    assert reply.json()["active"] is True


def test_an_empty_client_secret_of_a_public_client_is_omitted(http: Any) -> None:
    public = OAuthClient(http)
    assert public.register(token_endpoint_auth_method="none").status == 201
    code, verifier = public.login()
    reply = http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": public.redirect_uri,
            "code_verifier": verifier, "client_id": public.client_id, "client_secret": "",
        },
    )
    assert reply.status == 200, reply.text


def test_an_empty_upstream_error_on_the_callback_is_omitted(oauth: OAuthClient) -> None:
    to_idp = oauth.consent(oauth.authorize(pkce_pair()[1], state="client-state"))
    to_callback = oauth.fake_sign_in(to_idp)
    assert to_callback.status == 303, to_callback.text
    back = oauth.http.get(to_callback.location + "&error=&error_description=")
    assert back.status == 302, back.text
    assert "code" in back.query() and "error" not in back.query()


# -- empty bodies at the JSON endpoints ---------------------------------------------------------


def test_an_empty_registration_body_is_invalid_client_metadata(client: FlaskClient) -> None:
    response = client.post("/oauth/register", data=b"", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_client_metadata"


def test_an_empty_mcp_body_is_a_parse_error(client: FlaskClient, tokens: dict[str, Any]) -> None:
    response = client.post(
        "/mcp", data=b"", headers={"Content-Type": "application/json", "Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == -32700
