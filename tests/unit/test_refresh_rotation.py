"""grant_type=refresh_token (RFC 6749 §6) with rotation, a short grace window for retries, and
revocation of the whole grant on replay (DESIGN.md, flow step 5)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    UnauthorizedClient,
)
from mcp_oauth_bridge.domain.model import IssuedTokens
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.refresh_tokens import RefreshTokenName, parse_refresh_token
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.domain.services.registration import RegisteredClient

from .conftest import ISSUER, NOW, RESOURCE, SCOPES, World, build_world


@pytest.fixture
def issued(world: World, public_client: RegisteredClient) -> IssuedTokens:
    return world.login(public_client)


def rt(tokens: IssuedTokens) -> str:
    assert tokens.refresh_token is not None
    return tokens.refresh_token


def assert_grant_fully_revoked(world: World, client: RegisteredClient, *token_sets: IssuedTokens) -> None:
    assert world.only_grant().is_revoked
    for tokens in token_sets:
        with pytest.raises(InvalidToken):
            world.bearer.authenticate(tokens.access_token)
        assert not world.active(client, tokens.access_token)
        assert not world.active(client, rt(tokens))
    assert all(t.revoked_at is not None for t in world.storage.access_tokens.values())
    assert all(t.revoked_at is not None for t in world.storage.refresh_tokens.values())


# -- rotation ------------------------------------------------------------------------------------


def test_refresh_issues_new_tokens_and_rotates_the_refresh_token(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    world.clock.advance(100)
    new = world.refresh(public_client, rt(issued))

    assert new.access_token != issued.access_token
    assert rt(new) != rt(issued)
    assert new.scope == " ".join(SCOPES)
    assert new.expires_in == world.policy.access_token_ttl
    old_record = world.refresh_record(rt(issued))
    assert old_record.rotated_at == NOW + 100
    assert old_record.revoked_at is None
    assert old_record.generation == 0
    new_record = world.refresh_record(rt(new))
    assert new_record.generation == 1
    assert new_record.issued_at == NOW + 100
    # The refresh-token TTL, capped by GRANT_MAX_LIFETIME from sign-in (both 30 days by default).
    assert new_record.expires_at == min(NOW + 100 + world.policy.refresh_token_ttl, NOW + world.policy.grant_max_lifetime)
    assert new_record.rotated_at is None
    assert world.access_record(new.access_token).expires_at == NOW + 100 + world.policy.access_token_ttl + 1
    # The old refresh token is no longer current; the new one is.
    assert not world.active(public_client, rt(issued))
    assert world.active(public_client, rt(new))
    stored = world.clients.get(public_client.client.client_id)
    assert stored is not None and stored.last_used_at == NOW + 100


def test_refresh_tokens_name_their_grant_and_generation(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    grant_id = world.only_grant().grant_id
    assert parse_refresh_token(world.hasher, rt(issued)) == RefreshTokenName(grant_id=grant_id, generation=0)
    second = world.refresh(public_client, rt(issued))
    assert parse_refresh_token(world.hasher, rt(second)) == RefreshTokenName(grant_id=grant_id, generation=1)
    # The name is authenticated: under another key, or with any character changed, it is nobody's.
    assert parse_refresh_token(TokenHasher(b"another-key-of-at-least-32-bytes!!"), rt(second)) is None
    for index in range(len("mob_rt_"), len(rt(second))):
        forged = rt(second)[:index] + ("A" if rt(second)[index] != "A" else "B") + rt(second)[index + 1:]
        assert parse_refresh_token(world.hasher, forged) is None


def test_old_access_token_stays_valid_until_its_expiry(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    world.clock.advance(100)
    new = world.refresh(public_client, rt(issued))
    assert world.bearer.authenticate(issued.access_token).expires_at == NOW + world.policy.access_token_ttl + 1
    assert world.bearer.authenticate(new.access_token).expires_at == NOW + 100 + world.policy.access_token_ttl + 1
    world.clock.advance(world.policy.access_token_ttl - 100 + 1)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    assert world.bearer.authenticate(new.access_token).client_id == public_client.client.client_id


def test_rotation_keeps_only_the_current_token_and_the_one_it_replaced(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    current = issued
    for _ in range(5):
        world.clock.advance(world.policy.refresh_grace_period + 1)
        previous, current = current, world.refresh(public_client, rt(current))
    assert world.active(public_client, rt(current))
    assert set(world.storage.refresh_tokens) == {world.hasher.hash(rt(previous)), world.hasher.hash(rt(current))}
    assert world.refresh_record(rt(current)).generation == 5
    assert not world.only_grant().is_revoked


def test_storage_per_grant_stays_constant_over_thirty_days_of_hourly_refreshes(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    current = issued
    # Up to the last hour before GRANT_MAX_LIFETIME (30 days) ends the grant.
    for _ in range(30 * 24 - 1):
        world.clock.advance(3600)
        current = world.refresh(public_client, rt(current))
        # The rotated token, the current one; the access tokens of the last hour or two (expired
        # ones are purged at most every purge_interval).
        assert len(world.storage.refresh_tokens) == 2
        assert len(world.storage.access_tokens) <= 3
    assert world.refresh_record(rt(current)).generation == 719
    assert world.bearer.authenticate(current.access_token).client_id == public_client.client.client_id


def test_a_token_of_the_previous_format_is_rotated_into_the_new_one(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    # Refresh tokens issued before tokens named their grant (``mob_rt_`` + random) are stored
    # at generation 0 by the upgrade and keep working.
    record = world.refresh_record(rt(issued))
    legacy = "mob_rt_" + "L" * 43
    del world.storage.refresh_tokens[record.token_hash]
    world.storage.refresh_tokens[world.hasher.hash(legacy)] = replace(record, token_hash=world.hasher.hash(legacy))
    new = world.refresh(public_client, legacy)
    assert parse_refresh_token(world.hasher, rt(new)) == RefreshTokenName(grant_id=world.only_grant().grant_id, generation=1)
    assert world.refresh(public_client, rt(new)).access_token


# -- the grace window: one retry, not a relay ----------------------------------------------------


@pytest.mark.parametrize("kept", ["first", "second"])
def test_a_lost_response_is_retried_once_and_either_answer_works(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, kept: str
) -> None:
    world.clock.advance(10)
    first = world.refresh(public_client, rt(issued))  # the response never reached the client
    world.clock.advance(world.policy.refresh_grace_period)  # still inside the window (inclusive)
    second = world.refresh(public_client, rt(issued))

    assert rt(second) not in (rt(issued), rt(first))
    assert world.refresh_record(rt(second)).generation == world.refresh_record(rt(first)).generation == 1
    assert world.refresh_record(rt(issued)).retried_at == NOW + 10 + world.policy.refresh_grace_period
    # Both successors stay valid until one of them is used.
    assert world.active(public_client, rt(first)) and world.active(public_client, rt(second))
    assert world.bearer.authenticate(first.access_token) and world.bearer.authenticate(second.access_token)
    used, other = (first, second) if kept == "first" else (second, first)
    world.clock.advance(1)
    newest = world.refresh(public_client, rt(used))
    assert not world.only_grant().is_revoked
    # Then the other one is a replay.
    assert not world.active(public_client, rt(other))
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(other))
    assert_grant_fully_revoked(world, public_client, issued, first, second, newest)


def test_a_double_refresh_in_the_same_second_keeps_the_connection(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    # Claude sometimes refreshes twice at once; whichever answer it keeps goes on working.
    answers = [world.refresh(public_client, rt(issued)), world.refresh(public_client, rt(issued))]
    current = answers[1]
    for _ in range(3):
        world.clock.advance(world.policy.refresh_grace_period + 1)
        current = world.refresh(public_client, rt(current))
    assert not world.only_grant().is_revoked


def test_a_third_presentation_within_grace_revokes_the_whole_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    first = world.refresh(public_client, rt(issued))
    second = world.refresh(public_client, rt(issued))
    world.clock.advance(1)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert_grant_fully_revoked(world, public_client, issued, first, second)
    assert world.only_grant().revoked_at == NOW + 1
    # Even the newest refresh tokens are dead now.
    for token in (first, second):
        with pytest.raises(InvalidGrant):
            world.refresh(public_client, rt(token))


def test_replay_after_the_successor_was_used_revokes_the_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    successor = world.refresh(public_client, rt(issued))
    newest = world.refresh(public_client, rt(successor))
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))  # still within the grace window
    assert_grant_fully_revoked(world, public_client, issued, successor, newest)


def test_replay_after_the_grace_window_revokes_the_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    successor = world.refresh(public_client, rt(issued))
    world.clock.advance(world.policy.refresh_grace_period + 1)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert_grant_fully_revoked(world, public_client, issued, successor)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(successor))


def test_replay_of_a_token_no_longer_stored_revokes_the_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    tokens = [issued]
    for _ in range(3):
        world.clock.advance(world.policy.refresh_grace_period + 1)
        tokens.append(world.refresh(public_client, rt(tokens[-1])))
    # Generation 0 was deleted two rotations ago; its tag still says it is this grant's.
    assert world.hasher.hash(rt(issued)) not in world.storage.refresh_tokens
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert_grant_fully_revoked(world, public_client, *tokens)


@pytest.mark.parametrize("thief_first", [False, True])
def test_a_thief_and_the_owner_alternating_inside_the_grace_are_caught_at_the_second_round(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, thief_first: bool
) -> None:
    stolen = rt(issued)
    owner = world.refresh(public_client, rt(issued))
    thief = world.refresh(public_client, stolen)  # accepted: it looks like a retry
    world.clock.advance(5)
    first, second = (thief, owner) if thief_first else (owner, thief)
    newest = world.refresh(public_client, rt(first))
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(second))
    assert_grant_fully_revoked(world, public_client, issued, owner, thief, newest)


def test_a_forged_token_naming_the_grant_revokes_nothing(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    world.refresh(public_client, rt(issued))
    world.clock.advance(world.policy.refresh_grace_period + 1)
    grant_part = rt(issued)[len("mob_rt_"):].split(".")[0]
    forged = f"mob_rt_{grant_part}.0.{'x' * 43}.{'A' * 22}"
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, forged)
    assert not world.only_grant().is_revoked


def test_an_old_token_presented_by_another_client_revokes_nothing(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    current = issued
    for _ in range(2):
        world.clock.advance(world.policy.refresh_grace_period + 1)
        current = world.refresh(public_client, rt(current))
    other = world.register()
    with pytest.raises(InvalidGrant):
        world.refresh(other, rt(issued))
    assert not world.only_grant().is_revoked
    assert world.refresh(public_client, rt(current)).access_token


def test_zero_grace_period_revokes_on_any_replay() -> None:
    world = build_world(ServerPolicy(issuer=ISSUER, resource=RESOURCE, scopes_supported=SCOPES, refresh_grace_period=0))
    registered = world.register()
    issued = world.login(registered)
    successor = world.refresh(registered, rt(issued))
    world.clock.advance(1)
    with pytest.raises(InvalidGrant):
        world.refresh(registered, rt(issued))
    assert_grant_fully_revoked(world, registered, issued, successor)


# -- scope ---------------------------------------------------------------------------------------


def test_scope_may_narrow(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    narrowed = world.refresh(public_client, rt(issued), scope="mcp:read")
    assert narrowed.scope == "mcp:read"
    assert world.access_record(narrowed.access_token).scopes == ("mcp:read",)
    assert world.bearer.authenticate(narrowed.access_token).scopes == ("mcp:read",)
    # RFC 6749 §6: the refresh token keeps the originally granted scope.
    assert world.refresh_record(rt(narrowed)).scopes == SCOPES
    assert world.refresh(public_client, rt(narrowed)).scope == " ".join(SCOPES)


def test_scope_may_not_widen(world: World, public_client: RegisteredClient) -> None:
    issued = world.login(public_client, scope="mcp:read")
    with pytest.raises(InvalidScope):
        world.refresh(public_client, rt(issued), scope="mcp:read mcp:write")
    with pytest.raises(InvalidScope):
        world.refresh(public_client, rt(issued), scope="admin")
    # A refused scope does not rotate or revoke anything.
    assert world.refresh_record(rt(issued)).rotated_at is None
    assert not world.only_grant().is_revoked
    assert len(world.storage.access_tokens) == 1
    assert world.refresh(public_client, rt(issued)).scope == "mcp:read"


# -- other failures ------------------------------------------------------------------------------


def test_expired_refresh_token_is_invalid_grant_and_keeps_the_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    world.clock.advance(world.policy.refresh_token_ttl)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert world.only_grant().revoked_at is None
    assert world.refresh_record(rt(issued)).revoked_at is None
    assert world.refresh_record(rt(issued)).rotated_at is None
    assert len(world.storage.refresh_tokens) == 1


def test_refresh_token_just_before_expiry_works(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    world.clock.advance(world.policy.refresh_token_ttl - 1)
    assert world.refresh(public_client, rt(issued)).access_token


def test_refresh_token_of_another_client_is_invalid_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    other = world.register()
    with pytest.raises(InvalidGrant):
        world.refresh(other, rt(issued))
    assert world.refresh_record(rt(issued)).rotated_at is None
    assert not world.only_grant().is_revoked
    assert len(world.storage.access_tokens) == 1


@pytest.mark.parametrize("resource", ["https://other.example/mcp", RESOURCE + "/x", ""])
def test_resource_mismatch_is_invalid_target(
    world: World, public_client: RegisteredClient, issued: IssuedTokens, resource: str
) -> None:
    with pytest.raises(InvalidTarget):
        world.refresh(public_client, rt(issued), resource=resource)
    assert world.refresh_record(rt(issued)).rotated_at is None
    assert len(world.storage.access_tokens) == 1


def test_omitted_or_trailing_slash_resource_is_accepted(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    new = world.refresh(public_client, rt(issued), resource=None)
    assert world.refresh(public_client, rt(new), resource=RESOURCE + "/").access_token


def test_unknown_refresh_token_is_invalid_grant(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, "mob_rt_unknown")
    # An access token is not a refresh token.
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, issued.access_token)
    assert not world.only_grant().is_revoked


@pytest.mark.parametrize("token", [None, ""])
def test_missing_refresh_token_is_invalid_request(world: World, public_client: RegisteredClient, token: str | None) -> None:
    with pytest.raises(InvalidRequest):
        world.refresh(public_client, token)


def test_revoked_grant_refuses_refresh(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    # Revoke only the grant row, leaving the token row untouched, so the grant check itself is tested.
    grant = world.only_grant()
    world.storage.grants[grant.grant_id] = replace(grant, revoked_at=NOW)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert len(world.storage.access_tokens) == 1


def test_revoked_refresh_token_is_refused(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    record = world.refresh_record(rt(issued))
    world.storage.refresh_tokens[record.token_hash] = replace(record, revoked_at=NOW)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued))
    assert len(world.storage.access_tokens) == 1


def test_client_without_refresh_grant_is_unauthorized(world: World, public_client: RegisteredClient, issued: IssuedTokens) -> None:
    restricted = replace(public_client.client, grant_types=("authorization_code",))
    with pytest.raises(UnauthorizedClient):
        world.token_service.refresh(restricted, refresh_token=rt(issued), scope=None, resource=None)
    assert world.refresh_record(rt(issued)).rotated_at is None


# -- a replay is a replay, whatever else the request asks for ------------------------------------
# DESIGN.md flow step 5: "any other replay revokes the whole grant". The replay decision must not
# depend on the scope or resource the replaying request happens to carry.


def test_replay_after_the_grace_window_with_a_wider_scope_revokes_the_grant(
    world: World, public_client: RegisteredClient
) -> None:
    issued = world.login(public_client, scope="mcp:read")
    successor = world.refresh(public_client, rt(issued))
    world.clock.advance(world.policy.refresh_grace_period + 1)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued), scope="mcp:read mcp:write")
    assert_grant_fully_revoked(world, public_client, issued, successor)


def test_replay_after_the_grace_window_with_another_resource_revokes_the_grant(
    world: World, public_client: RegisteredClient, issued: IssuedTokens
) -> None:
    successor = world.refresh(public_client, rt(issued))
    world.clock.advance(world.policy.refresh_grace_period + 1)
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, rt(issued), resource="https://other.example/mcp")
    assert_grant_fully_revoked(world, public_client, issued, successor)
