"""The Entra ID adapter against `responses` doubles shaped like Entra's v2.0 endpoints: tenant
forms, scopes, single- and multi-tenant issuer validation, tid/oid subject, AADSTS errors, refresh,
and the callback error sentences."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from mcp_oauth_bridge.adapters.identity.entra import (
    EntraIdentityProvider,
    describe_upstream_error,
    entra_scopes,
)
from mcp_oauth_bridge.domain.ports import IdentityProvider, UpstreamIdentityError
from tests.fakes import FixedClock

from .idp_fixtures import (
    ACCESS_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    CODE,
    CODE_VERIFIER,
    ENTRA_OID,
    ENTRA_TENANT,
    NONCE,
    OTHER_TENANT,
    REDIRECT_URI,
    REFRESH_TOKEN,
    ROTATED_REFRESH_TOKEN,
    SigningKey,
    calls_to,
    entra_claims,
    entra_discovery,
    entra_error,
    entra_jwks,
    entra_token_response,
    form_of,
    sign_id_token,
    signing_key,
)

NOW = 1_800_000_000
HOST = "https://login.microsoftonline.com"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
GRAPH_SCOPES = "https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read"
FULL_SCOPE = f"openid profile email offline_access {GRAPH_SCOPES}"
GRANTED_SCOPE = f"email openid profile {GRAPH_SCOPES}"
SECRETS = (CLIENT_SECRET, CODE, CODE_VERIFIER, NONCE, ACCESS_TOKEN, REFRESH_TOKEN, ROTATED_REFRESH_TOKEN)


class Entra:
    """Entra ID's v2.0 endpoints for one authority (host + tenant segment) on `responses`."""

    def __init__(
        self,
        mock: responses.RequestsMock,
        *,
        tenant: str = ENTRA_TENANT,
        issuer_tenant: str | None = None,
        host: str = HOST,
    ) -> None:
        self.mock = mock
        self.host = host
        # A domain tenant is answered with endpoints and issuer under its GUID.
        segment = tenant if tenant in ("common", "organizations") else ENTRA_TENANT
        self.document = entra_discovery(host=host, tenant_path=segment, issuer_tenant=issuer_tenant or segment)
        self.discovery_url = f"{host}/{tenant}/v2.0/.well-known/openid-configuration"
        mock.get(self.discovery_url, json=self.document)

    @property
    def token_endpoint(self) -> str:
        return str(self.document["token_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.document["jwks_uri"])

    def publish(self, *keys: SigningKey) -> None:
        self.mock.get(self.jwks_uri, json=entra_jwks(*keys, host=self.host))

    def answer(self, body: dict[str, Any], *, status: int = 200) -> None:
        self.mock.post(self.token_endpoint, json=body, status=status)

    def answer_login(self, claims: dict[str, Any], key: SigningKey) -> None:
        self.answer(entra_token_response(id_token=sign_id_token(claims, key, header={"x5t": key.x5t}), scope=GRANTED_SCOPE))

    def token_calls(self) -> list[Any]:
        return calls_to(self.mock, self.token_endpoint)

    def jwks_calls(self) -> list[Any]:
        return calls_to(self.mock, self.jwks_uri)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def key() -> SigningKey:
    return signing_key("entra")


@pytest.fixture
def entra(mock: responses.RequestsMock, key: SigningKey) -> Entra:
    upstream = Entra(mock)
    upstream.publish(key)
    return upstream


@pytest.fixture
def common(mock: responses.RequestsMock, key: SigningKey) -> Entra:
    upstream = Entra(mock, tenant="common", issuer_tenant="{tenantid}")
    upstream.publish(key)
    return upstream


def provider_for(clock: FixedClock, **overrides: Any) -> EntraIdentityProvider:
    settings: dict[str, Any] = {
        "tenant": ENTRA_TENANT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "clock": clock,
        "scopes": ("Mail.Read", "https://graph.microsoft.com/User.Read"),
        "session": requests.Session(),
    }
    settings.update(overrides)
    return EntraIdentityProvider(**settings)


def login(provider: EntraIdentityProvider) -> Any:
    return provider.exchange_code(code=CODE, code_verifier=CODE_VERIFIER, nonce=NONCE)


def assert_no_secrets(exc: BaseException) -> None:
    text = str(exc) + repr(exc)
    for secret in SECRETS:
        assert secret not in text
    assert exc.__cause__ is None


def rejected(provider: EntraIdentityProvider) -> UpstreamIdentityError:
    with pytest.raises(UpstreamIdentityError) as caught:
        login(provider)
    assert_no_secrets(caught.value)
    return caught.value


def assert_invalid_id_token(exc: UpstreamIdentityError, reason: str) -> None:
    assert (exc.temporary, exc.upstream_error) == (False, "invalid_id_token")
    assert reason in str(exc)


def test_the_adapter_implements_the_identity_provider_port(clock: FixedClock) -> None:
    provider = provider_for(clock)
    assert isinstance(provider, IdentityProvider)
    assert provider.name == "azure"


# -- authority, tenant and scopes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "tenant, host, discovery_url",
    [
        (ENTRA_TENANT, HOST, f"{HOST}/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
        ("Contoso.onmicrosoft.com", HOST, f"{HOST}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"),
        ("organizations", HOST, f"{HOST}/organizations/v2.0/.well-known/openid-configuration"),
        ("common", HOST, f"{HOST}/common/v2.0/.well-known/openid-configuration"),
        (ENTRA_TENANT, "https://login.microsoftonline.us/", f"https://login.microsoftonline.us/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
        (ENTRA_TENANT, "http://127.0.0.1:9400", f"http://127.0.0.1:9400/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
        (ENTRA_TENANT, "http://localhost:9400", f"http://localhost:9400/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
        (ENTRA_TENANT, "http://[::1]:9400", f"http://[::1]:9400/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration"),
    ],
)
def test_v2_discovery_url_from_tenant_and_authority_host(clock: FixedClock, tenant: str, host: str, discovery_url: str) -> None:
    assert provider_for(clock, tenant=tenant, authority_host=host).discovery_url == discovery_url


@pytest.mark.parametrize(
    "host",
    ["http://login.microsoftonline.com", "http://10.0.0.5:9400", "http://entra.test", "ftp://login.microsoftonline.com", "login.microsoftonline.com"],
)
def test_plain_http_authority_host_is_refused_unless_loopback(clock: FixedClock, host: str) -> None:
    with pytest.raises(ValueError, match="authority_host"):
        provider_for(clock, authority_host=host)


@pytest.mark.parametrize("tenant", ["", "contoso", "not a tenant", "../common", "common/v2.0", "72f988bf-86f1-41af-91ab"])
def test_a_malformed_tenant_is_refused(clock: FixedClock, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        provider_for(clock, tenant=tenant)


def test_allowed_tenants_must_be_tenant_ids(clock: FixedClock) -> None:
    with pytest.raises(ValueError, match="allowed_tenants"):
        provider_for(clock, tenant="common", allowed_tenants=("contoso.onmicrosoft.com",))


def test_short_graph_scopes_become_full_uris_and_oidc_scopes_stay() -> None:
    assert entra_scopes(["Mail.Read", "https://graph.microsoft.com/User.Read", "offline_access", "Mail.Read", " "]) == (
        "openid",
        "profile",
        "email",
        "offline_access",
        "https://graph.microsoft.com/Mail.Read",
        "https://graph.microsoft.com/User.Read",
    )


def test_short_scopes_use_the_sovereign_graph_resource() -> None:
    scopes = entra_scopes(["Mail.Read"], graph_resource="https://graph.microsoft.us/")
    assert scopes[-1] == "https://graph.microsoft.us/Mail.Read"


def test_scopes_of_other_apis_are_left_alone() -> None:
    assert entra_scopes(["api://6731de76-14a6-49ae-97bc-6eba6914391e/tools.read"])[-1] == (
        "api://6731de76-14a6-49ae-97bc-6eba6914391e/tools.read"
    )


def test_scopes_for_two_apis_are_refused() -> None:
    # Entra issues one access token per API (AADSTS28000).
    with pytest.raises(ValueError, match="more than one API"):
        entra_scopes(["Mail.Read", "api://6731de76-14a6-49ae-97bc-6eba6914391e/tools.read"])


def test_authorization_url_has_exactly_the_oidc_pkce_parameters_and_full_graph_scopes(entra: Entra, clock: FixedClock) -> None:
    url = provider_for(clock).authorization_url(state="opaque-state", nonce=NONCE, code_challenge=CHALLENGE)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{HOST}/{ENTRA_TENANT}/oauth2/v2.0/authorize"
    query = parse_qs(parts.query)
    assert query == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": [FULL_SCOPE],
        "state": ["opaque-state"],
        "nonce": [NONCE],
        "code_challenge": [CHALLENGE],
        "code_challenge_method": ["S256"],
    }
    # AADSTS901002: Entra's v2.0 endpoint refuses a resource parameter.
    assert "resource" not in query


def test_the_multi_tenant_authorize_endpoint_is_the_common_one(common: Entra, clock: FixedClock) -> None:
    url = provider_for(clock, tenant="common").authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert url.startswith(f"{HOST}/common/oauth2/v2.0/authorize?")


# -- single-tenant login ---------------------------------------------------------------------------------


def test_single_tenant_login_gives_a_tid_oid_subject_and_the_display_claims(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    entra.answer_login(entra_claims(NOW), key)
    result = login(provider_for(clock))
    assert result.identity.subject == f"{ENTRA_TENANT}:{ENTRA_OID}"
    assert dict(result.identity.claims) == {
        "tid": ENTRA_TENANT,
        "oid": ENTRA_OID,
        "preferred_username": "alice@contoso.onmicrosoft.com",
        # No email claim: preferred_username looks like one.
        "email": "alice@contoso.onmicrosoft.com",
        "name": "Alice Example",
    }
    assert result.tokens.access_token == ACCESS_TOKEN
    assert result.tokens.refresh_token == REFRESH_TOKEN
    assert result.tokens.expires_at == NOW + 4220
    assert result.tokens.scope == GRANTED_SCOPE
    [call] = entra.token_calls()
    assert form_of(call) == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": CODE_VERIFIER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_the_email_claim_wins_and_a_non_email_username_is_not_an_email(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    provider = provider_for(clock)
    entra.answer_login({**entra_claims(NOW), "email": "alice@contoso.com"}, key)
    assert login(provider).identity.claims["email"] == "alice@contoso.com"
    entra.answer_login({**entra_claims(NOW), "preferred_username": "+15551234567"}, key)
    assert "email" not in login(provider).identity.claims


def test_a_domain_tenant_validates_against_the_issuer_its_discovery_names(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    upstream = Entra(mock, tenant="contoso.onmicrosoft.com")
    upstream.publish(key)
    upstream.answer_login(entra_claims(NOW), key)
    assert login(provider_for(clock, tenant="contoso.onmicrosoft.com")).identity.subject == f"{ENTRA_TENANT}:{ENTRA_OID}"


def test_a_sovereign_cloud_login(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    host = "https://login.microsoftonline.us"
    upstream = Entra(mock, host=host)
    upstream.publish(key)
    upstream.answer_login(entra_claims(NOW, issuer_host=host), key)
    provider = provider_for(clock, authority_host=host, graph_resource="https://graph.microsoft.us", scopes=("Mail.Read",))
    assert provider.scope == "openid profile email offline_access https://graph.microsoft.us/Mail.Read"
    assert login(provider).identity.subject == f"{ENTRA_TENANT}:{ENTRA_OID}"


def test_a_token_from_another_tenant_is_rejected_by_a_single_tenant_app(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    entra.answer_login(entra_claims(NOW, tenant=OTHER_TENANT), key)
    exc = rejected(provider_for(clock))
    assert_invalid_id_token(exc, f"iss '{HOST}/{OTHER_TENANT}/v2.0' is not the expected issuer '{HOST}/{ENTRA_TENANT}/v2.0'")


def test_a_v1_issuer_is_rejected(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    entra.answer_login({**entra_claims(NOW), "iss": f"https://sts.windows.net/{ENTRA_TENANT}/"}, key)
    assert_invalid_id_token(rejected(provider_for(clock)), "iss 'https://sts.windows.net/")


@pytest.mark.parametrize("claim", ["oid", "tid", "sub"])
def test_missing_oid_tid_or_sub_is_rejected(entra: Entra, clock: FixedClock, key: SigningKey, claim: str) -> None:
    entra.answer_login({k: v for k, v in entra_claims(NOW).items() if k != claim}, key)
    assert_invalid_id_token(rejected(provider_for(clock)), f"{claim} claim missing")


# -- multi-tenant --------------------------------------------------------------------------------------


def test_multi_tenant_issuer_substitutes_the_tokens_tid(common: Entra, clock: FixedClock, key: SigningKey) -> None:
    common.answer_login(entra_claims(NOW, tenant=OTHER_TENANT), key)
    result = login(provider_for(clock, tenant="common"))
    assert result.identity.subject == f"{OTHER_TENANT}:{ENTRA_OID}"
    assert result.identity.claims["tid"] == OTHER_TENANT


def test_multi_tenant_iss_must_name_the_same_tenant_as_tid(common: Entra, clock: FixedClock, key: SigningKey) -> None:
    claims = {**entra_claims(NOW, tenant=OTHER_TENANT), "tid": ENTRA_TENANT}
    common.answer_login(claims, key)
    exc = rejected(provider_for(clock, tenant="common"))
    assert_invalid_id_token(exc, f"is not the expected issuer '{HOST}/{ENTRA_TENANT}/v2.0'")


def test_multi_tenant_iss_may_not_be_the_template_itself(common: Entra, clock: FixedClock, key: SigningKey) -> None:
    common.answer_login({**entra_claims(NOW), "iss": f"{HOST}/{{tenantid}}/v2.0"}, key)
    assert_invalid_id_token(rejected(provider_for(clock, tenant="common")), "is not the expected issuer")


def test_multi_tenant_tid_must_be_a_tenant_id(common: Entra, clock: FixedClock, key: SigningKey) -> None:
    common.answer_login({**entra_claims(NOW), "tid": "{tenantid}", "iss": f"{HOST}/{{tenantid}}/v2.0"}, key)
    assert_invalid_id_token(rejected(provider_for(clock, tenant="common")), "is not a tenant id")


def test_allowed_tenants_admit_listed_tenants(common: Entra, clock: FixedClock, key: SigningKey) -> None:
    common.answer_login(entra_claims(NOW, tenant=OTHER_TENANT), key)
    provider = provider_for(clock, tenant="common", allowed_tenants=(ENTRA_TENANT, OTHER_TENANT.upper()))
    assert login(provider).identity.claims["tid"] == OTHER_TENANT


def test_allowed_tenants_refuse_other_tenants(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    upstream = Entra(mock, tenant="organizations", issuer_tenant="{tenantid}")
    upstream.publish(key)
    upstream.answer_login(entra_claims(NOW, tenant=OTHER_TENANT), key)
    exc = rejected(provider_for(clock, tenant="organizations", allowed_tenants=(ENTRA_TENANT,)))
    assert_invalid_id_token(exc, f"tenant {OTHER_TENANT} is not one of the allowed tenants")


def test_a_specific_tenant_publishing_a_templated_issuer_is_refused(mock: responses.RequestsMock, clock: FixedClock) -> None:
    Entra(mock, issuer_tenant="{tenantid}")
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(clock).authorization_url(state="s", nonce=NONCE, code_challenge=CHALLENGE)
    assert caught.value.temporary is True
    assert "multi-tenant issuer" in str(caught.value)


# -- the validation rules with Entra's shapes --------------------------------------------------------


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"aud": "00000003-0000-0000-c000-000000000000"}, "aud '00000003-0000-0000-c000-000000000000' does not contain"),
        ({"nonce": "mob_n_other"}, "nonce does not match"),
        ({"exp": NOW - 121, "iat": NOW - 3721, "nbf": NOW - 3721}, "expired"),
        ({"iat": NOW + 600, "nbf": NOW + 600, "exp": NOW + 4200}, "iat is 600 s in the future"),
        ({"nbf": NOW + 600}, "not valid before nbf"),
    ],
)
def test_entra_id_tokens_failing_a_rule_are_rejected(
    entra: Entra, clock: FixedClock, key: SigningKey, change: dict[str, Any], reason: str
) -> None:
    entra.answer_login({**entra_claims(NOW), **change}, key)
    assert_invalid_id_token(rejected(provider_for(clock)), reason)


def test_an_entra_token_signed_with_another_key_is_rejected(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    forged = sign_id_token(entra_claims(NOW), signing_key("attacker"), kid=key.kid)
    entra.answer(entra_token_response(id_token=forged, scope=GRANTED_SCOPE))
    assert_invalid_id_token(rejected(provider_for(clock)), "bad signature")


def test_entra_key_rollover_refetches_the_keys_once(mock: responses.RequestsMock, clock: FixedClock, key: SigningKey) -> None:
    rolled = signing_key("entra-rolled")
    upstream = Entra(mock)
    upstream.publish(key)
    upstream.publish(key, rolled)
    provider = provider_for(clock)
    upstream.answer_login(entra_claims(NOW), key)
    login(provider)
    upstream.answer_login(entra_claims(NOW), rolled)
    assert login(provider).identity.subject == f"{ENTRA_TENANT}:{ENTRA_OID}"
    assert len(upstream.jwks_calls()) == 2
    # A kid that is still unknown after one refetch fails, without a refetch loop.
    upstream.answer_login(entra_claims(NOW), signing_key("never-published"))
    assert_invalid_id_token(rejected(provider), "no RS256 key with kid")
    assert len(upstream.jwks_calls()) == 3


# -- token endpoint errors: AADSTS codes the operator must fix ------------------------------------------


@pytest.mark.parametrize(
    "error, code, text, status, must_say",
    [
        ("invalid_client", "7000215", "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '6731de76-14a6-49ae-97bc-6eba6914391e'.", 401, "AZURE_CLIENT_SECRET to the secret's Value"),
        ("invalid_client", "7000222", "The provided client secret keys for app '6731de76-14a6-49ae-97bc-6eba6914391e' are expired.", 401, "create a new one"),
        ("invalid_request", "50011", "The redirect URI 'https://mcp.example.com/oauth/callback' specified in the request does not match the redirect URIs configured for the application.", 400, f"the redirect URI {REDIRECT_URI} is not registered"),
        ("invalid_grant", "65001", "The user or administrator has not consented to use the application with ID '6731de76-14a6-49ae-97bc-6eba6914391e'.", 400, "admin consent"),
        ("unauthorized_client", "700016", "Application with identifier '6731de76-14a6-49ae-97bc-6eba6914391e' was not found in the directory 'Contoso'.", 400, "check AZURE_CLIENT_ID and AZURE_TENANT_ID"),
    ],
)
def test_aadsts_errors_say_what_the_operator_must_fix(
    entra: Entra, clock: FixedClock, error: str, code: str, text: str, status: int, must_say: str
) -> None:
    entra.answer(entra_error(error, code, text), status=status)
    exc = rejected(provider_for(clock))
    assert (exc.temporary, exc.upstream_error) == (False, error)
    assert f"AADSTS{code}" in str(exc)
    assert must_say in str(exc)
    # The trace id stays, for a support ticket.
    assert "Trace ID: 0a1b2c3d" in str(exc)


def test_consent_errors_name_the_requested_scopes(entra: Entra, clock: FixedClock) -> None:
    entra.answer(entra_error("invalid_grant", "65001", "The user or administrator has not consented."), status=400)
    assert GRAPH_SCOPES in str(rejected(provider_for(clock)))


# -- refresh ------------------------------------------------------------------------------------------


def test_refresh_asks_for_the_full_scopes_and_returns_the_rotated_refresh_token(entra: Entra, clock: FixedClock) -> None:
    entra.answer(entra_token_response(id_token=None, scope=GRANTED_SCOPE, refresh_token=ROTATED_REFRESH_TOKEN))
    tokens = provider_for(clock).refresh(REFRESH_TOKEN)
    assert tokens.refresh_token == ROTATED_REFRESH_TOKEN
    assert tokens.expires_at == NOW + 4220
    assert form_of(entra.token_calls()[0]) == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_TOKEN,
        "scope": FULL_SCOPE,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_a_refreshed_entra_id_token_without_nonce_is_kept(entra: Entra, clock: FixedClock, key: SigningKey) -> None:
    claims = {k: v for k, v in entra_claims(NOW).items() if k != "nonce"}
    id_token = sign_id_token(claims, key)
    entra.answer(entra_token_response(id_token=id_token, scope=GRANTED_SCOPE, refresh_token=ROTATED_REFRESH_TOKEN))
    assert provider_for(clock).refresh(REFRESH_TOKEN).id_token == id_token


@pytest.mark.parametrize(
    "code, text",
    [
        ("70008", "The provided authorization code or refresh token has expired due to inactivity."),
        ("700082", "The refresh token has expired due to inactivity."),
        ("50076", "Due to a configuration change made by your administrator, you must use multi-factor authentication."),
    ],
)
def test_invalid_grant_on_refresh_ends_the_upstream_session(entra: Entra, clock: FixedClock, code: str, text: str) -> None:
    entra.answer(entra_error("invalid_grant", code, text), status=400)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(clock).refresh(REFRESH_TOKEN)
    assert (caught.value.temporary, caught.value.upstream_error) == (False, "invalid_grant")
    assert_no_secrets(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 503, "body": "Service Unavailable"},
        {"status": 500, "json": {"error": "server_error", "error_description": "AADSTS90033: A transient error has occurred."}},
        {"status": 400, "json": {"error": "temporarily_unavailable", "error_description": "AADSTS50196: The server terminated an operation because it encountered a client request loop."}},
        {"body": requests.ReadTimeout("read timed out")},
        {"body": requests.ConnectionError("connection reset")},
    ],
)
def test_outages_on_refresh_are_temporary(entra: Entra, clock: FixedClock, answer: dict[str, Any]) -> None:
    entra.mock.post(entra.token_endpoint, **answer)
    with pytest.raises(UpstreamIdentityError) as caught:
        provider_for(clock).refresh(REFRESH_TOKEN)
    assert caught.value.temporary is True
    assert_no_secrets(caught.value)


# -- the callback error page's sentence ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error, description, must_say",
    [
        ("access_denied", "AADSTS65004: User declined to consent to access the app.", "cancelled, or the requested permissions were declined"),
        ("access_denied", None, "cancelled"),
        ("consent_required", "AADSTS65001: The user or administrator has not consented to use the application.", "an administrator must grant admin consent"),
        ("invalid_request", "AADSTS50011: The redirect URI 'https://mcp.example.com/oauth/callback' specified in the request does not match.", "add PUBLIC_URL + /oauth/callback as a 'Web' redirect URI"),
        ("unauthorized_client", "AADSTS700016: Application with identifier 'x' was not found in the directory 'Contoso'.", "check AZURE_CLIENT_ID and AZURE_TENANT_ID"),
        ("unauthorized_client", None, "may not sign users in this way"),
        ("invalid_request", "AADSTS90072: User account 'bob@fabrikam.com' from identity provider 'live.com' does not exist in tenant 'Contoso'.", "the account is not in the application's tenant"),
        ("invalid_request", "AADSTS50194: Application is not configured as a multi-tenant application.", "AZURE_TENANT_ID is 'common' or 'organizations'"),
        ("access_denied", "AADSTS50105: Your administrator has configured the application to block users unless they are specifically granted access.", "not assigned to the application"),
        ("interaction_required", "AADSTS50076: Due to a configuration change you must use multi-factor authentication.", "multi-factor authentication is required"),
        ("temporarily_unavailable", None, "try again in a few minutes"),
        ("invalid_scope", "AADSTS70011: The provided value for the input parameter 'scope' is not valid.", "check AZURE_SCOPES"),
    ],
)
def test_describe_upstream_error_says_what_happened_and_what_to_fix(error: str, description: str | None, must_say: str) -> None:
    sentence = describe_upstream_error(error, description)
    assert must_say in sentence
    assert sentence.endswith(".") or sentence.endswith(")")


def test_describe_upstream_error_names_the_aadsts_code() -> None:
    assert describe_upstream_error("invalid_request", "AADSTS50011: mismatch").endswith("(AADSTS50011)")
    assert describe_upstream_error("invalid_request", "AADSTS999999: new code").endswith("(AADSTS999999)")


def test_describe_upstream_error_never_echoes_the_callers_text() -> None:
    # Anyone can call the callback with any error and description.
    sentence = describe_upstream_error("<script>alert(1)</script>", "Call +1 555 0100 to restore your account <b>now</b>")
    assert sentence == "Sign-in with Microsoft failed (unknown error)."
    assert describe_upstream_error("weird_error", None) == "Sign-in with Microsoft failed (weird_error)."
