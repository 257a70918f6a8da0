"""Generic OIDC interop (issue 11 §1) against `responses` payloads shaped like panva's
oidc-provider with its default settings: profile and email claims only from the userinfo
endpoint (OIDC Core 1.0 §5.3, §5.4; its ``sub`` must equal the ID token's, §5.3.2), and
``offline_access`` honoured only with ``prompt=consent`` (§11)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from mcp_oauth_bridge.adapters.identity.oidc import OidcIdentityProvider
from mcp_oauth_bridge.domain.access_policy import parse_required_claims
from mcp_oauth_bridge.domain.model import UpstreamTokens
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from tests.fakes import FixedClock

from .idp_fixtures import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    CODE,
    CODE_VERIFIER,
    NONCE,
    REDIRECT_URI,
    SigningKey,
    calls_to,
    sign_id_token,
    signing_key,
    token_response,
)

NOW = 1_800_000_000
ISSUER = "https://op.example"
USERINFO = f"{ISSUER}/me"
TOKEN = f"{ISSUER}/token"
SUBJECT = "23121d3c-84df-44ac-b458-3d63a9a05497"
USERINFO_BODY = {"sub": SUBJECT, "email": "alice@example.com", "email_verified": True, "name": "Alice", "groups": ["mcp-users"]}


def discovery() -> dict[str, Any]:
    """oidc-provider's document with default features (its endpoint paths: /auth, /token, /me, /jwks)."""
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": TOKEN,
        "jwks_uri": f"{ISSUER}/jwks",
        "userinfo_endpoint": USERINFO,
        "end_session_endpoint": f"{ISSUER}/session/end",
        "scopes_supported": ["openid", "offline_access", "address", "email", "phone", "profile"],
        "claims_supported": ["sub", "email", "email_verified", "name", "given_name", "family_name"],
        "grant_types_supported": ["implicit", "authorization_code", "refresh_token"],
        "response_types_supported": ["code", "id_token", "code id_token", "none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_jwt", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
    }


def id_token_claims(*, nonce: str | None = NONCE) -> dict[str, Any]:
    """oidc-provider's default ID token: no profile or email claims (they are userinfo's)."""
    claims: dict[str, Any] = {
        "sub": SUBJECT,
        "at_hash": "x4q2PkPxA7H5LNGDA7aFnQ",
        "aud": CLIENT_ID,
        "exp": NOW + 3600,
        "iat": NOW,
        "iss": ISSUER,
        "auth_time": NOW - 5,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    return claims


@pytest.fixture
def key(mock: responses.RequestsMock) -> SigningKey:
    key = signing_key("panva", kid="r1LkbBo3925Rb2ZFFrKyU3MVex9T2817Kx0vbi6i_Kc")
    mock.get(f"{ISSUER}/.well-known/openid-configuration", json=discovery())
    mock.get(f"{ISSUER}/jwks", json={"keys": [key.public_jwk(alg="RS256", use="sig")]})
    return key


def provider(**overrides: Any) -> OidcIdentityProvider:
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "clock": FixedClock(NOW),
        "scopes": ("openid", "profile", "email", "offline_access"),
        "session": requests.Session(),
    }
    settings.update(overrides)
    return OidcIdentityProvider(**settings)


def answer_login(mock: responses.RequestsMock, key: SigningKey) -> None:
    mock.post(TOKEN, json=token_response(id_token=sign_id_token(id_token_claims(), key), scope="openid profile email offline_access"))


def login(idp: OidcIdentityProvider) -> Any:
    return idp.exchange_code(code=CODE, code_verifier=CODE_VERIFIER, nonce=NONCE).identity


def test_missing_profile_and_email_claims_are_read_from_userinfo(mock: responses.RequestsMock, key: SigningKey) -> None:
    answer_login(mock, key)
    mock.get(USERINFO, json=USERINFO_BODY)
    identity = login(provider())
    assert identity.subject == SUBJECT
    assert identity.claims == {"email": "alice@example.com", "name": "Alice"}
    (call,) = calls_to(mock, USERINFO)
    assert call.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    # The policy sees userinfo's claims too.
    assert parse_required_claims("groups=mcp-users,email_verified=true").evaluate(identity.policy_claims).allowed


def test_userinfo_for_another_subject_is_not_used(mock: responses.RequestsMock, key: SigningKey) -> None:
    answer_login(mock, key)
    mock.get(USERINFO, json={**USERINFO_BODY, "sub": "someone-else"})
    # Display claims only: the sign-in goes on with the ID token's claims.
    identity = login(provider())
    assert identity.claims == {}
    # Claims the policy needs: the sign-in fails.
    answer_login(mock, key)
    with pytest.raises(UpstreamIdentityError, match="sub does not match") as raised:
        login(provider(policy_claims=("groups",)))
    assert not raised.value.temporary


def test_an_unavailable_userinfo_endpoint_fails_only_when_the_policy_needs_it(mock: responses.RequestsMock, key: SigningKey) -> None:
    answer_login(mock, key)
    mock.get(USERINFO, json={"error": "server_error"}, status=503)
    assert login(provider()).subject == SUBJECT
    with pytest.raises(UpstreamIdentityError) as raised:
        login(provider(policy_claims=("groups",)))
    assert raised.value.temporary


def test_claims_already_in_the_id_token_need_no_userinfo(mock: responses.RequestsMock, key: SigningKey) -> None:
    claims = {**id_token_claims(), "email": "a@example.com", "name": "A", "preferred_username": "a"}
    mock.post(TOKEN, json=token_response(id_token=sign_id_token(claims, key)))
    assert login(provider()).claims == {"preferred_username": "a", "email": "a@example.com", "name": "A"}
    assert calls_to(mock, USERINFO) == []


def test_after_a_refresh_without_an_id_token_the_claims_come_from_userinfo(mock: responses.RequestsMock, key: SigningKey) -> None:
    mock.get(USERINFO, json=USERINFO_BODY)
    identity = provider().identity_after_refresh(UpstreamTokens(access_token="fresh-at", expires_at=NOW + 3600))
    assert identity.subject == SUBJECT
    assert identity.policy_claims["groups"] == ["mcp-users"]
    # One userinfo request: its answer is not completed from userinfo a second time.
    (call,) = calls_to(mock, USERINFO)
    assert call.request.headers["Authorization"] == "Bearer fresh-at"


def test_after_a_refresh_with_an_id_token_it_is_validated_and_completed(mock: responses.RequestsMock, key: SigningKey) -> None:
    mock.get(USERINFO, json=USERINFO_BODY)
    tokens = UpstreamTokens(access_token="fresh-at", expires_at=NOW + 3600, id_token=sign_id_token(id_token_claims(nonce=None), key))
    identity = provider(policy_claims=("groups",)).identity_after_refresh(tokens)
    assert identity.policy_claims["groups"] == ["mcp-users"]
    forged = UpstreamTokens(access_token="fresh-at", expires_at=NOW + 3600, id_token=sign_id_token(id_token_claims(), signing_key("other")))
    with pytest.raises(UpstreamIdentityError):
        provider().identity_after_refresh(forged)


def test_a_revoked_access_token_at_userinfo_is_not_temporary(mock: responses.RequestsMock, key: SigningKey) -> None:
    mock.get(USERINFO, json={"error": "invalid_token"}, status=401)
    with pytest.raises(UpstreamIdentityError) as raised:
        provider().identity_after_refresh(UpstreamTokens(access_token="fresh-at", expires_at=NOW + 3600))
    assert not raised.value.temporary


def _authorization_query(idp: OidcIdentityProvider) -> dict[str, list[str]]:
    return parse_qs(urlsplit(idp.authorization_url(state="s", nonce="n", code_challenge="c")).query)


@pytest.mark.parametrize(
    "mode, scopes, expected",
    [
        ("auto", ("openid", "email", "offline_access"), ["consent"]),
        ("auto", ("openid", "email"), None),
        ("always", ("openid",), ["consent"]),
        ("never", ("openid", "offline_access"), None),
    ],
)
def test_prompt_consent_goes_with_offline_access(key: SigningKey, mode: str, scopes: tuple[str, ...], expected: list[str] | None) -> None:
    assert _authorization_query(provider(prompt_consent=mode, scopes=scopes)).get("prompt") == expected


def test_an_operator_prompt_wins(key: SigningKey) -> None:
    idp = provider(prompt_consent="auto", authorization_params={"prompt": "login consent"})
    assert _authorization_query(idp)["prompt"] == ["login consent"]


def test_an_unknown_prompt_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt_consent"):
        provider(prompt_consent="sometimes")
