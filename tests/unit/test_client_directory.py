"""Finding clients (domain/services/clients.py): client ID metadata documents fetched, validated
and cached; stale use at the token endpoint only; Claude's pinned copy; the registration policy
(CLIENT_REGISTRATION); the redirect URI allowlist; and operator-created clients."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mcp_oauth_bridge.domain.client_documents import MetadataDocumentPolicy, RedirectUriAllowlist
from mcp_oauth_bridge.domain.errors import (
    AuthorizationRedirect,
    InvalidClient,
    InvalidClientMetadata,
    InvalidRedirectUri,
    InvalidRequest,
    RefusedAuthorizationRequest,
)
from mcp_oauth_bridge.domain.model import DYNAMIC_CLIENT_KIND, METADATA_DOCUMENT_CLIENT_KIND, Client
from mcp_oauth_bridge.domain.policy import (
    REGISTRATION_CLOSED,
    REGISTRATION_METADATA_DOCUMENTS,
    ServerPolicy,
)
from mcp_oauth_bridge.domain.ports import MetadataDocumentUnavailable
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from mcp_oauth_bridge.domain.services.tokens import ClientCredentials
from tests.unit.conftest import ISSUER, NOW, RESOURCE, SCOPES, World, build_world, query

CLIENT_ID = "https://app.example.com/oauth/client.json"
REDIRECT = "https://app.example.com/callback"
CLAUDE_ID = "https://claude.ai/oauth/mcp-oauth-client-metadata"
CLAUDE_DOCUMENT = {
    "client_id": CLAUDE_ID,
    "client_name": "Claude",
    "client_uri": "https://claude.ai",
    "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
    "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}


def document(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_id": CLIENT_ID, "client_name": "App", "redirect_uris": [REDIRECT]}
    body.update(overrides)
    return body


def make_world(**policy: Any) -> World:
    pinned = policy.pop("pinned", None)
    return build_world(ServerPolicy(issuer=ISSUER, resource=RESOURCE, scopes_supported=SCOPES, **policy), pinned=pinned)


@pytest.fixture
def world() -> World:
    world = make_world()
    world.fetcher.serve(CLIENT_ID, document(), max_age=600)
    return world


def as_registered(world: World, client_id: str = CLIENT_ID) -> RegisteredClient:
    return RegisteredClient(client=world.directory.for_authorization(client_id), client_secret=None)


def token_client(world: World, client_id: str = CLIENT_ID) -> RegisteredClient:
    client = world.client_auth.authenticate(ClientCredentials(client_id=client_id, client_secret=None, method="none"))
    return RegisteredClient(client=client, client_secret=None)


# -- fetching and caching ------------------------------------------------------------------------


def test_a_document_client_completes_the_flow_without_registering(world: World) -> None:
    registered = as_registered(world)
    assert registered.client.kind == METADATA_DOCUMENT_CLIENT_KIND
    assert registered.client.is_public
    tokens = world.login(registered, redirect_uri=REDIRECT)
    refreshed = world.refresh(token_client(world), tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    # The client's row exists (grants reference it) and holds the document's metadata.
    stored = world.clients.get(CLIENT_ID)
    assert stored is not None and stored.client_name == "App" and stored.kind == METADATA_DOCUMENT_CLIENT_KIND
    assert world.only_grant().client_id == CLIENT_ID


def test_a_fresh_cached_document_is_not_fetched_again(world: World) -> None:
    world.directory.for_authorization(CLIENT_ID)
    world.clock.advance(599)
    world.directory.for_authorization(CLIENT_ID)
    assert world.fetcher.fetched == [CLIENT_ID]
    cached = world.storage.get_document(CLIENT_ID)
    assert cached is not None and cached.fresh_until == NOW + 600 and cached.stale_until == NOW + 7 * 24 * 3600
    world.clock.advance(1)
    world.directory.for_authorization(CLIENT_ID)
    assert world.fetcher.fetched == [CLIENT_ID, CLIENT_ID]


def test_the_hosts_cache_lifetime_is_bounded(world: World) -> None:
    world.fetcher.serve(CLIENT_ID, document(), max_age=0)
    world.directory.for_authorization(CLIENT_ID)
    cached = world.storage.get_document(CLIENT_ID)
    assert cached is not None and cached.fresh_until == NOW + 60
    world.fetcher.serve(CLIENT_ID, document(), max_age=10**8)
    world.clock.advance(61)
    world.directory.for_authorization(CLIENT_ID)
    cached = world.storage.get_document(CLIENT_ID)
    assert cached is not None and cached.fresh_until == NOW + 61 + 24 * 3600


def test_a_changed_document_updates_the_client(world: World) -> None:
    world.directory.for_authorization(CLIENT_ID)
    world.fetcher.serve(CLIENT_ID, document(client_name="App 2"))
    world.clock.advance(601)
    assert world.directory.for_authorization(CLIENT_ID).client_name == "App 2"
    stored = world.clients.get(CLIENT_ID)
    assert stored is not None and stored.client_name == "App 2" and stored.issued_at == NOW


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (MetadataDocumentUnavailable("the host answered 403"), "403"),
        (b"<html></html>", "not valid JSON"),
        ({"client_id": CLIENT_ID + "x", "client_name": "App", "redirect_uris": [REDIRECT]}, "client_id"),
        ({"client_id": CLIENT_ID, "redirect_uris": [REDIRECT]}, "client_name"),
        ({"client_id": CLIENT_ID, "client_name": "App", "redirect_uris": [REDIRECT], "client_secret": "x"}, "client_secret"),
        ({"client_id": CLIENT_ID, "client_name": "App", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}, "private_key_jwt"),
        ({"client_id": CLIENT_ID, "client_name": "App", "redirect_uris": ["http://app.example.com/cb"]}, "https"),
    ],
)
def test_an_unusable_document_is_an_error_page_at_authorize_and_never_cached(
    world: World, response: Any, reason: str
) -> None:
    world.fetcher.serve(CLIENT_ID, response)
    with pytest.raises(InvalidClient) as caught:
        world.authorization.start(world.authorize_params(_fake_registered(), redirect_uri=REDIRECT), browser_id="b")
    description = caught.value.description or ""
    assert "app.example.com" in description and reason in description
    assert world.storage.get_document(CLIENT_ID) is None
    assert world.clients.get(CLIENT_ID) is None
    assert world.storage.pending == {}


def _fake_registered() -> RegisteredClient:
    client = Client(
        client_id=CLIENT_ID,
        redirect_uris=(REDIRECT,),
        grant_types=("authorization_code",),
        response_types=("code",),
        token_endpoint_auth_method="none",
        issued_at=0,
    )
    return RegisteredClient(client=client, client_secret=None)


def test_unsupported_grant_types_are_ignored(world: World) -> None:
    world.fetcher.serve(CLIENT_ID, document(grant_types=["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"]))
    assert world.directory.for_authorization(CLIENT_ID).grant_types == ("authorization_code", "refresh_token")


# -- stale documents at the token endpoint only ---------------------------------------------------


@pytest.mark.parametrize("failure", [MetadataDocumentUnavailable("timed out"), b"not json"])
def test_a_refresh_uses_the_stale_document_when_the_host_fails(world: World, failure: Any) -> None:
    tokens = world.login(as_registered(world), redirect_uri=REDIRECT)
    world.fetcher.serve(CLIENT_ID, failure)
    world.clock.advance(3 * 24 * 3600)
    refreshed = world.refresh(token_client(world), tokens.refresh_token)
    assert refreshed.refresh_token
    # Never cached: the stale copy is still the one fetched first.
    cached = world.storage.get_document(CLIENT_ID)
    assert cached is not None and cached.fetched_at == NOW
    # /authorize needs a fresh document.
    with pytest.raises(InvalidClient):
        world.directory.for_authorization(CLIENT_ID)


def test_past_the_stale_bound_the_client_is_invalid_but_kept(world: World) -> None:
    tokens = world.login(as_registered(world), redirect_uri=REDIRECT)
    world.fetcher.serve(CLIENT_ID, MetadataDocumentUnavailable("the host answered 500"))
    world.clock.advance(7 * 24 * 3600)
    with pytest.raises(InvalidClient) as caught:
        token_client(world)
    assert "500" in (caught.value.description or "")
    # Expiry and failed fetches never delete the client or its grant; the purge takes the
    # document and the reaping of unused clients passes this kind by.
    world.clock.advance(200 * 24 * 3600)
    world.housekeeping.purge()
    assert world.storage.get_document(CLIENT_ID) is None
    assert world.clients.get(CLIENT_ID) is not None
    # The host is back: the same client, its refresh token still live for its own lifetime.
    world.fetcher.serve(CLIENT_ID, document())
    assert token_client(world).client.client_id == CLIENT_ID
    assert tokens.refresh_token


# -- Claude's pinned document ---------------------------------------------------------------------


def test_the_pinned_document_is_used_when_the_live_fetch_fails() -> None:
    world = make_world(pinned={CLAUDE_ID: CLAUDE_DOCUMENT})
    world.fetcher.serve(CLAUDE_ID, MetadataDocumentUnavailable("the host answered 403"))
    client = world.directory.for_authorization(CLAUDE_ID)
    assert client.client_name == "Claude" and client.redirect_uris == ("https://claude.ai/api/mcp/auth_callback",)
    assert world.fetcher.fetched == [CLAUDE_ID]
    assert world.storage.get_document(CLAUDE_ID) is None


def test_pinned_only_never_fetches_and_refuses_other_documents() -> None:
    world = make_world(pinned={CLAUDE_ID: CLAUDE_DOCUMENT}, metadata_documents=MetadataDocumentPolicy(pinned_only=True))
    world.fetcher.serve(CLIENT_ID, document())
    assert world.directory.for_authorization(CLAUDE_ID).client_name == "Claude"
    with pytest.raises(InvalidClient):
        world.directory.for_authorization(CLIENT_ID)
    assert world.fetcher.fetched == []


def test_the_host_policy_is_applied_before_any_fetch() -> None:
    world = make_world(metadata_documents=MetadataDocumentPolicy(allowed_hosts=("*.trusted.example",)))
    world.fetcher.serve(CLIENT_ID, document())
    with pytest.raises(InvalidClient):
        world.directory.for_authorization(CLIENT_ID)
    assert world.fetcher.fetched == []


def test_an_invalid_url_is_never_fetched(world: World) -> None:
    with pytest.raises(InvalidClient):
        world.directory.for_authorization("http://app.example.com/oauth/client.json")
    with pytest.raises(InvalidClient):
        world.directory.for_token("https://user@app.example.com/oauth/client.json")
    assert world.fetcher.fetched == []


# -- redirect URIs -------------------------------------------------------------------------------


def test_the_redirect_uri_must_be_the_documents_exactly(world: World) -> None:
    registered = as_registered(world)
    with pytest.raises(InvalidRequest):
        world.start(registered, redirect_uri=REDIRECT + "/other")
    with pytest.raises(InvalidRequest):
        world.start(registered, redirect_uri="https://APP.example.com/callback")


@pytest.mark.parametrize("listed", ["http://127.0.0.1/callback", "http://127.0.0.1:9/callback"])
def test_a_loopback_redirect_matches_on_any_port(world: World, listed: str) -> None:
    world.fetcher.serve(CLIENT_ID, document(redirect_uris=[listed]))
    prompt = world.start(as_registered(world), redirect_uri="http://127.0.0.1:43123/callback")
    assert prompt.request.redirect_uri == "http://127.0.0.1:43123/callback"


def test_the_allowlist_binds_documents_and_registrations() -> None:
    world = make_world(redirect_uri_allowlist=RedirectUriAllowlist(("https://claude.ai/api/mcp/auth_callback",)))
    world.fetcher.serve(CLIENT_ID, document())
    with pytest.raises(InvalidClient) as caught:
        world.directory.for_authorization(CLIENT_ID)
    assert "not among the redirect URIs" in (caught.value.description or "")
    with pytest.raises(InvalidRedirectUri):
        world.register()
    assert world.register(redirect_uris=["https://claude.ai/api/mcp/auth_callback"]).client.client_id


def test_the_allowlist_binds_clients_registered_before_it() -> None:
    world = make_world()
    registered = world.register()
    world.authorization._policy = replace(  # the operator restarts with an allowlist
        world.policy, redirect_uri_allowlist=RedirectUriAllowlist(("https://claude.ai/api/mcp/auth_callback",))
    )
    with pytest.raises(InvalidRequest) as caught:
        world.start(registered)
    assert "not among" in (caught.value.description or "")


def test_the_allowlist_does_not_bind_operator_clients() -> None:
    world = make_world(redirect_uri_allowlist=RedirectUriAllowlist(("https://claude.ai/api/mcp/auth_callback",)))
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[REDIRECT])
    operator = world.registration.create_operator_client(name="Org app", redirect_uris=[REDIRECT], public=True)
    assert world.start(operator, redirect_uri=REDIRECT).request.redirect_uri == REDIRECT


# -- registration policy -------------------------------------------------------------------------


def test_metadata_documents_mode_closes_registration_and_refuses_registered_clients() -> None:
    open_world = make_world()
    registered = open_world.register()
    world = make_world(client_registration=REGISTRATION_METADATA_DOCUMENTS)
    world.clients.add(registered.client)
    with pytest.raises(InvalidClientMetadata) as caught:
        world.register()
    assert "closed" in (caught.value.description or "")
    with pytest.raises(InvalidClient):
        world.start(registered)
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(ClientCredentials(client_id=registered.client.client_id, client_secret=None, method="none"))
    world.fetcher.serve(CLIENT_ID, document())
    assert world.directory.for_authorization(CLIENT_ID).kind == METADATA_DOCUMENT_CLIENT_KIND


def test_closed_mode_accepts_only_operator_clients() -> None:
    world = make_world(client_registration=REGISTRATION_CLOSED)
    world.fetcher.serve(CLIENT_ID, document())
    with pytest.raises(InvalidClient):
        world.directory.for_authorization(CLIENT_ID)
    assert world.fetcher.fetched == []
    with pytest.raises(InvalidClientMetadata):
        world.register()
    created = world.registration.create_operator_client(name="Claude (org)", redirect_uris=[REDIRECT], public=False)
    assert created.client_secret and created.client.is_operator_created
    tokens = world.login(created, redirect_uri=REDIRECT)
    assert tokens.access_token


def test_a_registered_client_id_that_looks_stored_cannot_pose_as_a_document(world: World) -> None:
    # A stored row of another kind under a URL id is never used as the document's client.
    world.clients.add(replace(_fake_registered().client, kind=DYNAMIC_CLIENT_KIND))
    with pytest.raises(InvalidClient):
        world.directory.for_authorization(CLIENT_ID)


# -- operator clients: errors before consent redirect; others get the page ----------------------


def test_only_operator_clients_get_errors_before_consent_as_a_redirect() -> None:
    world = make_world()
    operator = world.registration.create_operator_client(name="Org app", redirect_uris=[REDIRECT], public=True)
    with pytest.raises(AuthorizationRedirect) as redirected:
        world.start(operator, redirect_uri=REDIRECT, code_challenge_method="plain")
    assert redirected.value.redirect_uri == REDIRECT and redirected.value.error.error == "invalid_request"
    registered = world.register()
    with pytest.raises(RefusedAuthorizationRequest):
        world.start(registered, code_challenge_method="plain")
    world.fetcher.serve(CLIENT_ID, document())
    with pytest.raises(RefusedAuthorizationRequest):
        world.start(as_registered(world), redirect_uri=REDIRECT, code_challenge_method="plain")


def test_operator_clients_are_never_reaped() -> None:
    world = make_world()
    created = world.registration.create_operator_client(name="Org app", redirect_uris=[REDIRECT], public=False)
    world.clock.advance(400 * 24 * 3600)
    world.housekeeping.purge()
    assert world.clients.get(created.client.client_id) is not None


def test_operator_client_needs_valid_redirect_uris() -> None:
    world = make_world()
    with pytest.raises(InvalidRedirectUri):
        world.registration.create_operator_client(name="x", redirect_uris=["http://app.example.com/cb"], public=False)
    with pytest.raises(InvalidClientMetadata):
        world.registration.create_operator_client(name="  ", redirect_uris=[REDIRECT], public=False)


def test_the_code_is_sent_to_the_documents_redirect(world: World) -> None:
    prompt = world.start(as_registered(world), redirect_uri=REDIRECT)
    redirect = world.callback(world.approve(prompt))
    assert redirect.startswith(REDIRECT + "?") and query(redirect)["code"]


def test_the_token_endpoint_never_fetches_a_document_it_has_not_seen(world: World) -> None:
    with pytest.raises(InvalidClient):
        token_client(world)
    assert world.fetcher.fetched == []


# -- disabled clients (`clients disable`) --------------------------------------------------------


def test_a_disabled_document_client_is_refused_without_a_fetch(world: World) -> None:
    registered = as_registered(world)
    world.clock.advance(3600)  # the cached document is stale: a lookup would fetch it again
    fetches = len(world.fetcher.fetched)
    assert world.clients.disable(registered.client.client_id, world.clock.now())
    for find in (world.directory.for_authorization, world.directory.for_token):
        with pytest.raises(InvalidClient, match="this client is disabled"):
            find(CLIENT_ID)
    assert len(world.fetcher.fetched) == fetches
    # Enabled, it is found again, and a new document does not lift a later disable.
    assert world.clients.enable(CLIENT_ID)
    assert world.directory.for_authorization(CLIENT_ID).disabled_at is None
    world.clients.disable(CLIENT_ID, world.clock.now())
    world.fetcher.serve(CLIENT_ID, document(client_name="Renamed"), max_age=600)
    with pytest.raises(InvalidClient, match="this client is disabled"):
        world.directory.for_authorization(CLIENT_ID)
