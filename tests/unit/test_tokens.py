"""TokenService.exchange_code (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707) and ClientAuthenticator (RFC 6749 §2.3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    InvalidToken,
    UnauthorizedClient,
)
from mcp_oauth_bridge.domain.model import AccessToken, IssuedTokens, RefreshToken
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from mcp_oauth_bridge.domain.services.tokens import ClientCredentials

from .conftest import NOW, REDIRECT_URI, RESOURCE, SCOPES, VERIFIER, World

# ================================================================================================
# grant_type=authorization_code — success
# ================================================================================================


def test_exchange_issues_access_and_refresh_tokens(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client, scope="mcp:read")
    world.clock.advance(10)
    issued = world.exchange(public_client, code)

    assert issued == IssuedTokens(
        access_token=issued.access_token,
        expires_in=world.policy.access_token_ttl,
        scope="mcp:read",
        refresh_token=issued.refresh_token,
        token_type="Bearer",
    )
    assert issued.access_token.startswith("mob_at_")
    assert issued.refresh_token is not None and issued.refresh_token.startswith("mob_rt_")
    grant = world.only_grant()

    # Tokens are stored only under their keyed hash.
    assert list(world.storage.access_tokens) == [world.hasher.hash(issued.access_token)]
    assert list(world.storage.refresh_tokens) == [world.hasher.hash(issued.refresh_token)]
    assert world.access_record(issued.access_token) == AccessToken(
        token_hash=world.hasher.hash(issued.access_token),
        grant_id=grant.grant_id,
        client_id=public_client.client.client_id,
        scopes=("mcp:read",),
        resource=RESOURCE,
        issued_at=NOW + 10,
        expires_at=NOW + 10 + world.policy.access_token_ttl + 1,
    )
    assert world.refresh_record(issued.refresh_token) == RefreshToken(
        token_hash=world.hasher.hash(issued.refresh_token),
        grant_id=grant.grant_id,
        client_id=public_client.client.client_id,
        generation=0,
        scopes=("mcp:read",),
        resource=RESOURCE,
        issued_at=NOW + 10,
        # The refresh-token TTL, capped by GRANT_MAX_LIFETIME from sign-in.
        expires_at=min(NOW + 10 + world.policy.refresh_token_ttl, grant.created_at + world.policy.grant_max_lifetime),
    )
    # The code is marked redeemed, and the client is recorded as used.
    assert next(iter(world.storage.codes.values())).redeemed_at == NOW + 10
    stored_client = world.clients.get(public_client.client.client_id)
    assert stored_client is not None and stored_client.last_used_at == NOW + 10


def test_issued_access_token_authenticates_at_the_resource(world: World, public_client: RegisteredClient) -> None:
    issued = world.login(public_client)
    context = world.bearer.authenticate(issued.access_token)
    assert context.client_id == public_client.client.client_id
    assert context.subject == "user-1"
    assert context.scopes == SCOPES
    assert context.resource == RESOURCE


def test_exchange_with_omitted_redirect_uri_and_resource_works(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    issued = world.exchange(public_client, code, redirect_uri=None, resource=None)
    assert issued.access_token.startswith("mob_at_")


def test_exchange_accepts_resource_with_trailing_slash(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    assert world.exchange(public_client, code, resource=RESOURCE + "/").scope == " ".join(SCOPES)


def test_loopback_code_needs_the_redirect_uri_with_the_port_it_was_issued_for(world: World) -> None:
    registered = world.register(redirect_uris=["http://127.0.0.1/cb"])
    code = world.authorize_and_get_code(registered, redirect_uri="http://127.0.0.1:41000/cb")
    with pytest.raises(InvalidGrant):
        world.exchange(registered, code, redirect_uri="http://127.0.0.1/cb")


def test_loopback_code_exchanged_with_the_same_port(world: World) -> None:
    registered = world.register(redirect_uris=["http://127.0.0.1/cb"])
    code = world.authorize_and_get_code(registered, redirect_uri="http://127.0.0.1:41000/cb")
    assert world.exchange(registered, code, redirect_uri="http://127.0.0.1:41000/cb").access_token


def test_confidential_client_exchange(world: World, confidential_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(confidential_client)
    client = world.client_auth.authenticate(
        ClientCredentials(
            client_id=confidential_client.client.client_id,
            client_secret=confidential_client.client_secret,
            method="client_secret_post",
        )
    )
    issued = world.token_service.exchange_code(
        client, code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER, resource=RESOURCE
    )
    assert issued.refresh_token is not None


def test_client_without_refresh_grant_gets_no_refresh_token(world: World) -> None:
    registered = world.register(grant_types=["authorization_code"])
    issued = world.login(registered)
    assert issued.refresh_token is None
    assert world.storage.refresh_tokens == {}
    assert len(world.storage.access_tokens) == 1


# ================================================================================================
# grant_type=authorization_code — failures
# ================================================================================================


def test_wrong_pkce_verifier_is_invalid_grant(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code, code_verifier="a" * 43)
    assert world.storage.access_tokens == {}
    assert world.storage.refresh_tokens == {}


@pytest.mark.parametrize("verifier", [VERIFIER[:-1], VERIFIER + "!", VERIFIER.upper()])
def test_near_miss_pkce_verifier_is_invalid_grant(world: World, public_client: RegisteredClient, verifier: str) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code, code_verifier=verifier)
    assert world.storage.access_tokens == {}


def test_challenge_itself_as_verifier_is_invalid_grant(world: World, public_client: RegisteredClient) -> None:
    # A "plain" downgrade: presenting the challenge as the verifier must not work.
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code, code_verifier="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


@pytest.mark.parametrize("verifier", [None, ""])
def test_missing_verifier_is_invalid_request_and_keeps_the_code(
    world: World, public_client: RegisteredClient, verifier: str | None
) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidRequest):
        world.exchange(public_client, code, code_verifier=verifier)
    assert world.storage.access_tokens == {}
    # A malformed request does not spend the code.
    assert world.exchange(public_client, code).access_token


@pytest.mark.parametrize("code", [None, ""])
def test_missing_code_is_invalid_request(world: World, public_client: RegisteredClient, code: str | None) -> None:
    with pytest.raises(InvalidRequest):
        world.token_service.exchange_code(
            public_client.client, code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER, resource=RESOURCE
        )


def test_unknown_code_is_invalid_grant(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, "mob_ac_unknown")


def test_redeemed_code_replay_is_invalid_grant_and_revokes_the_tokens_issued_from_it(
    world: World, public_client: RegisteredClient
) -> None:
    code = world.authorize_and_get_code(public_client)
    issued = world.exchange(public_client, code)
    assert issued.refresh_token is not None
    assert world.bearer.authenticate(issued.access_token)

    world.clock.advance(3)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code)

    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    assert not world.active(public_client, issued.access_token)
    assert not world.active(public_client, issued.refresh_token)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, issued.refresh_token)
    assert world.only_grant().revoked_at == NOW + 3
    assert world.access_record(issued.access_token).revoked_at == NOW + 3
    assert world.refresh_record(issued.refresh_token).revoked_at == NOW + 3
    # Only one set of tokens was ever issued.
    assert len(world.storage.access_tokens) == 1


def test_redeemed_code_replay_with_wrong_verifier_still_revokes(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    issued = world.exchange(public_client, code)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code, code_verifier="b" * 43)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)


def test_replay_does_not_touch_other_grants(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    world.exchange(public_client, code)
    other = world.login(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code)
    assert world.bearer.authenticate(other.access_token).subject == "user-1"


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://client.example/other", REDIRECT_URI + "/", "https://evil.example/callback", ""],
)
def test_mismatched_redirect_uri_is_invalid_grant(world: World, public_client: RegisteredClient, redirect_uri: str) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code, redirect_uri=redirect_uri)
    assert world.storage.access_tokens == {}


def test_redirect_uri_must_be_the_one_authorized_not_just_a_registered_one(world: World) -> None:
    registered = world.register(redirect_uris=[REDIRECT_URI, "https://client.example/other"])
    code = world.authorize_and_get_code(registered, redirect_uri="https://client.example/other")
    with pytest.raises(InvalidGrant):
        world.exchange(registered, code, redirect_uri=REDIRECT_URI)


def test_code_of_another_client_is_invalid_grant_and_stays_usable_by_its_own(
    world: World, public_client: RegisteredClient
) -> None:
    other = world.register()
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidGrant):
        world.exchange(other, code)
    assert world.storage.access_tokens == {}
    assert next(iter(world.storage.codes.values())).redeemed_at is None
    # The client the code was issued to still gets its tokens.
    assert world.exchange(public_client, code).access_token
    assert not world.only_grant().is_revoked


@pytest.mark.parametrize(
    "wrong",
    [{"code_verifier": "b" * 43}, {"redirect_uri": "https://client.example/other"}, {"resource": "https://other.example/mcp"}],
)
def test_a_failed_exchange_does_not_burn_the_code(
    world: World, public_client: RegisteredClient, wrong: dict[str, str]
) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises((InvalidGrant, InvalidTarget)):
        world.exchange(public_client, code, **wrong)  # type: ignore[arg-type]
    assert world.exchange(public_client, code).access_token
    assert not world.only_grant().is_revoked


def test_a_redeemed_code_presented_by_another_client_revokes_nothing(
    world: World, public_client: RegisteredClient
) -> None:
    code = world.authorize_and_get_code(public_client)
    issued = world.exchange(public_client, code)
    with pytest.raises(InvalidGrant):
        world.exchange(world.register(), code)
    assert world.bearer.authenticate(issued.access_token).client_id == public_client.client.client_id


def test_a_redemption_that_loses_the_race_is_a_replay(world: World, public_client: RegisteredClient) -> None:
    # Another request redeemed the code between this one's checks and its conditional write.
    code = world.authorize_and_get_code(public_client)
    code_hash = world.hasher.hash(code)
    read = world.storage.get_code

    def read_then_lose_the_race(key: str) -> object:
        found = read(key)
        assert world.storage.redeem_code(key, NOW)  # the other request's redemption
        return found

    world.storage.get_code = read_then_lose_the_race  # type: ignore[method-assign,assignment]
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code)
    assert world.storage.codes[code_hash].redeemed_at == NOW
    assert world.storage.access_tokens == {}
    assert world.only_grant().is_revoked


def test_expired_code_is_invalid_grant(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    world.clock.advance(world.policy.authorization_code_ttl)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code)
    assert world.storage.access_tokens == {}


def test_code_just_before_expiry_is_accepted(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    world.clock.advance(world.policy.authorization_code_ttl - 1)
    assert world.exchange(public_client, code).access_token


def test_code_of_a_revoked_grant_is_invalid_grant(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    world.storage.revoke_grant(world.only_grant().grant_id, NOW)
    with pytest.raises(InvalidGrant):
        world.exchange(public_client, code)
    assert world.storage.access_tokens == {}


@pytest.mark.parametrize("resource", ["https://other.example/mcp", RESOURCE + "/x", "https://auth.example.com", ""])
def test_resource_mismatch_is_invalid_target(world: World, public_client: RegisteredClient, resource: str) -> None:
    code = world.authorize_and_get_code(public_client)
    with pytest.raises(InvalidTarget):
        world.exchange(public_client, code, resource=resource)
    assert world.storage.access_tokens == {}


def test_client_not_allowed_the_code_grant_is_unauthorized(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    restricted = replace(public_client.client, grant_types=("refresh_token",))
    with pytest.raises(UnauthorizedClient):
        world.token_service.exchange_code(
            restricted, code=code, redirect_uri=REDIRECT_URI, code_verifier=VERIFIER, resource=RESOURCE
        )
    assert world.storage.access_tokens == {}


# ================================================================================================
# ClientAuthenticator
# ================================================================================================


def credentials(registered: RegisteredClient, secret: str | None, method: str = "client_secret_post") -> ClientCredentials:
    return ClientCredentials(client_id=registered.client.client_id, client_secret=secret, method=method)


def test_unknown_client_is_invalid_client(world: World) -> None:
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(ClientCredentials(client_id="mob_client_nope", client_secret="x", method="client_secret_post"))


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_confidential_client_with_its_secret_is_authenticated(
    world: World, confidential_client: RegisteredClient, method: str
) -> None:
    client = world.client_auth.authenticate(credentials(confidential_client, confidential_client.client_secret, method))
    assert client == confidential_client.client


@pytest.mark.parametrize("secret", ["wrong", "", None])
def test_confidential_client_with_wrong_or_missing_secret_is_invalid_client(
    world: World, confidential_client: RegisteredClient, secret: str | None
) -> None:
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(credentials(confidential_client, secret))


def test_confidential_client_with_the_secret_hash_is_invalid_client(world: World, confidential_client: RegisteredClient) -> None:
    # A leaked database row is not a credential.
    assert confidential_client.client.secret_hash is not None
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(credentials(confidential_client, confidential_client.client.secret_hash))


def test_secret_of_another_client_is_invalid_client(world: World, confidential_client: RegisteredClient) -> None:
    other = world.register_confidential()
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(credentials(confidential_client, other.client_secret))


def test_confidential_client_without_stored_hash_is_invalid_client(world: World, confidential_client: RegisteredClient) -> None:
    world.clients.add(replace(confidential_client.client, secret_hash=None))
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(credentials(confidential_client, confidential_client.client_secret))


def test_public_client_sending_a_secret_is_invalid_client(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(InvalidClient):
        world.client_auth.authenticate(credentials(public_client, "some-secret"))


def test_public_client_without_secret_is_identified(world: World, public_client: RegisteredClient) -> None:
    client = world.client_auth.authenticate(credentials(public_client, None, method="none"))
    assert client == public_client.client
