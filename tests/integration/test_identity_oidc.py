"""The generic OpenID Connect adapter against `responses` doubles of Google, Keycloak, Okta and
Auth0: discovery, authorize URL, code exchange, ID-token validation (one test per rule), refresh
and error mapping, with no secret in any message."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from mcp_oauth_bridge.adapters.identity.oidc import JWKS_MAX_AGE, OidcIdentityProvider
from mcp_oauth_bridge.domain.ports import IdentityProvider, UpstreamIdentityError
from tests.fakes import FixedClock

from .idp_fixtures import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    CODE,
    CODE_VERIFIER,
    NONCE,
    REDIRECT_URI,
    REFRESH_TOKEN,
    ROTATED_REFRESH_TOKEN,
    ClaimsFactory,
    SigningKey,
    auth0_claims,
    auth0_discovery,
    auth0_jwks,
    calls_to,
    form_of,
    google_claims,
    google_discovery,
    google_jwks,
    keycloak_claims,
    keycloak_discovery,
    keycloak_jwks,
    okta_claims,
    okta_discovery,
    okta_jwks,
    sign_id_token,
    sign_with_secret,
    signing_key,
    token_response,
    unsigned_token,
)

NOW = 1_800_000_000
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@dataclass(frozen=True)
class Shape:
    issuer: str
    discovery: Callable[[], dict[str, Any]]
    jwks: Callable[..., dict[str, Any]]
    claims: ClaimsFactory
    subject: str
    shown: dict[str, str]


SHAPES = {
    "google": Shape(
        "https://accounts.google.com",
        google_discovery,
        google_jwks,
        google_claims,
        "110169484474386276334",
        {"email": "alice@example.com", "name": "Alice Example"},
    ),
    "keycloak": Shape(
        "https://kc.example/realms/acme",
        keycloak_discovery,
        keycloak_jwks,
        keycloak_claims,
        "3d5f8a41-6b0e-4c7b-9f1a-2a6c0c6f9e27",
        {"preferred_username": "alice", "email": "alice@acme.example", "name": "Alice Example"},
    ),
    "okta": Shape(
        "https://acme.okta.com/oauth2/default",
        okta_discovery,
        okta_jwks,
        okta_claims,
        "00uid4BxXw6I6TV4m0g3",
        {"preferred_username": "alice@acme.example", "email": "alice@acme.example", "name": "Alice Example"},
    ),
    "auth0": Shape(
        "https://acme.auth0.com/",
        auth0_discovery,
        auth0_jwks,
        auth0_claims,
        "auth0|64f1c2d3e4b5a6978899aabb",
        {"email": "alice@acme.example", "name": "alice@acme.example"},
    ),
}
KEYCLOAK = SHAPES["keycloak"]


class Upstream:
    """One provider served by `responses`: discovery, JWKS (the responses given in turn) and a
    token endpoint."""

    def __init__(self, mock: responses.RequestsMock, shape: Shape, *, document: dict[str, Any] | None = None) -> None:
        self.mock = mock
        self.shape = shape
        self.document = document or shape.discovery()
        self.discovery_url = shape.issuer.rstrip("/") + "/.well-known/openid-configuration"
        mock.get(self.discovery_url, json=self.document)

    @property
    def token_endpoint(self) -> str:
        return str(self.document["token_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.document["jwks_uri"])

    def publish(self, *keys: SigningKey, **kwargs: Any) -> None:
        self.mock.get(self.jwks_uri, json=self.shape.jwks(*keys, **kwargs))

    def answer(self, body: dict[str, Any] | None = None, *, status: int = 200, **kwargs: Any) -> None:
        if body is None:
            self.mock.post(self.token_endpoint, status=status, **kwargs)
        else:
            self.mock.post(self.token_endpoint, json=body, status=status, **kwargs)

    def answer_login(self, claims: dict[str, Any], key: SigningKey, **response: Any) -> None:
        self.answer(token_response(id_token=sign_id_token(claims, key), **response))

    def token_calls(self) -> list[Any]:
        return calls_to(self.mock, self.token_endpoint)

    def jwks_calls(self) -> list[Any]:
        return calls_to(self.mock, self.jwks_uri)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def key() -> SigningKey:
    return signing_key("primary")


@pytest.fixture
def keycloak(mock: responses.RequestsMock, key: SigningKey) -> Upstream:
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key)
    return upstream


def provider_for(shape: Shape, clock: FixedClock, **overrides: Any) -> OidcIdentityProvider:
    settings: dict[str, Any] = {
        "issuer": shape.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "clock": clock,
        "session": requests.Session(),
    }
    settings.update(overrides)
    return OidcIdentityProvider(**settings)


def login(provider: OidcIdentityProvider, *, nonce: str = NONCE) -> Any:
    return provider.exchange_code(code=CODE, code_verifier=CODE_VERIFIER, nonce=nonce)


def rejected(provider: OidcIdentityProvider, *, nonce: str = NONCE) -> UpstreamIdentityError:
    with pytest.raises(UpstreamIdentityError) as caught:
        login(provider, nonce=nonce)
    assert_no_secrets(caught.value)
    return caught.value


def assert_invalid_id_token(exc: UpstreamIdentityError, reason: str) -> None:
    assert exc.temporary is False
    assert exc.upstream_error == "invalid_id_token"
    assert reason in str(exc)


SECRETS = (CLIENT_SECRET, CODE, CODE_VERIFIER, NONCE, ACCESS_TOKEN, REFRESH_TOKEN, ROTATED_REFRESH_TOKEN)


def assert_no_secrets(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    for secret in SECRETS:
        assert secret not in text
    # `raise ... from None`: no chained exception carries a request body or URL with secrets.
    assert exc.__cause__ is None


# -- the port -----------------------------------------------------------------------------------


def test_the_adapter_implements_the_identity_provider_port(clock: FixedClock) -> None:
    provider = provider_for(KEYCLOAK, clock)
    assert isinstance(provider, IdentityProvider)
    assert provider.name == "oidc"


# -- discovery and login with each provider's shapes ---------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_login_with_each_providers_discovery_jwks_and_token_shapes(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey, name: str
) -> None:
    shape = SHAPES[name]
    upstream = Upstream(mock, shape)
    upstream.publish(key)
    upstream.answer_login(shape.claims(NOW), key, scope="openid profile email offline_access")
    provider = provider_for(shape, clock)

    result = login(provider)

    assert result.identity.subject == shape.subject
    assert dict(result.identity.claims) == shape.shown
    assert result.tokens.access_token == ACCESS_TOKEN
    assert result.tokens.refresh_token == REFRESH_TOKEN
    assert result.tokens.expires_at == NOW + 3599
    assert result.tokens.scope == "openid profile email offline_access"
    assert result.tokens.id_token is not None
    [call] = upstream.token_calls()
    assert form_of(call) == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": CODE_VERIFIER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert "Authorization" not in call.request.headers


def test_discovery_url_drops_the_issuers_trailing_slash(clock: FixedClock) -> None:
    # OIDC Discovery §4: Auth0's issuer "https://acme.auth0.com/" is discovered without "//".
    provider = provider_for(SHAPES["auth0"], clock)
    assert provider.discovery_url == "https://acme.auth0.com/.well-known/openid-configuration"


def test_auth0_issuer_is_compared_exactly_as_discovered(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    shape = SHAPES["auth0"]
    upstream = Upstream(mock, shape)
    upstream.publish(key)
    upstream.answer_login({**shape.claims(NOW), "iss": "https://acme.auth0.com"}, key)
    exc = rejected(provider_for(shape, clock))
    assert_invalid_id_token(exc, "iss 'https://acme.auth0.com' is not the provider's issuer 'https://acme.auth0.com/'")


def test_discovery_and_keys_are_fetched_once_then_cached(
    keycloak: Upstream, mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    provider = provider_for(KEYCLOAK, clock)
    assert not mock.calls  # lazy: nothing is fetched at construction
    for _ in range(3):
        keycloak.answer_login(KEYCLOAK.claims(NOW), key)
        provider.authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
        login(provider)
    assert len(calls_to(mock, keycloak.discovery_url)) == 1
    assert len(keycloak.jwks_calls()) == 1


def test_keys_older_than_a_day_are_fetched_again(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    provider = provider_for(KEYCLOAK, clock)
    keycloak.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider)
    clock.advance(JWKS_MAX_AGE)
    keycloak.answer_login(KEYCLOAK.claims(clock.now()), key)
    login(provider)
    assert len(keycloak.jwks_calls()) == 2


def test_a_discovery_document_for_another_issuer_is_refused(mock: responses.RequestsMock, clock: FixedClock) -> None:
    Upstream(mock, KEYCLOAK, document=keycloak_discovery("https://kc.example/realms/other"))
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert caught.value.temporary is True
    assert "is not the configured issuer" in str(caught.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"jwks_uri": None}, "no jwks_uri"),
        ({"token_endpoint": None}, "no token_endpoint"),
        ({"authorization_endpoint": None}, "no authorization_endpoint"),
        ({"token_endpoint": "http://kc.example/token"}, "token_endpoint must use https"),
        ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "neither client_secret_post nor client_secret_basic"),
    ],
)
def test_an_unusable_discovery_document_is_refused(
    mock: responses.RequestsMock, clock: FixedClock, change: dict[str, Any], message: str
) -> None:
    document = {key: value for key, value in {**keycloak_discovery(), **change}.items() if value is not None}
    Upstream(mock, KEYCLOAK, document=document)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert caught.value.temporary is True
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 404, "body": "not found"},
        {"status": 503, "body": "unavailable"},
        {"status": 200, "body": "<html>captive portal</html>"},
        {"body": requests.ConnectTimeout("timed out")},
        {"body": requests.ConnectionError("refused")},
    ],
)
def test_discovery_failures_are_temporary_and_not_cached(
    mock: responses.RequestsMock, clock: FixedClock, failure: dict[str, Any]
) -> None:
    url = KEYCLOAK.issuer + "/.well-known/openid-configuration"
    mock.get(url, **failure)
    mock.get(url, json=keycloak_discovery())
    provider = provider_for(KEYCLOAK, clock)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider.authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert caught.value.temporary is True
    assert provider.authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE).startswith(
        "https://kc.example/realms/acme/protocol/openid-connect/auth?"
    )


# -- the authorization URL ---------------------------------------------------------------------------


def test_authorization_url_carries_exactly_the_oidc_and_pkce_parameters(keycloak: Upstream, clock: FixedClock) -> None:
    url = provider_for(KEYCLOAK, clock).authorization_url(state="opaque-state", nonce=NONCE, code_challenge=CHALLENGE)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == keycloak.document["authorization_endpoint"]
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": ["openid profile email"],
        "state": ["opaque-state"],
        "nonce": [NONCE],
        "code_challenge": [CHALLENGE],
        "code_challenge_method": ["S256"],
    }
    assert "resource" not in parse_qs(parts.query)


def test_openid_is_always_requested_first_and_scopes_are_not_repeated(keycloak: Upstream, clock: FixedClock) -> None:
    provider = provider_for(KEYCLOAK, clock, scopes=("email", "offline_access", "email", "openid"))
    assert provider.scope == "openid email offline_access"
    url = provider.authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert parse_qs(urlsplit(url).query)["scope"] == ["openid email offline_access"]


def test_provider_specific_authorization_parameters_are_added(mock: responses.RequestsMock, clock: FixedClock) -> None:
    # Google issues refresh tokens only with access_type=offline (and prompt=consent to repeat it).
    Upstream(mock, SHAPES["google"])
    provider = provider_for(SHAPES["google"], clock, authorization_params={"access_type": "offline", "prompt": "consent"})
    query = parse_qs(urlsplit(provider.authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)).query)
    assert query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"]


def test_an_existing_query_on_the_authorization_endpoint_is_kept(mock: responses.RequestsMock, clock: FixedClock) -> None:
    document = {**keycloak_discovery(), "authorization_endpoint": "https://kc.example/auth?tenant=acme"}
    Upstream(mock, KEYCLOAK, document=document)
    url = provider_for(KEYCLOAK, clock).authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    query = parse_qs(urlsplit(url).query)
    assert query["tenant"] == ["acme"]
    assert query["state"] == ["s"]


@pytest.mark.parametrize("name", ["resource", "state", "code_challenge_method", "redirect_uri"])
def test_authorization_params_cannot_override_or_add_resource(clock: FixedClock, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        provider_for(KEYCLOAK, clock, authorization_params={name: "x"})


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"issuer": "http://kc.example/realms/acme"},
        {"issuer": "kc.example"},
        {"issuer": "https://kc.example/realms/acme?x=1"},
        {"issuer": "https://user:pw@kc.example/realms/acme"},
        {"redirect_uri": "http://mcp.example.com/oauth/callback"},
        {"client_secret": ""},
        {"client_id": ""},
        {"scopes": ("openid", "bad scope")},
        {"scopes": ('say"hi',)},
        {"timeout": 0},
        {"leeway": -1},
    ],
)
def test_bad_configuration_is_refused_at_construction(clock: FixedClock, overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        provider_for(KEYCLOAK, clock, **overrides)


@pytest.mark.parametrize("issuer", ["http://127.0.0.1:8080/realms/acme", "http://localhost:8080/realms/acme", "http://[::1]:8080"])
def test_plain_http_is_accepted_for_loopback_test_doubles(clock: FixedClock, issuer: str) -> None:
    assert provider_for(KEYCLOAK, clock, issuer=issuer, redirect_uri="http://127.0.0.1:8000/oauth/callback").issuer == issuer


# -- client authentication at the token endpoint ---------------------------------------------------


def test_client_secret_basic_when_it_is_the_only_advertised_method(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    document = {**keycloak_discovery(), "token_endpoint_auth_methods_supported": ["client_secret_basic"]}
    upstream = Upstream(mock, KEYCLOAK, document=document)
    upstream.publish(key)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider_for(KEYCLOAK, clock))
    [call] = upstream.token_calls()
    scheme, _, encoded = call.request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    # RFC 6749 §2.3.1: form-urlencoded before Base64 ("~" stays, nothing else needs escaping here).
    assert base64.b64decode(encoded).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    assert "client_secret" not in form_of(call)
    assert "client_id" not in form_of(call)


def test_client_secret_basic_is_form_urlencoded(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    document = {**keycloak_discovery(), "token_endpoint_auth_methods_supported": ["client_secret_basic"]}
    upstream = Upstream(mock, KEYCLOAK, document=document)
    upstream.publish(key)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider_for(KEYCLOAK, clock, client_secret="a:b+c/d"))
    encoded = upstream.token_calls()[0].request.headers["Authorization"].split(" ", 1)[1]
    assert base64.b64decode(encoded).decode() == f"{CLIENT_ID}:a%3Ab%2Bc%2Fd"


def test_client_secret_basic_is_the_default_when_no_method_is_advertised(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    # OIDC Discovery §3: token_endpoint_auth_methods_supported defaults to client_secret_basic.
    document = {k: v for k, v in keycloak_discovery().items() if k != "token_endpoint_auth_methods_supported"}
    upstream = Upstream(mock, KEYCLOAK, document=document)
    upstream.publish(key)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider_for(KEYCLOAK, clock))
    assert upstream.token_calls()[0].request.headers["Authorization"].startswith("Basic ")


# -- ID-token validation: one test per rule ----------------------------------------------------------


def test_a_token_signed_with_another_key_under_the_same_kid_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), signing_key("attacker"), kid=key.kid)))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "bad signature")


def test_a_token_with_a_tampered_payload_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    genuine = sign_id_token(KEYCLOAK.claims(NOW), key)
    forged = sign_id_token({**KEYCLOAK.claims(NOW), "sub": "admin"}, key)
    header, _, signature = genuine.split(".")
    keycloak.answer(token_response(id_token=f"{header}.{forged.split('.')[1]}.{signature}"))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "bad signature")


def test_alg_none_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer(token_response(id_token=unsigned_token(KEYCLOAK.claims(NOW), kid=key.kid)))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "unsupported alg 'none'")


def test_hs256_signed_with_the_client_secret_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer(token_response(id_token=sign_with_secret(KEYCLOAK.claims(NOW), CLIENT_SECRET, kid=key.kid)))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "unsupported alg 'HS256'")


def test_a_key_published_for_another_alg_is_not_used(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    upstream = Upstream(mock, KEYCLOAK)
    upstream.mock.get(upstream.jwks_uri, json={"keys": [key.public_jwk(alg="RS512", use="sig")]})
    upstream.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), key, alg="RS256")))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "no RS256 key with kid")


def test_a_ps256_signature_is_accepted_with_a_key_that_names_no_alg(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    upstream = Upstream(mock, KEYCLOAK)
    mock.get(upstream.jwks_uri, json={"keys": [key.public_jwk(use="sig")]})
    upstream.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), key, alg="PS256")))
    assert login(provider_for(KEYCLOAK, clock)).identity.subject == KEYCLOAK.subject


def test_the_encryption_key_in_keycloaks_jwks_is_never_used_to_verify(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    enc = signing_key("keycloak-enc")
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key, encryption_key=enc)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    provider = provider_for(KEYCLOAK, clock)
    login(provider)
    upstream.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), enc)))
    assert_invalid_id_token(rejected(provider), f"no RS256 key with kid '{enc.kid}'")


def test_wrong_issuer_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "iss": "https://kc.example/realms/other"}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "iss 'https://kc.example/realms/other'")


def test_missing_issuer_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    claims = {k: v for k, v in KEYCLOAK.claims(NOW).items() if k != "iss"}
    keycloak.answer_login(claims, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "iss None")


def test_googles_legacy_issuer_form_is_accepted_for_google_only(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    google = Upstream(mock, SHAPES["google"])
    google.publish(key)
    google.answer_login({**google_claims(NOW), "iss": "accounts.google.com"}, key)
    assert login(provider_for(SHAPES["google"], clock)).identity.subject == "110169484474386276334"

    keycloak = Upstream(mock, KEYCLOAK)
    keycloak.publish(key)
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "iss": "kc.example/realms/acme"}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "iss 'kc.example/realms/acme'")


def test_wrong_audience_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "aud": "another-client", "azp": "another-client"}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "aud 'another-client' does not contain")


def test_several_audiences_need_azp(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    claims = {k: v for k, v in KEYCLOAK.claims(NOW).items() if k != "azp"}
    keycloak.answer_login({**claims, "aud": [CLIENT_ID, "account"]}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "several audiences but no azp")


def test_azp_must_be_this_client(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "aud": [CLIENT_ID, "account"], "azp": "account"}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "azp 'account' is not this client")


def test_several_audiences_with_azp_of_this_client_are_accepted(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "aud": ["account", CLIENT_ID], "azp": CLIENT_ID}, key)
    assert login(provider_for(KEYCLOAK, clock)).identity.subject == KEYCLOAK.subject


def test_wrong_nonce_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login(KEYCLOAK.claims(NOW, nonce="mob_n_someone-elses-nonce"), key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "nonce does not match")


def test_missing_nonce_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    claims = {k: v for k, v in KEYCLOAK.claims(NOW).items() if k != "nonce"}
    keycloak.answer_login(claims, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "nonce claim missing")


def test_an_expired_token_is_rejected_beyond_the_leeway(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    claims = {**KEYCLOAK.claims(NOW - 1000), "exp": NOW - 121}
    keycloak.answer_login(claims, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "expired (exp is 121 s in the past)")


def test_a_token_expired_within_the_leeway_is_accepted(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW - 1000), "exp": NOW - 119}, key)
    assert login(provider_for(KEYCLOAK, clock)).identity.subject == KEYCLOAK.subject


def test_the_leeway_is_configurable(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW - 1000), "exp": NOW - 10}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock, leeway=5)), "expired")


def test_iat_in_the_future_beyond_the_leeway_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login(KEYCLOAK.claims(NOW + 121), key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "iat is 121 s in the future")


def test_iat_in_the_future_within_the_leeway_is_accepted(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login(KEYCLOAK.claims(NOW + 119), key)
    assert login(provider_for(KEYCLOAK, clock)).identity.subject == KEYCLOAK.subject


def test_nbf_in_the_future_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({**KEYCLOAK.claims(NOW), "nbf": NOW + 600}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "not valid before nbf")


@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_missing_exp_or_iat_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey, claim: str) -> None:
    keycloak.answer_login({k: v for k, v in KEYCLOAK.claims(NOW).items() if k != claim}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), f"{claim} claim missing")


def test_missing_sub_is_rejected(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer_login({k: v for k, v in KEYCLOAK.claims(NOW).items() if k != "sub"}, key)
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "sub claim missing")


def test_a_token_response_without_id_token_is_rejected(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer(token_response(id_token=None))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "no id_token")


def test_a_malformed_id_token_is_rejected(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer(token_response(id_token="not-a-jwt"))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "not a compact JWS")


# -- key rotation --------------------------------------------------------------------------------------


def test_an_unknown_kid_refetches_the_keys_once_and_accepts_the_rotated_key(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    rotated = signing_key("rotated")
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key)
    upstream.publish(key, rotated)  # what the provider serves after rotating
    provider = provider_for(KEYCLOAK, clock)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider)
    assert len(upstream.jwks_calls()) == 1

    upstream.answer_login(KEYCLOAK.claims(NOW), rotated)
    assert login(provider).identity.subject == KEYCLOAK.subject
    assert len(upstream.jwks_calls()) == 2
    # The rotated key is cached from now on.
    upstream.answer_login(KEYCLOAK.claims(NOW), rotated)
    login(provider)
    assert len(upstream.jwks_calls()) == 2


def test_a_kid_still_unknown_after_the_one_refetch_is_rejected(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey
) -> None:
    unpublished = signing_key("unpublished")
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key)
    provider = provider_for(KEYCLOAK, clock)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider)

    upstream.answer_login(KEYCLOAK.claims(NOW), unpublished)
    exc = rejected(provider)
    assert_invalid_id_token(exc, f"no RS256 key with kid '{unpublished.kid}'")
    # One refetch within the exchange, not a loop.
    assert len(upstream.jwks_calls()) == 2


def test_a_fresh_jwks_is_not_fetched_twice_for_one_unknown_kid(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key)
    upstream.answer_login(KEYCLOAK.claims(NOW), signing_key("unpublished"))
    rejected(provider_for(KEYCLOAK, clock))
    assert len(upstream.jwks_calls()) == 1


def test_without_a_kid_the_only_key_is_used(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    keycloak.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), key, kid=None)))
    assert login(provider_for(KEYCLOAK, clock)).identity.subject == KEYCLOAK.subject


def test_without_a_kid_several_keys_are_ambiguous(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    # OIDC Core §10.1: with several keys, the kid MUST be present.
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key, signing_key("rotated"))
    upstream.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), key, kid=None)))
    assert_invalid_id_token(rejected(provider_for(KEYCLOAK, clock)), "kid None")


@pytest.mark.parametrize("failure", [{"status": 503, "body": "down"}, {"body": requests.ReadTimeout("slow")}])
def test_an_unreachable_jwks_is_temporary(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey, failure: dict[str, Any]) -> None:
    upstream = Upstream(mock, KEYCLOAK)
    mock.get(upstream.jwks_uri, **failure)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    exc = rejected(provider_for(KEYCLOAK, clock))
    assert exc.temporary is True


def test_a_jwks_without_signing_keys_is_temporary(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    upstream = Upstream(mock, KEYCLOAK)
    mock.get(upstream.jwks_uri, json={"keys": [key.public_jwk(use="enc", alg="RSA-OAEP")]})
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    exc = rejected(provider_for(KEYCLOAK, clock))
    assert exc.temporary is True
    assert "no usable signing keys" in str(exc)


# -- token endpoint errors on the code exchange ----------------------------------------------------------


def test_invalid_grant_on_the_code_exchange_is_permanent(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer({"error": "invalid_grant", "error_description": "Code not valid"}, status=400)
    exc = rejected(provider_for(KEYCLOAK, clock))
    assert (exc.temporary, exc.upstream_error) == (False, "invalid_grant")
    assert "Code not valid" in str(exc)


def test_an_upstream_that_echoes_the_code_and_secret_is_redacted(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer(
        {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET} for code {CODE} / {CODE_VERIFIER}"},
        status=401,
    )
    exc = rejected(provider_for(KEYCLOAK, clock))
    assert (exc.temporary, exc.upstream_error) == (False, "invalid_client")
    assert "[redacted]" in str(exc)


# -- refresh -------------------------------------------------------------------------------------------------


def test_refresh_sends_the_refresh_grant_with_the_same_scopes_and_returns_the_rotated_token(
    keycloak: Upstream, clock: FixedClock
) -> None:
    keycloak.answer(token_response(id_token=None, refresh_token=ROTATED_REFRESH_TOKEN, expires_in=300))
    provider = provider_for(KEYCLOAK, clock, scopes=("openid", "profile", "offline_access"))
    tokens = provider.refresh(REFRESH_TOKEN)
    assert tokens.access_token == ACCESS_TOKEN
    assert tokens.refresh_token == ROTATED_REFRESH_TOKEN
    assert tokens.expires_at == NOW + 300
    assert tokens.id_token is None
    [call] = keycloak.token_calls()
    assert form_of(call) == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_TOKEN,
        "scope": "openid profile offline_access",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_refresh_keeps_the_old_refresh_token_when_none_is_returned(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer(token_response(id_token=None, refresh_token=None, scope=None))
    tokens = provider_for(KEYCLOAK, clock).refresh(REFRESH_TOKEN)
    assert tokens.refresh_token == REFRESH_TOKEN
    # RFC 6749 §5.1: no scope in the response means the requested one.
    assert tokens.scope == "openid profile email"


def test_expires_in_as_a_string_or_missing(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": "1800"})
    keycloak.answer({"access_token": ACCESS_TOKEN, "token_type": "Bearer"})
    provider = provider_for(KEYCLOAK, clock)
    assert provider.refresh(REFRESH_TOKEN).expires_at == NOW + 1800
    assert provider.refresh(REFRESH_TOKEN).expires_at == NOW + 3600


def test_a_refreshed_id_token_is_kept_only_when_valid(keycloak: Upstream, clock: FixedClock, key: SigningKey) -> None:
    # OIDC Core §12.2: no nonce in a refreshed ID token; the rest is validated as on login.
    claims = {k: v for k, v in KEYCLOAK.claims(NOW).items() if k != "nonce"}
    good = sign_id_token(claims, key)
    forged = sign_id_token(claims, signing_key("attacker"), kid=key.kid)
    keycloak.answer(token_response(id_token=good))
    keycloak.answer(token_response(id_token=forged))
    provider = provider_for(KEYCLOAK, clock)
    assert provider.refresh(REFRESH_TOKEN).id_token == good
    dropped = provider.refresh(REFRESH_TOKEN)
    assert dropped.id_token is None
    assert dropped.access_token == ACCESS_TOKEN


@pytest.mark.parametrize(
    "status, body, upstream_error",
    [
        (400, {"error": "invalid_grant", "error_description": "Token is not active"}, "invalid_grant"),
        (400, {"error": "invalid_grant", "error_description": "Session not active"}, "invalid_grant"),
        (401, {"error": "invalid_client", "error_description": "Invalid client credentials"}, "invalid_client"),
        (400, {"error": "invalid_scope"}, "invalid_scope"),
        (400, {"error": "unauthorized_client"}, "unauthorized_client"),
        (200, {"error": "invalid_grant"}, "invalid_grant"),
    ],
)
def test_oauth_errors_on_refresh_end_the_upstream_session(
    keycloak: Upstream, clock: FixedClock, status: int, body: dict[str, Any], upstream_error: str
) -> None:
    keycloak.answer(body, status=status)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).refresh(REFRESH_TOKEN)
    assert caught.value.temporary is False
    assert caught.value.upstream_error == upstream_error
    assert_no_secrets(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 503, "body": "<html>Service Unavailable</html>"},
        {"status": 500, "json": {"error": "server_error"}},
        {"status": 502, "json": {"error": "invalid_grant"}},
        {"status": 400, "json": {"error": "temporarily_unavailable", "error_description": "try later"}},
        {"status": 429, "json": {"error": "slow_down"}},
        {"status": 400, "body": "<html>Bad Request</html>"},
        {"status": 200, "json": {"token_type": "Bearer"}},
        {"body": requests.ReadTimeout("read timed out")},
        {"body": requests.ConnectTimeout("connect timed out")},
        {"body": requests.ConnectionError("connection refused")},
    ],
)
def test_outages_on_refresh_are_temporary(keycloak: Upstream, clock: FixedClock, answer: dict[str, Any]) -> None:
    keycloak.mock.post(keycloak.token_endpoint, **answer)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).refresh(REFRESH_TOKEN)
    assert caught.value.temporary is True
    assert_no_secrets(caught.value)


def test_an_upstream_that_echoes_the_refresh_token_is_redacted(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer({"error": "invalid_grant", "error_description": f"refresh token {REFRESH_TOKEN} revoked"}, status=400)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).refresh(REFRESH_TOKEN)
    assert_no_secrets(caught.value)
    assert "refresh token [redacted] revoked" in str(caught.value)


def test_control_characters_in_upstream_text_are_flattened(keycloak: Upstream, clock: FixedClock) -> None:
    keycloak.answer({"error": "invalid_grant", "error_description": "bad\r\nFAKE LOG LINE" + "x" * 1000}, status=400)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(KEYCLOAK, clock).refresh(REFRESH_TOKEN)
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)
    assert len(str(caught.value)) < 400


def test_nothing_secret_is_logged(
    mock: responses.RequestsMock, clock: FixedClock, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream = Upstream(mock, KEYCLOAK)
    upstream.publish(key)
    upstream.publish(key, signing_key("rotated"))
    provider = provider_for(KEYCLOAK, clock)
    upstream.answer_login(KEYCLOAK.claims(NOW), key)
    login(provider)
    upstream.answer_login(KEYCLOAK.claims(NOW), signing_key("rotated"))
    login(provider)
    upstream.answer(token_response(id_token=sign_id_token(KEYCLOAK.claims(NOW), signing_key("attacker"), kid=key.kid)))
    provider.refresh(REFRESH_TOKEN)
    assert caplog.records
    for secret in SECRETS:
        assert secret not in caplog.text
