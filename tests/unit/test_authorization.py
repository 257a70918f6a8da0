"""AuthorizationService: request validation (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2), consent,
and the upstream login that ends in a one-time code (RFC 9207 ``iss``)."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.errors import (
    AccessDenied,
    AuthorizationRedirect,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    RefusedAuthorizationRequest,
    ServerError,
    TemporarilyUnavailable,
    UnsupportedResponseType,
    UpstreamSignInFailed,
)
from mcp_oauth_bridge.domain.model import Client, UpstreamIdentity, UpstreamLogin, UpstreamTokens
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.security import s256_challenge
from mcp_oauth_bridge.domain.services.authorization import (
    MAX_CLIENT_ID_LENGTH,
    MAX_REQUESTED_REDIRECT_URI_LENGTH,
    MAX_RESOURCE_LENGTH,
    MAX_SCOPE_LENGTH,
    MAX_STATE_LENGTH,
)
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from mcp_oauth_bridge.domain.uris import RedirectDestination

from .conftest import (
    BROWSER,
    CHALLENGE,
    ISSUER,
    NOW,
    REDIRECT_URI,
    RESOURCE,
    SCOPES,
    UPSTREAM_CODE,
    World,
    base,
    query,
)

# ================================================================================================
# GET /authorize — errors shown as a page (client or redirect URI not established)
# ================================================================================================


def assert_error_page(excinfo: pytest.ExceptionInfo[BaseException], error_type: type[OAuthError]) -> None:
    assert type(excinfo.value) is error_type
    assert not isinstance(excinfo.value, AuthorizationRedirect)


def test_missing_client_id_is_an_error_page(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, client_id=None)
    assert_error_page(excinfo, InvalidRequest)
    assert world.storage.pending == {}


def test_unknown_client_is_an_error_page(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, client_id="mob_client_unknown")
    assert_error_page(excinfo, InvalidClient)
    assert world.storage.pending == {}


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        REDIRECT_URI + "/extra",
        REDIRECT_URI + "?x=1",
        REDIRECT_URI.upper(),
        "",
    ],
)
def test_unregistered_redirect_uri_is_an_error_page(world: World, public_client: RegisteredClient, redirect_uri: str) -> None:
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, redirect_uri=redirect_uri)
    assert_error_page(excinfo, InvalidRequest)
    assert world.storage.pending == {}


def test_unregistered_redirect_uri_wins_over_other_errors(world: World, public_client: RegisteredClient) -> None:
    # Even with a broken request, an unregistered redirect URI must never receive a redirect.
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, redirect_uri="https://evil.example/cb", response_type="token", code_challenge=None)
    assert_error_page(excinfo, InvalidRequest)


def test_omitted_redirect_uri_uses_the_single_registered_one(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client, redirect_uri=None)
    assert prompt.request.redirect_uri == REDIRECT_URI
    assert world.storage.pending[prompt.pending_id].request.redirect_uri == REDIRECT_URI


def test_omitted_redirect_uri_with_several_registered_is_an_error_page(world: World) -> None:
    registered = world.register(redirect_uris=[REDIRECT_URI, "https://client.example/other"])
    with pytest.raises(OAuthError) as excinfo:
        world.start(registered, redirect_uri=None)
    assert_error_page(excinfo, InvalidRequest)


def test_loopback_redirect_uri_may_use_another_port(world: World) -> None:
    registered = world.register(redirect_uris=["http://127.0.0.1/callback"])
    prompt = world.start(registered, redirect_uri="http://127.0.0.1:49152/callback")
    assert prompt.request.redirect_uri == "http://127.0.0.1:49152/callback"
    # The consent page names the port the browser will actually go to.
    assert prompt.destination == RedirectDestination("http://127.0.0.1:49152", None, app=False)


def test_loopback_request_in_a_form_the_browser_rewrites_is_a_page_without_a_link(world: World) -> None:
    registered = world.register(redirect_uris=["http://127.0.0.1/cb"])
    # Matches by port variation, but a browser would go to http://127.0.0.1/cb instead.
    with pytest.raises(OAuthError) as excinfo:
        world.start(registered, redirect_uri="http://127.0.0.1:80/cb")
    assert_error_page(excinfo, InvalidRequest)
    assert "no longer accepted" in excinfo.value.description


def test_consent_prompt_names_the_destination_from_the_parse(world: World, public_client: RegisteredClient) -> None:
    assert world.start(public_client).destination == RedirectDestination("client.example", None, app=False)


def test_internationalised_host_must_be_requested_in_its_registered_punycode_form(world: World) -> None:
    registered = world.register(redirect_uris=["https://аррӏе.com/cb"])
    with pytest.raises(OAuthError) as excinfo:
        world.start(registered, redirect_uri="https://аррӏе.com/cb")
    assert_error_page(excinfo, InvalidRequest)
    assert "punycode" in excinfo.value.description
    prompt = world.start(registered, redirect_uri="https://xn--80ak6aa92e.com/cb")
    assert prompt.request.redirect_uri == "https://xn--80ak6aa92e.com/cb"
    assert prompt.destination == RedirectDestination("xn--80ak6aa92e.com", "аррӏе.com", app=False)


@pytest.mark.parametrize(
    "stored_uri",
    [
        "search-ms:query=invoice",
        "https://evil.example\\.claude.ai/cb",
        "https://client.example@evil.example/cb",
        "HTTPS://EXAMPLE.com/cb",
        "http://client.example/cb",
        "https://client.example/cb#frag",
    ],
)
def test_client_stored_under_older_rules_gets_no_way_to_its_redirect_uri(world: World, stored_uri: str) -> None:
    # A row registered before today's rule: nothing is shown or linked for a URI it refuses,
    # whether the request names it or leaves it implied.
    legacy = RegisteredClient(
        client=Client(
            client_id="mob_client_legacy",
            redirect_uris=(stored_uri,),
            grant_types=("authorization_code",),
            response_types=("code",),
            token_endpoint_auth_method="none",
            issued_at=NOW,
        ),
        client_secret=None,
    )
    world.clients.add(legacy.client)
    for redirect_uri in (stored_uri, None):
        with pytest.raises(OAuthError) as excinfo:
            world.start(legacy, redirect_uri=redirect_uri, response_type="token")
        assert_error_page(excinfo, InvalidRequest)
        assert "register the client again" in excinfo.value.description
    assert world.storage.pending == {}


# ================================================================================================
# GET /authorize — errors after the client and redirect URI are known: a page with a link back,
# never an automatic redirect (RFC 9700 §4.11.2)
# ================================================================================================


def start_refused(world: World, registered: RegisteredClient, **overrides: str | None) -> RefusedAuthorizationRequest:
    with pytest.raises(RefusedAuthorizationRequest) as excinfo:
        world.start(registered, **overrides)
    refused = excinfo.value
    assert refused.redirect_uri == REDIRECT_URI
    assert refused.state == overrides.get("state", "client-state-1")
    assert refused.destination.site == "client.example"
    assert world.storage.pending == {}
    return refused


def test_missing_response_type_is_refused_with_invalid_request(world: World, public_client: RegisteredClient) -> None:
    refused = start_refused(world, public_client, response_type=None)
    assert type(refused.error) is InvalidRequest


@pytest.mark.parametrize("response_type", ["token", "code id_token", "id_token", "CODE"])
def test_other_response_type_is_refused_with_unsupported_response_type(
    world: World, public_client: RegisteredClient, response_type: str
) -> None:
    refused = start_refused(world, public_client, response_type=response_type)
    assert type(refused.error) is UnsupportedResponseType


def test_missing_code_challenge_is_refused_with_invalid_request(world: World, public_client: RegisteredClient) -> None:
    refused = start_refused(world, public_client, code_challenge=None, code_challenge_method=None)
    assert type(refused.error) is InvalidRequest


@pytest.mark.parametrize("challenge", [None, ""])
def test_missing_code_challenge_with_s256_method_is_refused_with_invalid_request(
    world: World, public_client: RegisteredClient, challenge: str | None
) -> None:
    refused = start_refused(world, public_client, code_challenge=challenge)
    assert type(refused.error) is InvalidRequest


def test_missing_method_defaults_to_plain_and_is_rejected(world: World, public_client: RegisteredClient) -> None:
    refused = start_refused(world, public_client, code_challenge_method=None)
    assert type(refused.error) is InvalidRequest


@pytest.mark.parametrize("method", ["plain", "s256", "S512", ""])
def test_method_other_than_s256_is_rejected(world: World, public_client: RegisteredClient, method: str) -> None:
    refused = start_refused(world, public_client, code_challenge_method=method)
    assert type(refused.error) is InvalidRequest


@pytest.mark.parametrize(
    "challenge",
    [
        CHALLENGE[:-1],  # 42 characters
        CHALLENGE + "A",  # 44 characters
        CHALLENGE[:-1] + "=",  # padding
        CHALLENGE[:-1] + "+",  # base64, not base64url
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-abc",  # a verifier, not a challenge
    ],
)
def test_malformed_code_challenge_is_rejected(world: World, public_client: RegisteredClient, challenge: str) -> None:
    refused = start_refused(world, public_client, code_challenge=challenge)
    assert type(refused.error) is InvalidRequest


def test_scope_outside_supported_is_refused_with_invalid_scope(world: World, public_client: RegisteredClient) -> None:
    refused = start_refused(world, public_client, scope="mcp:read admin")
    assert type(refused.error) is InvalidScope


def test_scope_outside_clients_registered_scope_is_refused_with_invalid_scope(world: World) -> None:
    registered = world.register(scope="mcp:read")
    refused = start_refused(world, registered, scope="mcp:write")
    assert type(refused.error) is InvalidScope


@pytest.mark.parametrize(
    "resource",
    [
        "https://other.example/mcp",
        RESOURCE + "/other",
        "https://auth.example.com",
        "http://auth.example.com/mcp",
        "",
    ],
)
def test_resource_mismatch_is_refused_with_invalid_target(world: World, public_client: RegisteredClient, resource: str) -> None:
    refused = start_refused(world, public_client, resource=resource)
    assert type(refused.error) is InvalidTarget


def test_too_long_state_is_refused_without_returning_it(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(RefusedAuthorizationRequest) as excinfo:
        world.start(public_client, state="s" * (MAX_STATE_LENGTH + 1))
    assert type(excinfo.value.error) is InvalidRequest
    assert f"longer than {MAX_STATE_LENGTH}" in excinfo.value.error.description
    # The overlong state is the parameter in error: the link back does not carry it.
    assert excinfo.value.state is None
    assert world.storage.pending == {}


def test_state_of_maximum_length_is_accepted(world: World, public_client: RegisteredClient) -> None:
    state = "s" * MAX_STATE_LENGTH
    assert world.start(public_client, state=state).request.state == state


@pytest.mark.parametrize(
    ("parameter", "limit"),
    [("scope", MAX_SCOPE_LENGTH), ("resource", MAX_RESOURCE_LENGTH)],
)
def test_overlong_scope_and_resource_are_refused_as_invalid_request(
    world: World, public_client: RegisteredClient, parameter: str, limit: int
) -> None:
    refused = start_refused(world, public_client, **{parameter: "x" * (limit + 1)})
    assert type(refused.error) is InvalidRequest
    assert f"{parameter} is longer than {limit}" in refused.error.description


def test_refused_request_without_state_carries_none(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(RefusedAuthorizationRequest) as excinfo:
        world.start(public_client, state=None, response_type="token")
    assert excinfo.value.state is None
    assert excinfo.value.redirect_uri == REDIRECT_URI


@pytest.mark.parametrize(
    "overrides",
    [
        {"response_type": "token"},
        {"code_challenge": None},
        {"code_challenge_method": "plain"},
        {"scope": "admin"},
        {"resource": "https://other.example/mcp"},
    ],
)
def test_no_error_before_consent_is_an_automatic_redirect(
    world: World, public_client: RegisteredClient, overrides: dict[str, str | None]
) -> None:
    # RFC 9700 §4.11.2: a self-registered client must not turn /authorize into an open redirector.
    with pytest.raises(RefusedAuthorizationRequest) as excinfo:
        world.start(public_client, **overrides)
    assert not isinstance(excinfo.value, AuthorizationRedirect)


def test_overlong_client_id_is_a_page_without_a_link(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, client_id="mob_client_" + "x" * MAX_CLIENT_ID_LENGTH)
    assert_error_page(excinfo, InvalidRequest)
    assert f"longer than {MAX_CLIENT_ID_LENGTH}" in excinfo.value.description


def test_overlong_redirect_uri_is_a_page_without_a_link(world: World, public_client: RegisteredClient) -> None:
    long_uri = REDIRECT_URI + "?" + "x" * MAX_REQUESTED_REDIRECT_URI_LENGTH
    with pytest.raises(OAuthError) as excinfo:
        world.start(public_client, redirect_uri=long_uri)
    assert_error_page(excinfo, InvalidRequest)
    assert f"longer than {MAX_REQUESTED_REDIRECT_URI_LENGTH}" in excinfo.value.description


# ================================================================================================
# GET /authorize — a valid request
# ================================================================================================


def test_valid_request_stores_a_pending_authorization(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client, scope="mcp:read")
    assert prompt.client == public_client.client
    assert prompt.browser_id == BROWSER
    pending = world.storage.pending[prompt.pending_id]
    assert pending.request == prompt.request
    assert prompt.request.client_id == public_client.client.client_id
    assert prompt.request.redirect_uri == REDIRECT_URI
    assert prompt.request.scopes == ("mcp:read",)
    assert prompt.request.resource == RESOURCE
    assert prompt.request.code_challenge == CHALLENGE
    assert prompt.request.code_challenge_method == "S256"
    assert prompt.request.state == "client-state-1"
    assert pending.created_at == NOW
    assert pending.expires_at == NOW + world.policy.pending_authorization_ttl
    assert pending.upstream is None
    assert pending.consumed_at is None
    # The CSRF token and browser binding are stored only as keyed hashes.
    assert pending.csrf_token_hash == world.hasher.hash(prompt.csrf_token)
    assert pending.csrf_token_hash != prompt.csrf_token
    assert pending.browser_binding_hash == world.hasher.hash(BROWSER)


def test_omitted_scope_gets_the_default_scopes(world: World, public_client: RegisteredClient) -> None:
    assert world.start(public_client).request.scopes == SCOPES


def test_omitted_scope_gets_the_clients_registered_scope(world: World) -> None:
    registered = world.register(scope="mcp:read")
    assert world.start(registered).request.scopes == ("mcp:read",)


def test_omitted_resource_defaults_to_the_protected_resource(world: World, public_client: RegisteredClient) -> None:
    assert world.start(public_client, resource=None).request.resource == RESOURCE


def test_resource_with_trailing_slash_is_the_canonical_resource(world: World, public_client: RegisteredClient) -> None:
    assert world.start(public_client, resource=RESOURCE + "/").request.resource == RESOURCE


def test_duplicate_scopes_are_kept_once(world: World, public_client: RegisteredClient) -> None:
    assert world.start(public_client, scope="mcp:read mcp:read").request.scopes == ("mcp:read",)


def test_browser_without_cookie_gets_a_new_browser_id(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client, browser_id=None)
    assert prompt.browser_id.startswith("mob_br_")
    assert world.storage.pending[prompt.pending_id].browser_binding_hash == world.hasher.hash(prompt.browser_id)


def test_each_request_gets_its_own_csrf_token(world: World, public_client: RegisteredClient) -> None:
    first = world.start(public_client)
    second = world.start(public_client)
    assert first.pending_id != second.pending_id
    assert first.csrf_token != second.csrf_token


# ================================================================================================
# POST /consent
# ================================================================================================


def test_wrong_csrf_token_is_rejected_and_nothing_goes_upstream(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(pending_id=prompt.pending_id, csrf_token="forged", browser_id=BROWSER, approved=True)
    assert world.storage.pending[prompt.pending_id].upstream is None
    # A CSRF token of another pending authorization does not work either.
    other = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(pending_id=prompt.pending_id, csrf_token=other.csrf_token, browser_id=BROWSER, approved=True)
    assert world.storage.pending[prompt.pending_id].upstream is None


def test_wrong_csrf_token_cannot_deny_either(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(pending_id=prompt.pending_id, csrf_token="forged", browser_id=BROWSER, approved=False)
    assert prompt.pending_id in world.storage.pending


@pytest.mark.parametrize("browser_id", [None, "", "another-browser"])
def test_wrong_or_missing_browser_is_rejected(world: World, public_client: RegisteredClient, browser_id: str | None) -> None:
    prompt = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(
            pending_id=prompt.pending_id, csrf_token=prompt.csrf_token, browser_id=browser_id, approved=True
        )
    assert world.storage.pending[prompt.pending_id].upstream is None


def test_unknown_pending_is_rejected(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(pending_id="mob_tx_unknown", csrf_token=prompt.csrf_token, browser_id=BROWSER, approved=True)


def test_expired_pending_is_rejected(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    world.clock.advance(world.policy.pending_authorization_ttl)
    with pytest.raises(InvalidRequest):
        world.approve(prompt)
    assert world.storage.pending[prompt.pending_id].upstream is None


def test_pending_just_before_expiry_is_accepted(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    world.clock.advance(world.policy.pending_authorization_ttl - 1)
    assert world.approve(prompt).startswith("https://idp.example/authorize?")


def test_deny_redirects_access_denied_with_state_and_iss_and_forgets_the_request(
    world: World, public_client: RegisteredClient
) -> None:
    prompt = world.start(public_client)
    url = world.authorization.decide(
        pending_id=prompt.pending_id, csrf_token=prompt.csrf_token, browser_id=BROWSER, approved=False
    )
    assert base(url) == REDIRECT_URI
    params = query(url)
    assert params["error"] == "access_denied"
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER
    assert "code" not in params
    assert prompt.pending_id not in world.storage.pending
    assert world.idp.exchanges == []
    # Once denied, it cannot be approved any more.
    with pytest.raises(InvalidRequest):
        world.approve(prompt)


def test_consent_cannot_be_answered_after_the_sign_in_completed(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    world.callback(world.approve(prompt))
    assert world.storage.pending[prompt.pending_id].consumed_at == NOW
    for approved in (False, True):
        with pytest.raises(InvalidRequest):
            world.authorization.decide(
                pending_id=prompt.pending_id, csrf_token=prompt.csrf_token, browser_id=BROWSER, approved=approved
            )
    assert prompt.pending_id in world.storage.pending
    assert len(world.storage.codes) == 1


def test_approving_twice_is_rejected(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    first_url = world.approve(prompt)
    attached = world.storage.pending[prompt.pending_id].upstream
    with pytest.raises(InvalidRequest):
        world.approve(prompt)
    # The first upstream transaction is untouched and still completes the login.
    assert world.storage.pending[prompt.pending_id].upstream == attached
    assert "code" in query(world.callback(first_url))


def test_denying_after_approval_is_rejected_and_the_sign_in_continues(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    first_url = world.approve(prompt)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(
            pending_id=prompt.pending_id, csrf_token=prompt.csrf_token, browser_id=prompt.browser_id, approved=False
        )
    assert prompt.pending_id in world.storage.pending
    assert "code" in query(world.callback(first_url))


def test_approve_sends_the_browser_upstream_with_pkce_nonce_and_an_opaque_state(
    world: World, public_client: RegisteredClient
) -> None:
    prompt = world.start(public_client)
    url = world.approve(prompt)
    assert base(url) == "https://idp.example/authorize"
    params = query(url)
    upstream = world.storage.pending[prompt.pending_id].upstream
    assert upstream is not None
    # The upstream state is stored only as its keyed hash.
    assert upstream.state_hash == world.hasher.hash(params["state"])
    assert upstream.state_hash != params["state"]
    assert params["state"] not in repr(world.storage.pending)
    # The state is opaque: it carries neither the client's state nor a code.
    assert "client-state-1" not in params["state"]
    assert params["nonce"] == upstream.nonce
    # No code exists before the person signed in upstream.
    assert world.storage.codes == {}
    assert world.storage.grants == {}

    world.callback(url)
    assert world.idp.exchanges == [
        {"code": UPSTREAM_CODE, "code_verifier": upstream.code_verifier, "nonce": upstream.nonce}
    ]
    # The challenge sent upstream is S256 of the verifier the IdP received at the exchange.
    assert params["code_challenge"] == s256_challenge(world.idp.exchanges[0]["code_verifier"])
    assert params["code_challenge"] != world.idp.exchanges[0]["code_verifier"]


def test_each_approval_gets_its_own_upstream_state_verifier_and_nonce(world: World, public_client: RegisteredClient) -> None:
    first = query(world.approve(world.start(public_client)))
    second = query(world.approve(world.start(public_client)))
    assert first["state"] != second["state"]
    assert first["nonce"] != second["nonce"]
    assert first["code_challenge"] != second["code_challenge"]


# ================================================================================================
# GET /oauth/callback
# ================================================================================================


def test_successful_login_redirects_with_code_state_and_iss(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client, scope="mcp:read")
    idp_url = world.approve(prompt)
    assert world.storage.codes == {}

    world.clock.advance(5)
    url = world.callback(idp_url)

    assert base(url) == REDIRECT_URI
    params = query(url)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "client-state-1"
    assert params["iss"] == ISSUER == world.policy.issuer
    code_value = params["code"]
    assert code_value.startswith("mob_ac_")

    grant = world.only_grant()
    assert grant.client_id == public_client.client.client_id
    assert grant.subject == "user-1"
    assert dict(grant.claims) == {"preferred_username": "alice", "email": "alice@example.com"}
    assert grant.scopes == ("mcp:read",)
    assert grant.resource == RESOURCE
    assert world.storage.get_upstream_tokens(grant.grant_id) == UpstreamTokens(
        access_token="upstream-at", refresh_token="upstream-rt", expires_at=1_700_003_600
    )
    assert grant.created_at == NOW + 5
    assert grant.revoked_at is None

    # The code is stored only as its keyed hash, bound to client, redirect URI, PKCE and resource.
    assert list(world.storage.codes) == [world.hasher.hash(code_value)]
    code = world.storage.codes[world.hasher.hash(code_value)]
    assert code.grant_id == grant.grant_id
    assert code.client_id == public_client.client.client_id
    assert code.redirect_uri == REDIRECT_URI
    assert code.code_challenge == CHALLENGE
    assert code.code_challenge_method == "S256"
    assert code.resource == RESOURCE
    assert code.scopes == ("mcp:read",)
    assert code.issued_at == NOW + 5
    assert code.expires_at == NOW + 5 + world.policy.authorization_code_ttl
    assert code.redeemed_at is None
    assert world.storage.pending[prompt.pending_id].consumed_at == NOW + 5


def test_login_without_client_state_omits_state(world: World, public_client: RegisteredClient) -> None:
    url = world.callback(world.approve(world.start(public_client, state=None)))
    assert set(query(url)) == {"code", "iss"}


def test_callback_state_is_single_use(world: World, public_client: RegisteredClient) -> None:
    idp_url = world.approve(world.start(public_client))
    world.callback(idp_url)
    with pytest.raises(InvalidRequest):
        world.callback(idp_url)
    assert len(world.storage.codes) == 1
    assert len(world.storage.grants) == 1
    assert len(world.idp.exchanges) == 1


@pytest.mark.parametrize("state", [None, "", "mob_st_unknown"])
def test_unknown_or_missing_state_is_rejected(world: World, public_client: RegisteredClient, state: str | None) -> None:
    world.approve(world.start(public_client))
    with pytest.raises(InvalidRequest) as excinfo:
        world.authorization.complete_upstream_login(state=state, code=UPSTREAM_CODE, error=None, browser_id=BROWSER)
    assert not isinstance(excinfo.value, AuthorizationRedirect)
    assert world.storage.codes == {}
    assert world.idp.exchanges == []


def test_callback_after_pending_expiry_is_rejected(world: World, public_client: RegisteredClient) -> None:
    idp_url = world.approve(world.start(public_client))
    world.clock.advance(world.policy.pending_authorization_ttl)
    with pytest.raises(InvalidRequest):
        world.callback(idp_url)
    assert world.storage.codes == {}


@pytest.mark.parametrize("browser_id", [None, "", "another-browser"])
def test_callback_in_another_browser_is_rejected(world: World, public_client: RegisteredClient, browser_id: str | None) -> None:
    idp_url = world.approve(world.start(public_client))
    with pytest.raises(InvalidRequest) as excinfo:
        world.callback(idp_url, browser_id=browser_id)
    assert not isinstance(excinfo.value, AuthorizationRedirect)
    assert world.storage.codes == {}
    assert world.storage.grants == {}
    assert world.idp.exchanges == []


def callback_redirect_error(world: World, registered: RegisteredClient, **kwargs: str | None) -> AuthorizationRedirect:
    idp_url = world.approve(world.start(registered))
    with pytest.raises(AuthorizationRedirect) as excinfo:
        world.callback(idp_url, **kwargs)
    redirect = excinfo.value
    assert redirect.redirect_uri == REDIRECT_URI
    assert redirect.state == "client-state-1"
    assert world.storage.codes == {}
    assert world.storage.grants == {}
    return redirect


def test_upstream_denial_redirects_access_denied(world: World, public_client: RegisteredClient) -> None:
    redirect = callback_redirect_error(world, public_client, code=None, error="access_denied")
    assert type(redirect.error) is AccessDenied
    assert world.idp.exchanges == []


@pytest.mark.parametrize("error", ["server_error", "temporarily_unavailable"])
def test_upstream_outage_redirects_temporarily_unavailable(world: World, public_client: RegisteredClient, error: str) -> None:
    redirect = callback_redirect_error(world, public_client, code=None, error=error)
    assert type(redirect.error) is TemporarilyUnavailable
    assert world.idp.exchanges == []


def failure_page(world: World, registered: RegisteredClient, **kwargs: str | None) -> UpstreamSignInFailed:
    idp_url = world.approve(world.start(registered))
    with pytest.raises(UpstreamSignInFailed) as excinfo:
        world.callback(idp_url, **kwargs)
    assert world.storage.codes == {}
    assert world.storage.grants == {}
    back = query(excinfo.value.return_url)
    # The way back is the validated redirect URI, with server_error, state and iss.
    assert excinfo.value.return_url.startswith(REDIRECT_URI + "?")
    assert (back["error"], back["state"], back["iss"]) == ("server_error", "client-state-1", ISSUER)
    return excinfo.value


@pytest.mark.parametrize("error", ["consent_required", "invalid_request", "unauthorized_client", "login_required"])
def test_upstream_misconfiguration_is_a_page_saying_what_to_fix(world: World, public_client: RegisteredClient, error: str) -> None:
    page = failure_page(world, public_client, code=None, error=error, error_description="AADSTS65001: <script>")
    # The provider's own words about the error, never the query string's free text.
    assert page.explanation == f"the scripted provider answered {error}"
    assert world.idp.exchanges == []


def test_upstream_error_wins_over_a_code(world: World, public_client: RegisteredClient) -> None:
    redirect = callback_redirect_error(world, public_client, code=UPSTREAM_CODE, error="access_denied")
    assert type(redirect.error) is AccessDenied
    assert world.idp.exchanges == []


def test_missing_upstream_code_redirects_server_error(world: World, public_client: RegisteredClient) -> None:
    redirect = callback_redirect_error(world, public_client, code=None)
    assert type(redirect.error) is ServerError


def test_temporary_upstream_failure_redirects_temporarily_unavailable(world: World, public_client: RegisteredClient) -> None:
    world.idp.failure = UpstreamIdentityError("timeout", temporary=True)
    redirect = callback_redirect_error(world, public_client)
    assert type(redirect.error) is TemporarilyUnavailable


def test_final_upstream_failure_is_a_page_with_the_adapters_explanation(world: World, public_client: RegisteredClient) -> None:
    world.idp.failure = UpstreamIdentityError(
        "the client secret is wrong: check AZURE_CLIENT_SECRET", temporary=False, upstream_error="invalid_client"
    )
    page = failure_page(world, public_client)
    assert page.explanation == "the client secret is wrong: check AZURE_CLIENT_SECRET"
    assert page.__cause__ is world.idp.failure


def test_failed_upstream_exchange_consumes_the_transaction(world: World, public_client: RegisteredClient) -> None:
    world.idp.failure = UpstreamIdentityError("timeout", temporary=True)
    idp_url = world.approve(world.start(public_client))
    with pytest.raises(AuthorizationRedirect):
        world.callback(idp_url)
    world.idp.failure = None
    with pytest.raises(InvalidRequest):
        world.callback(idp_url)
    assert world.storage.codes == {}


def test_grant_records_the_upstream_identity_returned_by_the_idp(world: World, public_client: RegisteredClient) -> None:
    world.idp.login = UpstreamLogin(
        identity=UpstreamIdentity(subject="oid-42", claims={"email": "bob@example.com", "name": "Bob"}),
        tokens=UpstreamTokens(access_token="at-2", expires_at=NOW + 100, scope="Mail.Read"),
    )
    world.authorize_and_get_code(public_client)
    grant = world.only_grant()
    assert grant.subject == "oid-42"
    assert dict(grant.claims) == {"email": "bob@example.com", "name": "Bob"}
    assert world.storage.get_upstream_tokens(grant.grant_id) == UpstreamTokens(
        access_token="at-2", expires_at=NOW + 100, scope="Mail.Read"
    )


def test_callback_stores_the_upstream_tokens_with_the_grant(world: World, public_client: RegisteredClient) -> None:
    world.authorize_and_get_code(public_client)
    grant_id = world.only_grant().grant_id
    assert world.storage.get_upstream_tokens(grant_id) == world.idp.login.tokens
    assert world.storage.upstream_tokens == {grant_id: world.idp.login.tokens}


def test_two_logins_produce_independent_grants_and_codes(world: World, public_client: RegisteredClient) -> None:
    first = world.authorize_and_get_code(public_client)
    second = world.authorize_and_get_code(public_client)
    assert first != second
    assert len(world.storage.grants) == 2
    assert {c.grant_id for c in world.storage.codes.values()} == set(world.storage.grants)
