"""The OAuth endpoints over Flask's test client: status codes, headers, pages and redirects."""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from mcp_oauth_bridge.adapters.http.schemas import MAX_FORM_BODY, MAX_PARAMETER_LENGTH

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import PUBLIC_URL, environment_for
from .oauth_flow import REDIRECT_URI, FlaskTransport, OAuthClient, hidden_fields, pkce_pair


# -- discovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"])
def test_authorization_server_metadata(http: FlaskTransport, path: str) -> None:
    reply = http.get(path)
    assert reply.status == 200
    doc = reply.json()
    assert doc["issuer"] == PUBLIC_URL
    assert doc["authorization_endpoint"] == PUBLIC_URL + "/oauth/authorize"
    assert doc["token_endpoint"] == PUBLIC_URL + "/oauth/token"
    assert doc["registration_endpoint"] == PUBLIC_URL + "/oauth/register"
    assert doc["revocation_endpoint"] == PUBLIC_URL + "/oauth/revoke"
    assert doc["introspection_endpoint"] == PUBLIC_URL + "/oauth/introspect"
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic", "none"]
    assert doc["scopes_supported"] == ["User.Read"]
    assert doc["authorization_response_iss_parameter_supported"] is True


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
def test_protected_resource_metadata(http: FlaskTransport, path: str) -> None:
    doc = http.get(path).json()
    assert doc["resource"] == PUBLIC_URL + "/mcp"
    assert doc["authorization_servers"] == [PUBLIC_URL]
    assert doc["scopes_supported"] == ["User.Read"]
    assert doc["bearer_methods_supported"] == ["header"]


# -- registration -------------------------------------------------------------------------------


def test_registration_returns_metadata_and_secret(http: FlaskTransport) -> None:
    client = OAuthClient(http)
    reply = client.register(client_name="Claude", application_type="web")
    assert reply.status == 201
    assert reply.headers["Cache-Control"] == "no-store"
    doc = reply.json()
    assert doc["client_id"].startswith("mob_client_")
    assert doc["client_secret"].startswith("mob_cs_")
    assert doc["client_secret_expires_at"] == 0
    assert doc["redirect_uris"] == [REDIRECT_URI]
    assert doc["token_endpoint_auth_method"] == "client_secret_post"
    assert doc["grant_types"] == ["authorization_code", "refresh_token"]
    assert doc["client_name"] == "Claude"
    assert doc["application_type"] == "web"


def test_public_client_gets_no_secret_at_root_alias(http: FlaskTransport) -> None:
    reply = http.post("/register", json={"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"})
    assert reply.status == 201
    assert "client_secret" not in reply.json()


@pytest.mark.parametrize(
    "body, error, fragment",
    [
        ({}, "invalid_redirect_uri", "redirect_uris is required"),
        ({"redirect_uris": "https://a.example/cb"}, "invalid_redirect_uri", "array"),
        ({"redirect_uris": []}, "invalid_redirect_uri", "at least one"),
        ({"redirect_uris": ["https://a.example/cb#frag"]}, "invalid_redirect_uri", "fragment"),
        ({"redirect_uris": ["http://a.example/cb"]}, "invalid_redirect_uri", "loopback"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri", "javascript"),
        ({"redirect_uris": ["data:text/html,hi"]}, "invalid_redirect_uri", "data"),
        ({"redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "password"]}, "invalid_client_metadata", "password"),
        ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata", "private_key_jwt"),
        ({"redirect_uris": [REDIRECT_URI], "client_name": 7}, "invalid_client_metadata", "client_name"),
    ],
)
def test_registration_rejects_bad_metadata(http: FlaskTransport, body: dict[str, Any], error: str, fragment: str) -> None:
    reply = http.post("/oauth/register", json=body)
    assert reply.status == 400
    assert reply.json()["error"] == error
    assert fragment in reply.json()["error_description"]


def test_registration_rejects_oversized_and_non_json_bodies(app: Any) -> None:
    client = app.test_client()
    big = {"redirect_uris": [REDIRECT_URI], "client_name": "x", "contacts": ["a" * 20000]}
    reply = client.post("/oauth/register", json=big)
    assert reply.status_code == 400
    assert reply.json["error"] == "invalid_client_metadata"
    assert "larger than" in reply.json["error_description"]
    for body in ("not json", "[" * 15000):
        reply = client.post("/oauth/register", data=body, content_type="application/json")
        assert reply.status_code == 400
        assert reply.json["error"] == "invalid_client_metadata"


def test_registration_get_is_not_redirected(http: FlaskTransport) -> None:
    # A redirect would turn a client's POST into a GET; the endpoint answers 405 instead.
    assert http.get("/oauth/register").status == 405


# -- authorization endpoint and consent ---------------------------------------------------------


def test_consent_page_names_client_and_redirect_host(oauth: OAuthClient) -> None:
    _, challenge = pkce_pair()
    page = oauth.authorize(challenge)
    assert page.status == 200
    assert "Test Client" in page.text
    assert "127.0.0.1:9999" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "mob_browser=" in page.headers["Set-Cookie"]
    assert "HttpOnly" in page.headers["Set-Cookie"]
    assert set(hidden_fields(page.text)) == {"pending_id", "csrf_token"}


def test_consent_cookie_uses_host_prefix_over_https(tmp_path: Path) -> None:
    settings = load_settings(environment_for(tmp_path, PUBLIC_URL="https://localhost:8443"), dotenv_path=None)
    app = create_app(settings)
    client = OAuthClient(FlaskTransport(app.test_client()))
    client.register()
    page = client.authorize(pkce_pair()[1])
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("__Host-mob_browser=")
    assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie


@pytest.mark.parametrize(
    "params",
    [
        {"client_id": "mob_client_unknown"},
        {"redirect_uri": "http://127.0.0.1:9999/other"},
        {"redirect_uri": "https://evil.example/callback"},
    ],
)
def test_invalid_client_or_redirect_uri_gets_an_error_page_not_a_redirect(oauth: OAuthClient, params: dict[str, str]) -> None:
    if "client_id" in params:
        oauth.client_id = params.pop("client_id")
    page = oauth.authorize(pkce_pair()[1], **params)
    assert page.status == 400
    assert "Location" not in page.headers
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["X-Frame-Options"] == "DENY"
    # Never a way on to an unvalidated address.
    assert return_link(page.text) is None


def return_link(page_html: str) -> str | None:
    """The error page's link back to the client, unescaped."""
    match = re.search(r'<a href="([^"]*)">Return to the application</a>', page_html)
    return html.unescape(match.group(1)) if match else None


@pytest.mark.parametrize(
    "params, error, description",
    [
        ({"code_challenge_method": "plain"}, "invalid_request", "S256"),
        ({"code_challenge_method": None}, "invalid_request", "S256"),
        ({"code_challenge": None}, "invalid_request", "code_challenge is required"),
        ({"response_type": "token"}, "unsupported_response_type", "response_type"),
        ({"scope": "User.Read admin"}, "invalid_scope", "admin"),
        ({"resource": "https://other.example/mcp"}, "invalid_target", "resource"),
    ],
)
def test_authorization_errors_before_consent_are_a_page_with_a_link_back(
    oauth: OAuthClient, params: dict[str, Any], error: str, description: str
) -> None:
    # RFC 9700 §4.11.2: nobody has seen a page yet, so no automatic redirect to the client.
    _, challenge = pkce_pair()
    if "code_challenge" in params:
        challenge = params.pop("code_challenge")
    reply = oauth.authorize(challenge, state="s1", **params)
    assert reply.status == 400
    assert "Location" not in reply.headers
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers["Cache-Control"] == "no-store"
    link = return_link(reply.text)
    assert link is not None and link.startswith(REDIRECT_URI + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert query["error"] == error
    assert description in query["error_description"]
    assert query["state"] == "s1"
    assert query["iss"] == PUBLIC_URL
    # The page names where the link leads, as the browser parses it.
    assert 'at <span class="host">http://127.0.0.1:9999</span>' in reply.text


def test_consent_without_csrf_token_is_refused(oauth: OAuthClient) -> None:
    page = oauth.authorize(pkce_pair()[1])
    fields = hidden_fields(page.text)
    reply = oauth.http.post("/oauth/consent", data={"pending_id": fields["pending_id"], "decision": "approve"})
    assert reply.status == 400
    assert "Location" not in reply.headers
    reply = oauth.consent(page, csrf_token="mob_csrf_forged")
    assert reply.status == 400
    assert "CSRF" in reply.text


def test_consent_from_another_browser_is_refused(oauth: OAuthClient, app: Any) -> None:
    page = oauth.authorize(pkce_pair()[1])
    other_browser = OAuthClient(FlaskTransport(app.test_client()), client_id=oauth.client_id)
    reply = other_browser.consent(page)
    assert reply.status == 400
    assert "browser" in reply.text


def test_denied_consent_redirects_with_access_denied(oauth: OAuthClient) -> None:
    reply = oauth.consent(oauth.authorize(pkce_pair()[1], state="s2"), decision="deny")
    # After the person acted, the error goes back to the client as a redirect (RFC 6749 §4.1.2.1).
    assert reply.status == 303
    assert reply.location.startswith(REDIRECT_URI + "?")
    query = reply.query()
    assert query["error"] == "access_denied"
    assert query["state"] == "s2"
    assert query["iss"] == PUBLIC_URL


def test_full_flow_redirects_back_with_code_state_and_iss(oauth: OAuthClient) -> None:
    verifier, challenge = pkce_pair()
    to_idp = oauth.consent(oauth.authorize(challenge, state="xyz"))
    assert to_idp.location.startswith(PUBLIC_URL + "/fake-idp/authorize?")
    to_callback = oauth.fake_sign_in(to_idp, "bob", email="bob@example.com", name="Bob")
    assert to_callback.location.startswith(PUBLIC_URL + "/oauth/callback?")
    back = oauth.http.get(to_callback.location)
    assert back.status == 302
    assert back.location.startswith(REDIRECT_URI + "?")
    query = back.query()
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == "xyz" and query["iss"] == PUBLIC_URL
    assert query["code"].startswith("mob_ac_")
    # The upstream state is single use: replaying the callback shows a page, not a redirect.
    replay = oauth.http.get(to_callback.location)
    assert replay.status == 400 and "Location" not in replay.headers
    tokens = oauth.exchange(query["code"], verifier).json()
    assert oauth.introspect(tokens["access_token"])["username"] == "bob"


def test_cancel_at_fake_sign_in_returns_access_denied(oauth: OAuthClient) -> None:
    to_idp = oauth.consent(oauth.authorize(pkce_pair()[1], state="s3"))
    page = oauth.http.get(to_idp.location)
    form = {**hidden_fields(page.text), "action": "cancel"}
    to_callback = oauth.http.post("/fake-idp/authorize", data=form)
    back = oauth.http.get(to_callback.location)
    assert back.status == 302
    assert back.query()["error"] == "access_denied"
    assert back.query()["state"] == "s3"


# -- token endpoint -----------------------------------------------------------------------------


def test_token_response(tokens: dict[str, Any], oauth: OAuthClient) -> None:
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"].startswith("mob_at_")
    assert tokens["refresh_token"].startswith("mob_rt_")
    assert tokens["expires_in"] == 3600
    assert tokens["scope"] == "User.Read"


def test_token_responses_are_not_cached(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    reply = oauth.exchange(code, verifier)
    assert reply.headers["Cache-Control"] == "no-store"
    error = oauth.exchange(code, verifier)
    assert error.headers["Cache-Control"] == "no-store"


def test_wrong_code_verifier_is_invalid_grant(oauth: OAuthClient) -> None:
    code, _ = oauth.login()
    reply = oauth.exchange(code, pkce_pair()[0])
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_grant"


def test_redeemed_code_reused_is_invalid_grant_and_revokes_tokens(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    first = oauth.exchange(code, verifier).json()
    again = oauth.exchange(code, verifier)
    assert again.status == 400
    assert again.json()["error"] == "invalid_grant"
    assert oauth.introspect(first["access_token"]) == {"active": False}
    assert oauth.refresh(first["refresh_token"]).json()["error"] == "invalid_grant"


def test_mismatched_redirect_uri_is_invalid_grant(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    reply = oauth.token(grant_type="authorization_code", code=code, code_verifier=verifier, redirect_uri="http://127.0.0.1:9999/other")
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_grant"


def test_client_secret_basic_and_bad_secret(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    basic = base64.b64encode(f"{oauth.client_id}:{oauth.client_secret}".encode()).decode()
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
    ok = oauth.http.post("/token", data=form, headers={"Authorization": f"Basic {basic}"})
    assert ok.status == 200, ok.text
    oauth.client_secret = "mob_cs_wrong"
    bad = oauth.refresh(ok.json()["refresh_token"])
    assert bad.status == 401
    assert bad.json()["error"] == "invalid_client"
    assert bad.headers["WWW-Authenticate"].startswith("Basic")


def test_unsupported_grant_type_and_repeated_parameters(oauth: OAuthClient) -> None:
    assert oauth.token(grant_type="password").json()["error"] == "unsupported_grant_type"
    reply = oauth.http.post("/oauth/token", data={"grant_type": ["refresh_token", "refresh_token"], "client_id": oauth.client_id})  # type: ignore[dict-item]
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"
    assert "repeated" in reply.json()["error_description"]


def _introspection_body(oauth: OAuthClient, token: str) -> bytes:
    return urlencode({"client_id": oauth.client_id, "client_secret": oauth.client_secret, "token": token}).encode()


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded; charset=UTF-8"]
)
def test_form_content_type_is_matched_without_case_or_parameters(
    app: Any, oauth: OAuthClient, tokens: dict[str, Any], content_type: str
) -> None:
    reply = app.test_client().post(
        "/oauth/introspect", data=_introspection_body(oauth, tokens["access_token"]), content_type=content_type
    )
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["active"] is True


def test_a_body_that_is_not_a_form_has_no_parameters(app: Any, oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    body = _introspection_body(oauth, tokens["access_token"])
    reply = app.test_client().post("/oauth/introspect", data=body, content_type="text/plain")
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "invalid_request"
    assert reply.get_json()["error_description"].startswith("token:")


def _post_form(app: Any, body: bytes, *, chunked: bool) -> Any:
    if not chunked:
        return app.test_client().post("/oauth/introspect", data=body, content_type="application/x-www-form-urlencoded")
    # No Content-Length, as a server that de-chunks the body (gunicorn) presents it.
    return app.test_client().post(
        "/oauth/introspect",
        input_stream=io.BytesIO(body),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/x-www-form-urlencoded"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_form_body_over_the_limit_is_refused_not_truncated(app: Any, oauth: OAuthClient, tokens: dict[str, Any], chunked: bool) -> None:
    # Valid parameters first, then padding past the limit: cutting the body would still work.
    body = _introspection_body(oauth, tokens["access_token"]) + b"&pad=" + b"x" * MAX_FORM_BODY
    reply = _post_form(app, body, chunked=chunked)
    assert reply.status_code == 400
    assert reply.get_json() == {
        "error": "invalid_request",
        "error_description": f"the request body is larger than {MAX_FORM_BODY} bytes",
    }


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_form_body_at_the_limit_is_read_whole(app: Any, oauth: OAuthClient, tokens: dict[str, Any], chunked: bool) -> None:
    head = _introspection_body(oauth, tokens["access_token"]) + b"&pad="
    reply = _post_form(app, head + b"x" * (MAX_FORM_BODY - len(head)), chunked=chunked)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json()["active"] is True


def test_form_body_shorter_than_its_content_length_is_refused(app: Any, oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    body = _introspection_body(oauth, tokens["access_token"])
    reply = app.test_client().post(
        "/oauth/introspect",
        data=body,
        content_type="application/x-www-form-urlencoded",
        environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)},
    )
    assert reply.status_code == 400
    assert reply.get_json()["error_description"] == "the request body is shorter than its Content-Length"


def test_parameter_over_the_length_limit_is_invalid_request(oauth: OAuthClient) -> None:
    reply = oauth.http.post(
        "/oauth/introspect",
        data={"client_id": oauth.client_id, "client_secret": oauth.client_secret or "", "token": "mob_at_" + "x" * MAX_PARAMETER_LENGTH},
    )
    assert reply.status == 400
    assert reply.json()["error"] == "invalid_request"
    assert reply.json()["error_description"].startswith("token:")


def test_refresh_rotates_and_old_access_token_stays_valid(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    refreshed = oauth.refresh(tokens["refresh_token"], resource=PUBLIC_URL + "/mcp")
    assert refreshed.status == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert oauth.introspect(tokens["access_token"])["active"] is True
    assert oauth.introspect(new["access_token"])["active"] is True
    assert oauth.introspect(tokens["refresh_token"]) == {"active": False}


def test_refresh_replay_within_grace_works_once_then_revokes_grant(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    first = oauth.refresh(tokens["refresh_token"]).json()
    retry = oauth.refresh(tokens["refresh_token"])
    assert retry.status == 200, retry.text
    again = oauth.refresh(tokens["refresh_token"])
    assert again.status == 400
    assert again.json()["error"] == "invalid_grant"
    for token in (first["access_token"], retry.json()["access_token"], retry.json()["refresh_token"]):
        assert oauth.introspect(token) == {"active": False}


def test_after_a_double_refresh_both_answers_work_until_one_is_used(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    first = oauth.refresh(tokens["refresh_token"]).json()
    second = oauth.refresh(tokens["refresh_token"]).json()
    assert oauth.introspect(first["refresh_token"])["active"] is True
    assert oauth.introspect(second["refresh_token"])["active"] is True
    newest = oauth.refresh(second["refresh_token"])
    assert newest.status == 200, newest.text
    # The other answer is now a replay: the whole grant goes.
    replay = oauth.refresh(first["refresh_token"])
    assert replay.status == 400 and replay.json()["error"] == "invalid_grant"
    assert oauth.introspect(newest.json()["access_token"]) == {"active": False}


def test_revocation_and_introspection(oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    info = oauth.introspect(tokens["access_token"])
    assert info["active"] is True
    assert info["client_id"] == oauth.client_id
    assert info["aud"] == PUBLIC_URL + "/mcp"
    assert info["iss"] == PUBLIC_URL
    assert info["sub"] == "fake:alice"
    reply = oauth.revoke(tokens["refresh_token"])
    assert reply.status == 200
    assert (reply.headers["Cache-Control"], reply.headers["Pragma"]) == ("no-store", "no-cache")
    assert oauth.introspect(tokens["access_token"]) == {"active": False}
    # RFC 7009 §2.2: unknown tokens are answered with 200 too.
    assert oauth.revoke("mob_at_unknown").status == 200


def test_unknown_resource_at_token_is_invalid_target(oauth: OAuthClient) -> None:
    code, verifier = oauth.login()
    reply = oauth.exchange(code, verifier, resource="https://other.example/mcp")
    assert reply.json()["error"] == "invalid_target"


def test_logs_carry_no_secrets(oauth: OAuthClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code, verifier = oauth.login()
    tokens = oauth.exchange(code, verifier).json()
    refreshed = oauth.refresh(tokens["refresh_token"]).json()
    oauth.revoke(refreshed["refresh_token"])
    secrets_seen = [code, verifier, tokens["access_token"], tokens["refresh_token"], refreshed["access_token"], oauth.client_secret]
    for record in caplog.records:
        message = record.getMessage()
        for secret in secrets_seen:
            assert secret and secret not in message


def test_database_files_hold_no_secret_in_clear(app: Any, oauth: OAuthClient, settings: Any) -> None:
    code, verifier = oauth.login()
    issued = oauth.exchange(code, verifier).json()
    refreshed = oauth.refresh(issued["refresh_token"]).json()
    container = app.extensions["container"]
    (grant,) = container.grants().list_grants(oauth.client_id)
    upstream = container.upstream_token_store().get_upstream_tokens(grant.grant_id)
    assert upstream is not None and upstream.refresh_token
    secrets_issued = [
        oauth.client_secret, code, issued["access_token"], issued["refresh_token"],
        refreshed["access_token"], refreshed["refresh_token"], upstream.access_token, upstream.refresh_token,
    ]
    database = Path(settings.sqlite_path)
    stored = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
    assert oauth.client_id.encode() in stored  # what is not secret is there in clear
    for secret in secrets_issued:
        assert secret and secret.encode() not in stored
