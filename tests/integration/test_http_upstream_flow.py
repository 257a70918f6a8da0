"""The whole authorization flow through Flask with a real identity provider adapter selected by
configuration alone (IDP_PROVIDER=azure or oidc); the provider's HTTP is played by `responses`."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import responses

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from . import idp_fixtures as idp
from .conftest import PUBLIC_URL, environment_for
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair

ENTRA = "https://login.microsoftonline.com"
KEYCLOAK = "https://kc.example/realms/acme"


def entra_provider(mock: responses.RequestsMock, key: idp.SigningKey) -> tuple[dict[str, str], Callable[[str], dict[str, Any]], str]:
    discovery = idp.entra_discovery(tenant_path=idp.ENTRA_TENANT, issuer_tenant=idp.ENTRA_TENANT)
    mock.get(f"{ENTRA}/{idp.ENTRA_TENANT}/v2.0/.well-known/openid-configuration", json=discovery)
    mock.get(discovery["jwks_uri"], json=idp.entra_jwks(key))
    env = {
        "IDP_PROVIDER": "azure",
        "AZURE_TENANT_ID": idp.ENTRA_TENANT,
        "AZURE_CLIENT_ID": idp.CLIENT_ID,
        "AZURE_CLIENT_SECRET": idp.CLIENT_SECRET,
    }
    return env, lambda nonce: idp.entra_claims(int(time.time()), nonce=nonce), discovery["token_endpoint"]


def keycloak_provider(mock: responses.RequestsMock, key: idp.SigningKey) -> tuple[dict[str, str], Callable[[str], dict[str, Any]], str]:
    discovery = idp.keycloak_discovery(KEYCLOAK)
    mock.get(f"{KEYCLOAK}/.well-known/openid-configuration", json=discovery)
    mock.get(discovery["jwks_uri"], json=idp.keycloak_jwks(key))
    env = {"IDP_PROVIDER": "oidc", "OIDC_ISSUER": KEYCLOAK, "OIDC_CLIENT_ID": idp.CLIENT_ID, "OIDC_CLIENT_SECRET": idp.CLIENT_SECRET}
    return env, lambda nonce: idp.keycloak_claims(int(time.time()), nonce=nonce), discovery["token_endpoint"]


@pytest.mark.parametrize("provider", [entra_provider, keycloak_provider], ids=["azure", "oidc"])
def test_flow_with_a_real_provider_adapter(tmp_path: Path, provider: Any) -> None:
    key = idp.signing_key("upstream")
    with responses.RequestsMock() as mock:
        env, claims_for, token_endpoint = provider(mock, key)
        sent: dict[str, Any] = {}

        def token_endpoint_answer(request: Any) -> tuple[int, dict[str, str], str]:
            form = {k: v[0] for k, v in parse_qs(request.body).items()}
            sent.update(form)
            id_token = idp.sign_id_token(claims_for(sent["nonce"]), key)
            return 200, {}, json.dumps(idp.token_response(id_token=id_token, scope="openid profile email"))

        mock.add_callback(responses.POST, token_endpoint, callback=token_endpoint_answer)
        app = create_app(load_settings(environment_for(tmp_path, **env), dotenv_path=None))
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        oauth.register()
        verifier, challenge = pkce_pair()
        to_idp = oauth.consent(oauth.authorize(challenge, state="s1", resource=PUBLIC_URL + "/mcp"))
        assert to_idp.status == 303
        upstream = {k: v[0] for k, v in parse_qs(urlsplit(to_idp.location).query).items()}
        # Entra rejects `resource` (AADSTS901002): never forwarded upstream.
        assert "resource" not in upstream
        assert upstream["redirect_uri"] == PUBLIC_URL + "/oauth/callback"
        assert upstream["code_challenge_method"] == "S256"
        sent["nonce"] = upstream["nonce"]

        back = oauth.http.get(f"/oauth/callback?code={idp.CODE}&state={upstream['state']}")
        assert back.status == 302, back.text
        query = back.query()
        assert query["state"] == "s1" and query["iss"] == PUBLIC_URL
        assert sent["code"] == idp.CODE and sent["redirect_uri"] == PUBLIC_URL + "/oauth/callback"
        tokens = oauth.exchange(query["code"], verifier).json()
        info = oauth.introspect(tokens["access_token"])
        assert info["active"] is True
        assert info["username"] == claims_for(sent["nonce"])["preferred_username"]
        container = app.extensions["container"]
        (grant,) = container.grants().list_grants(oauth.client_id)
        upstream_tokens = container.upstream_token_store().get_upstream_tokens(grant.grant_id)
        assert upstream_tokens is not None and upstream_tokens.access_token == idp.ACCESS_TOKEN


@pytest.mark.parametrize(
    "overrides, variable",
    [
        ({"IDP_PROVIDER": "azure"}, "AZURE_TENANT_ID"),
        ({"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "not a tenant!"}, "AZURE_TENANT_ID"),
        ({"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "common"}, "AZURE_CLIENT_ID"),
        ({"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "common", "AZURE_CLIENT_ID": "my-app"}, "AZURE_CLIENT_ID"),
        ({"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "common", "AZURE_CLIENT_ID": idp.CLIENT_ID}, "AZURE_CLIENT_SECRET"),
        (
            {"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "common", "AZURE_CLIENT_ID": idp.CLIENT_ID,
             "AZURE_CLIENT_SECRET": "x", "AZURE_AUTHORITY_HOST": "http://login.example.com"},
            "AZURE_AUTHORITY_HOST",
        ),
        (
            {"IDP_PROVIDER": "azure", "AZURE_TENANT_ID": "common", "AZURE_CLIENT_ID": idp.CLIENT_ID,
             "AZURE_CLIENT_SECRET": "x", "AZURE_ALLOWED_TENANTS": "contoso"},
            "AZURE_ALLOWED_TENANTS",
        ),
        ({"IDP_PROVIDER": "oidc"}, "OIDC_ISSUER"),
        ({"IDP_PROVIDER": "oidc", "OIDC_ISSUER": "http://idp.example.com"}, "OIDC_ISSUER"),
        ({"IDP_PROVIDER": "oidc", "OIDC_ISSUER": KEYCLOAK}, "OIDC_CLIENT_ID"),
    ],
)
def test_real_provider_configuration_errors_name_the_variable(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    from mcp_oauth_bridge.entrypoints.config import ConfigError

    with pytest.raises(ConfigError, match=variable):
        load_settings(environment_for(tmp_path, **overrides), dotenv_path=None)


def test_unreachable_provider_at_consent_shows_a_page(tmp_path: Path) -> None:
    with responses.RequestsMock() as mock:
        mock.get(f"{KEYCLOAK}/.well-known/openid-configuration", status=503)
        env = {"IDP_PROVIDER": "oidc", "OIDC_ISSUER": KEYCLOAK, "OIDC_CLIENT_ID": idp.CLIENT_ID, "OIDC_CLIENT_SECRET": idp.CLIENT_SECRET}
        app = create_app(load_settings(environment_for(tmp_path, **env), dotenv_path=None))
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        oauth.register()
        reply = oauth.consent(oauth.authorize(pkce_pair()[1]))
        assert reply.status == 503
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "sign-in service is unavailable" in reply.text
        assert idp.CLIENT_SECRET not in reply.text


def test_mail_toolset_asks_entra_for_graph_mail_read(tmp_path: Path) -> None:
    key = idp.signing_key("upstream")
    with responses.RequestsMock() as mock:
        env, _, _ = entra_provider(mock, key)
        mock.assert_all_requests_are_fired = False
        settings = load_settings(environment_for(tmp_path, TOOLSETS="identity,mail", **env), dotenv_path=None)
        app = create_app(settings)
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        oauth.register()
        metadata = oauth.http.get("/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["scopes_supported"] == ["User.Read", "Mail.Read"]
        to_idp = oauth.consent(oauth.authorize(pkce_pair()[1]))
        scope = parse_qs(urlsplit(to_idp.location).query)["scope"][0].split()
        assert scope == ["openid", "profile", "email", "offline_access", "https://graph.microsoft.com/Mail.Read"]


def test_entra_error_at_the_callback_is_a_page_saying_what_to_fix(tmp_path: Path) -> None:
    key = idp.signing_key("upstream")
    with responses.RequestsMock() as mock:
        env, _, _ = entra_provider(mock, key)
        mock.assert_all_requests_are_fired = False
        app = create_app(load_settings(environment_for(tmp_path, **env), dotenv_path=None))
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        oauth.register()
        to_idp = oauth.consent(oauth.authorize(pkce_pair()[1], state="s9"))
        state = parse_qs(urlsplit(to_idp.location).query)["state"][0]
        description = "AADSTS65001: The user or administrator has not consented. <script>alert(1)</script>"
        page = oauth.http.get(
            "/oauth/callback?" + urlencode({"error": "consent_required", "error_description": description, "state": state})
        )
        assert page.status == 400
        assert page.headers["Content-Type"].startswith("text/html")
        assert "Location" not in page.headers
        assert "admin consent" in page.text and "AADSTS65001" in page.text
        assert "<script>" not in page.text and "has not consented" not in page.text
        back = re.search(r'<a href="([^"]+)">Return to the application</a>', page.text)
        assert back is not None
        target = html.unescape(back.group(1))
        assert target.startswith(oauth.redirect_uri + "?")
        query = parse_qs(urlsplit(target).query)
        assert query["error"] == ["server_error"] and query["state"] == ["s9"] and query["iss"] == [PUBLIC_URL]
