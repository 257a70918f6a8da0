"""Token revocation (RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.errors import InvalidGrant, InvalidRequest, InvalidToken
from mcp_oauth_bridge.domain.model import Introspection, IssuedTokens
from mcp_oauth_bridge.domain.services.registration import RegisteredClient

from .conftest import ISSUER, NOW, RESOURCE, SCOPES, World


@pytest.fixture
def issued(world: World, public_client: RegisteredClient) -> IssuedTokens:
    return world.login(public_client)


def rt(tokens: IssuedTokens) -> str:
    assert tokens.refresh_token is not None
    return tokens.refresh_token


def revoke(world: World, client: RegisteredClient, token: str | None, hint: str | None = None) -> None:
    world.token_service.revoke(client.client, token=token, token_type_hint=hint)


def introspect(world: World, client: RegisteredClient, token: str | None, hint: str | None = None) -> Introspection:
    return world.token_service.introspect(client.client, token=token, token_type_hint=hint)


# ================================================================================================
# RFC 7009 revocation
# ================================================================================================


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "unknown_hint"])
def test_revoking_an_access_token_leaves_the_refresh_token_working(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, hint: str | None
) -> None:
    world.clock.advance(7)
    revoke(world, public_client, issued.access_token, hint)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    assert world.access_record(issued.access_token).revoked_at == NOW + 7
    assert not world.only_grant().is_revoked
    new = world.refresh(public_client, rt(issued))
    assert world.bearer.authenticate(new.access_token).subject == "user-1"


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_revoking_a_refresh_token_revokes_the_whole_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, hint: str | None
) -> None:
    world.clock.advance(7)
    revoke(world, public_client, rt(issued), hint)
    assert world.only_grant().revoked_at == NOW + 7
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    assert not world.active(public_client, rt(issued))
    assert not world.active(public_client, issued.access_token)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))


def test_revoking_a_rotated_refresh_token_revokes_the_grant_and_its_newest_tokens(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    newest = world.refresh(public_client, rt(issued))
    revoke(world, public_client, rt(issued))
    assert world.only_grant().is_revoked
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(newest.access_token)
    assert not world.active(public_client, rt(newest))


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_another_clients_token_is_not_revoked(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, kind: str
) -> None:
    other = world.register()
    token = issued.access_token if kind == "access" else rt(issued)
    revoke(world, other, token)  # answered like an unknown token: no error
    assert world.bearer.authenticate(issued.access_token).client_id == public_client.client.client_id
    assert world.active(public_client, rt(issued))
    assert not world.only_grant().is_revoked
    assert world.access_record(issued.access_token).revoked_at is None
    assert world.refresh_record(rt(issued)).revoked_at is None


def test_unknown_token_is_not_an_error(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    revoke(world, public_client, "mob_at_unknown")
    revoke(world, public_client, "not-even-ours", "refresh_token")
    assert world.bearer.authenticate(issued.access_token)
    assert world.active(public_client, rt(issued))


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_invalid_request(world: World, public_client: RegisteredClient, token: str | None) -> None:
    with pytest.raises(InvalidRequest):
        revoke(world, public_client, token)


def test_revoking_twice_is_harmless(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    revoke(world, public_client, issued.access_token)
    world.clock.advance(5)
    revoke(world, public_client, issued.access_token)
    assert world.access_record(issued.access_token).revoked_at == NOW


def test_revoking_one_grant_leaves_other_grants_alone(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    other_login = world.login(public_client)
    revoke(world, public_client, rt(issued))
    assert world.bearer.authenticate(other_login.access_token).client_id == public_client.client.client_id
    assert world.active(public_client, rt(other_login))


# ================================================================================================
# RFC 7662 introspection
# ================================================================================================


def test_active_access_token_fields(world: World, public_client: RegisteredClient) -> None:
    issued = world.login(public_client, scope="mcp:read")
    world.clock.advance(30)
    result = introspect(world, public_client, issued.access_token)
    assert result.as_dict() == {
        "active": True,
        "scope": "mcp:read",
        "client_id": public_client.client.client_id,
        "username": "alice",
        "token_type": "Bearer",
        "exp": NOW + world.policy.access_token_ttl + 1,
        "iat": NOW,
        "sub": "user-1",
        "aud": RESOURCE,
        "iss": ISSUER,
    }


def test_active_refresh_token_fields(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    result = introspect(world, public_client, rt(issued), "refresh_token")
    assert result.as_dict() == {
        "active": True,
        "scope": " ".join(SCOPES),
        "client_id": public_client.client.client_id,
        "username": "alice",
        "token_type": "refresh_token",
        "exp": NOW + world.policy.refresh_token_ttl,
        "iat": NOW,
        "sub": "user-1",
        "aud": RESOURCE,
        "iss": ISSUER,
    }


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "bogus"])
def test_hint_only_changes_the_lookup_order(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, hint: str | None
) -> None:
    assert introspect(world, public_client, issued.access_token, hint).token_type == "Bearer"
    assert introspect(world, public_client, rt(issued), hint).token_type == "refresh_token"


def test_username_falls_back_to_email_and_is_omitted_without_either(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    grant = world.only_grant()
    world.storage.grants[grant.grant_id] = replace(grant, claims={"email": "alice@example.com"})
    assert introspect(world, public_client, issued.access_token).username == "alice@example.com"
    world.storage.grants[grant.grant_id] = replace(grant, claims={})
    result = introspect(world, public_client, issued.access_token).as_dict()
    assert result["active"] is True
    assert "username" not in result


def assert_inactive(result: Introspection) -> None:
    assert result.as_dict() == {"active": False}
    assert result == Introspection(active=False)


def test_inactive_introspection_reveals_nothing_even_if_fields_are_set() -> None:
    # RFC 7662 §2.2: the model itself guarantees it, whatever a service fills in.
    result = Introspection(active=False, scope="mcp:read", client_id="c", username="alice", sub="user-1", exp=1, iss="x")
    assert result.as_dict() == {"active": False}


def test_unknown_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    assert_inactive(introspect(world, public_client, "mob_at_unknown"))


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_another_clients_token_is_inactive(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, kind: str
) -> None:
    other = world.register()
    token = issued.access_token if kind == "access" else rt(issued)
    assert_inactive(introspect(world, other, token))
    assert introspect(world, public_client, token).active


def test_expired_access_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    world.clock.advance(world.policy.access_token_ttl)
    assert introspect(world, public_client, issued.access_token).active
    world.clock.advance(1)
    assert_inactive(introspect(world, public_client, issued.access_token))


def test_expired_refresh_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    world.clock.advance(world.policy.refresh_token_ttl)
    assert_inactive(introspect(world, public_client, rt(issued)))


def test_rotated_refresh_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    new = world.refresh(public_client, rt(issued))
    assert_inactive(introspect(world, public_client, rt(issued)))
    assert introspect(world, public_client, rt(new)).active


def test_revoked_access_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    revoke(world, public_client, issued.access_token)
    assert_inactive(introspect(world, public_client, issued.access_token))
    assert introspect(world, public_client, rt(issued)).active


def test_revoked_refresh_token_is_inactive(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    record = world.refresh_record(rt(issued))
    world.storage.refresh_tokens[record.token_hash] = replace(record, revoked_at=NOW)
    assert_inactive(introspect(world, public_client, rt(issued)))


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_tokens_of_a_revoked_grant_are_inactive(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, kind: str
) -> None:
    # Revoke only the grant row, so the grant check itself is what is tested.
    grant = world.only_grant()
    world.storage.grants[grant.grant_id] = replace(grant, revoked_at=NOW)
    token = issued.access_token if kind == "access" else rt(issued)
    assert_inactive(introspect(world, public_client, token))


@pytest.mark.parametrize("token", [None, ""])
def test_introspection_without_token_is_invalid_request(world: World, public_client: RegisteredClient, token: str | None) -> None:
    with pytest.raises(InvalidRequest):
        introspect(world, public_client, token)
