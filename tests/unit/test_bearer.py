"""BearerAuthenticator: RFC 6750 §3.1 token checks and the RFC 8707 audience."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.errors import InsufficientScope, InvalidToken
from mcp_oauth_bridge.domain.model import AccessContext, AccessToken, IssuedTokens
from mcp_oauth_bridge.domain.services.bearer import BearerAuthenticator
from mcp_oauth_bridge.domain.services.registration import RegisteredClient

from .conftest import NOW, RESOURCE, SCOPES, World


@pytest.fixture
def issued(world: World, public_client: RegisteredClient) -> IssuedTokens:
    return world.login(public_client)


def test_valid_token_gives_the_grant_and_scopes(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    context = world.bearer.authenticate(issued.access_token)
    grant = world.only_grant()
    assert context == AccessContext(
        grant=grant,
        client_id=public_client.client.client_id,
        scopes=SCOPES,
        resource=RESOURCE,
        # Valid through the second of its announced expiry (whole-second clock).
        expires_at=NOW + world.policy.access_token_ttl + 1,
    )
    assert context.subject == "user-1"
    upstream = world.storage.get_upstream_tokens(context.grant.grant_id)
    assert upstream is not None and upstream.access_token == "upstream-at"


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_invalid(world: World, issued: IssuedTokens, token: str | None) -> None:
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(token)


def test_token_without_access_prefix_is_invalid_even_if_stored(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    # A refresh token is not an access token.
    assert issued.refresh_token is not None
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.refresh_token)
    # Even a stored row is refused when the presented value does not carry the access prefix.
    record = world.access_record(issued.access_token)
    world.storage.add_access_token(replace(record, token_hash=world.hasher.hash("opaque-without-prefix")))
    with pytest.raises(InvalidToken):
        world.bearer.authenticate("opaque-without-prefix")


def test_unknown_token_is_invalid(world: World, issued: IssuedTokens) -> None:
    with pytest.raises(InvalidToken):
        world.bearer.authenticate("mob_at_" + "9" * 43)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token + "x")


def test_revoked_token_is_invalid(world: World, issued: IssuedTokens) -> None:
    world.storage.revoke_access_token(world.hasher.hash(issued.access_token), NOW)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)


def test_expired_token_is_invalid(world: World, issued: IssuedTokens) -> None:
    # It lives at least the announced expires_in, and not a second longer.
    world.clock.advance(world.policy.access_token_ttl)
    assert world.bearer.authenticate(issued.access_token)
    world.clock.advance(1)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)


def test_token_of_a_revoked_grant_is_invalid(world: World, issued: IssuedTokens) -> None:
    # Revoke only the grant row, leaving the token row active, so the grant check itself is tested.
    grant = world.only_grant()
    world.storage.grants[grant.grant_id] = replace(grant, revoked_at=NOW)
    assert world.access_record(issued.access_token).revoked_at is None
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)


@pytest.mark.parametrize("resource", ["https://other.example/mcp", RESOURCE + "/", "https://auth.example.com"])
def test_token_for_another_resource_is_invalid(world: World, issued: IssuedTokens, resource: str) -> None:
    value = "mob_at_other-audience-token-000000000000000000000"
    record = world.access_record(issued.access_token)
    world.storage.add_access_token(replace(record, token_hash=world.hasher.hash(value), resource=resource))
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(value)


def test_token_constructed_directly_for_this_resource_is_valid(world: World, issued: IssuedTokens) -> None:
    # The control for the test above: the same construction with the right resource works.
    grant = world.only_grant()
    value = "mob_at_directly-stored-token-0000000000000000000"
    world.storage.add_access_token(
        AccessToken(
            token_hash=world.hasher.hash(value),
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            scopes=("mcp:read",),
            resource=RESOURCE,
            issued_at=NOW,
            expires_at=NOW + 10,
        )
    )
    assert world.bearer.authenticate(value).scopes == ("mcp:read",)


def test_token_hashed_under_another_key_is_not_found(world: World, issued: IssuedTokens) -> None:
    from mcp_oauth_bridge.domain.security import TokenHasher

    other = BearerAuthenticator(
        access_tokens=world.storage, clock=world.clock, hasher=TokenHasher(b"x" * 32), policy=world.policy
    )
    with pytest.raises(InvalidToken):
        other.authenticate(issued.access_token)


# -- scopes --------------------------------------------------------------------------------------


def test_require_scopes_passes_when_all_are_granted(world: World, issued: IssuedTokens) -> None:
    context = world.bearer.authenticate(issued.access_token)
    BearerAuthenticator.require_scopes(context, ("mcp:read",))
    BearerAuthenticator.require_scopes(context, SCOPES)
    BearerAuthenticator.require_scopes(context, ())


def test_require_scopes_raises_insufficient_scope_with_required_scopes(world: World, public_client: RegisteredClient) -> None:
    issued = world.login(public_client, scope="mcp:read")
    context = world.bearer.authenticate(issued.access_token)
    with pytest.raises(InsufficientScope) as excinfo:
        world.bearer.require_scopes(context, ("mcp:read", "mcp:write"))
    assert excinfo.value.required_scopes == ("mcp:read", "mcp:write")
    assert excinfo.value.error == "insufficient_scope"


def test_narrowed_refresh_gives_a_token_that_lacks_the_dropped_scope(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    assert issued.refresh_token is not None
    narrowed = world.refresh(public_client, issued.refresh_token, scope="mcp:read")
    context = world.bearer.authenticate(narrowed.access_token)
    with pytest.raises(InsufficientScope):
        BearerAuthenticator.require_scopes(context, ("mcp:write",))
