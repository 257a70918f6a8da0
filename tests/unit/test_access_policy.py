"""Who may connect (issue 11 §1): the access policy, at sign-in and again at every upstream
refresh our refresh grant runs once the upstream token expired; GRANT_MAX_LIFETIME."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from mcp_oauth_bridge.domain.access_policy import AccessPolicy, ClaimRequirement, parse_required_claims
from mcp_oauth_bridge.domain.errors import InvalidGrant, InvalidToken, SignInNotAllowed, TemporarilyUnavailable
from mcp_oauth_bridge.domain.model import IssuedTokens, UpstreamIdentity, UpstreamTokens
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from mcp_oauth_bridge.domain.services.upstream import UpstreamTokenService

from .conftest import ISSUER, NOW, RESOURCE, SCOPES, World, build_world

GROUP = "0b3c58c2-6a4b-4b7e-9c47-6f2c1f0d9a11"
MEMBER = UpstreamIdentity(subject="user-1", claims={"preferred_username": "alice"}, policy_claims={"groups": [GROUP]})
OUTSIDER = UpstreamIdentity(subject="user-1", claims={"preferred_username": "alice"}, policy_claims={"groups": ["other"]})
UPSTREAM_TTL = 3600


# -- the policy ------------------------------------------------------------------------------------


def test_a_list_claim_matches_when_it_contains_an_accepted_value() -> None:
    policy = parse_required_claims("groups=mcp-users")
    assert policy.evaluate({"groups": ["staff", "mcp-users"]}).allowed
    assert not policy.evaluate({"groups": ["staff"]}).allowed
    assert not policy.evaluate({}).allowed


def test_several_values_for_one_claim_mean_any_and_every_claim_is_required() -> None:
    policy = parse_required_claims("groups=a, groups=b ,email_verified=true")
    assert policy.evaluate({"groups": ["b"], "email_verified": True}).allowed
    decision = policy.evaluate({"groups": ["b"], "email_verified": False})
    assert not decision.allowed
    assert decision.unmet == ("email_verified",)
    assert policy.evaluate({"groups": "a", "email_verified": "true"}).allowed


def test_booleans_and_numbers_compare_as_their_text_and_objects_never_match() -> None:
    assert parse_required_claims("email_verified=false").evaluate({"email_verified": False}).allowed
    assert not parse_required_claims("email_verified=true").evaluate({"email_verified": 1}).allowed
    assert parse_required_claims("level=2").evaluate({"level": 2}).allowed
    assert not parse_required_claims("org=x").evaluate({"org": {"x": True}}).allowed


def test_group_ids_compare_without_case_only_when_asked() -> None:
    insensitive = AccessPolicy.of([ClaimRequirement("groups", frozenset({GROUP.upper()}), case_insensitive=True)])
    assert insensitive.evaluate({"groups": [GROUP]}).allowed
    assert not AccessPolicy.of([ClaimRequirement("groups", frozenset({GROUP.upper()}))]).evaluate({"groups": [GROUP]}).allowed


def test_no_requirement_admits_everyone() -> None:
    policy = parse_required_claims(" , ")
    assert not policy.restricts
    assert policy.evaluate({}).allowed


@pytest.mark.parametrize("text", ["groups", "=x", "groups=", "a=b,c"])
def test_malformed_required_claims_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="claim=value"):
        parse_required_claims(text)


# -- sign-in -------------------------------------------------------------------------------------


def _world(*, contact: str = "", max_lifetime: int = 30 * 24 * 3600, restricted: bool = True) -> World:
    access_policy = parse_required_claims(f"groups={GROUP}") if restricted else AccessPolicy()
    world = build_world(
        ServerPolicy(
            issuer=ISSUER,
            resource=RESOURCE,
            scopes_supported=SCOPES,
            access_policy=access_policy,
            access_denied_contact=contact,
            grant_max_lifetime=max_lifetime,
            service_name="Contoso",
        )
    )
    world.idp.login = replace(
        world.idp.login,
        identity=MEMBER,
        tokens=UpstreamTokens(access_token="upstream-at", refresh_token="upstream-rt", expires_at=NOW + UPSTREAM_TTL),
    )
    return world


def test_a_person_outside_the_policy_sees_whom_to_ask_and_the_client_gets_access_denied() -> None:
    world = _world(contact="the IT service desk (it@contoso.example)")
    world.idp.login = replace(world.idp.login, identity=OUTSIDER)
    client = world.register()
    prompt = world.start(client)
    with pytest.raises(SignInNotAllowed) as raised:
        world.callback(world.approve(prompt))
    assert "not allowed" in raised.value.explanation
    assert "the IT service desk (it@contoso.example)" in raised.value.explanation
    back = urlsplit(raised.value.return_url)
    query = parse_qs(back.query)
    assert f"{back.scheme}://{back.netloc}{back.path}" == client.client.redirect_uris[0]
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["client-state-1"]
    assert query["iss"] == [ISSUER]
    # No grant, no code.
    assert world.storage.grants == {}
    assert world.storage.codes == {}
    (event,) = world.audit.named("upstream_sign_in_denied_by_policy")
    assert (event.client_id, event.subject, event.reason) == (client.client.client_id, "user-1", "unmet:groups")
    assert "upstream_sign_in_succeeded" not in world.audit.names()


def test_without_a_contact_the_page_names_the_service() -> None:
    world = _world()
    world.idp.login = replace(world.idp.login, identity=OUTSIDER)
    prompt = world.start(world.register())
    with pytest.raises(SignInNotAllowed) as raised:
        world.callback(world.approve(prompt))
    assert "the administrators of Contoso" in raised.value.explanation


def test_a_person_inside_the_policy_connects() -> None:
    world = _world()
    issued = world.login(world.register())
    assert world.bearer.authenticate(issued.access_token).subject == "user-1"
    # The policy's claims are not stored with the grant.
    assert "groups" not in world.only_grant().claims


# -- the refresh grant re-checks once the upstream token expired -------------------------------------


@pytest.fixture
def policed() -> tuple[World, RegisteredClient, IssuedTokens]:
    world = _world()
    client = world.register()
    issued = world.login(client)
    # The upstream answers refreshes with new tokens for another hour.
    world.idp.refreshed = UpstreamTokens(
        access_token="upstream-at-2", refresh_token="upstream-rt-2", expires_at=NOW + 2 * UPSTREAM_TTL + 10, id_token="id-2"
    )
    return world, client, issued


def _rt(tokens: IssuedTokens) -> str:
    assert tokens.refresh_token is not None
    return tokens.refresh_token


def test_while_the_upstream_token_is_valid_nothing_is_asked_upstream(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    world.idp.refreshed_identity = OUTSIDER
    world.clock.advance(UPSTREAM_TTL - 1)
    world.refresh(client, _rt(issued))
    assert world.idp.refreshes == []
    assert world.idp.identity_reads == []


def test_after_the_upstream_token_expired_a_member_is_refreshed_upstream_and_rechecked(
    policed: tuple[World, RegisteredClient, IssuedTokens],
) -> None:
    world, client, issued = policed
    world.clock.advance(UPSTREAM_TTL)
    new = world.refresh(client, _rt(issued))
    assert world.idp.refreshes == ["upstream-rt"]
    assert [tokens.access_token for tokens in world.idp.identity_reads] == ["upstream-at-2"]
    grant = world.only_grant()
    assert world.storage.upstream_tokens[grant.grant_id].refresh_token == "upstream-rt-2"
    assert world.bearer.authenticate(new.access_token).grant.grant_id == grant.grant_id


def test_a_person_removed_from_the_group_loses_the_grant_at_the_next_refresh(
    policed: tuple[World, RegisteredClient, IssuedTokens],
) -> None:
    world, client, issued = policed
    world.idp.refreshed_identity = OUTSIDER
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant, match="no longer allowed"):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked
    (event,) = world.audit.named("grant_revoked")
    assert (event.reason, event.subject) == ("policy", "user-1")
    # The refresh token is gone with the grant.
    with pytest.raises(InvalidGrant):
        world.refresh(client, _rt(issued))


def test_an_upstream_invalid_grant_revokes(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    world.idp.failure = UpstreamIdentityError("refused", temporary=False, upstream_error="invalid_grant")
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant, match="upstream session ended"):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked
    (event,) = world.audit.named("grant_revoked")
    assert event.reason == "upstream_invalid_grant"


def test_an_upstream_outage_keeps_the_grant_and_the_refresh_token(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    world.idp.failure = UpstreamIdentityError("down", temporary=True)
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(TemporarilyUnavailable):
        world.refresh(client, _rt(issued))
    assert not world.only_grant().is_revoked
    assert world.audit.named("grant_revoked") == []
    # Nothing was rotated: once the provider is back, the same refresh token works.
    world.idp.failure = None
    assert world.refresh(client, _rt(issued)).access_token


def test_claims_unreadable_for_a_while_keep_the_grant_and_are_read_again_next_time(
    policed: tuple[World, RegisteredClient, IssuedTokens],
) -> None:
    world, client, issued = policed
    world.idp.identity_failure = UpstreamIdentityError("graph down", temporary=True)
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(TemporarilyUnavailable):
        world.refresh(client, _rt(issued))
    grant = world.only_grant()
    assert not grant.is_revoked
    stored = world.storage.upstream_tokens[grant.grant_id]
    # The rotated upstream refresh token is kept, marked expired so that the check runs again.
    assert stored.refresh_token == "upstream-rt-2"
    assert stored.expires_at <= world.clock.now()
    world.idp.identity_failure = None
    world.idp.refreshed_identity = OUTSIDER
    with pytest.raises(InvalidGrant):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked


def test_claims_that_cannot_be_read_revoke(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    world.idp.identity_failure = UpstreamIdentityError("Graph refused (403)", temporary=False)
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant, match="could not be checked"):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked


def test_tokens_of_another_account_revoke(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    world.idp.refreshed_identity = replace(MEMBER, subject="user-2")
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant, match="another account"):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked


def test_with_a_policy_and_no_upstream_refresh_token_the_grant_ends_with_the_upstream_token() -> None:
    world = _world()
    world.idp.login = replace(world.idp.login, tokens=replace(world.idp.login.tokens, refresh_token=None))
    client = world.register()
    issued = world.login(client)
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked


def test_without_a_policy_and_no_upstream_refresh_token_the_grant_lives_on() -> None:
    world = _world(restricted=False)
    world.idp.login = replace(world.idp.login, tokens=replace(world.idp.login.tokens, refresh_token=None))
    client = world.register()
    issued = world.login(client)
    world.clock.advance(UPSTREAM_TTL)
    assert world.refresh(client, _rt(issued)).access_token
    assert world.idp.refreshes == []


def test_without_a_policy_an_expired_upstream_token_is_still_refreshed_so_a_deleted_account_is_cut_off() -> None:
    world = _world(restricted=False)
    client = world.register()
    issued = world.login(client)
    world.idp.failure = UpstreamIdentityError("user deleted", temporary=False, upstream_error="invalid_grant")
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant):
        world.refresh(client, _rt(issued))
    assert world.only_grant().is_revoked
    # Without a policy, no claims are read.
    assert world.idp.identity_reads == []


def test_a_replayed_refresh_token_asks_nothing_upstream(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, client, issued = policed
    first = world.refresh(client, _rt(issued))
    world.refresh(client, _rt(first))
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidGrant, match="already used"):
        world.refresh(client, _rt(issued))
    assert world.idp.refreshes == []


# -- GRANT_MAX_LIFETIME ---------------------------------------------------------------------------


def test_a_grant_ends_at_its_maximum_lifetime() -> None:
    world = _world(max_lifetime=2 * 3600, restricted=False)
    world.idp.login = replace(world.idp.login, tokens=replace(world.idp.login.tokens, expires_at=NOW + 10 * UPSTREAM_TTL))
    client = world.register()
    issued = world.login(client)
    world.clock.advance(3600)
    current = world.refresh(client, _rt(issued))
    # The new refresh token does not outlive the grant.
    assert world.refresh_record(_rt(current)).expires_at == NOW + 2 * 3600
    world.clock.advance(3600)
    with pytest.raises(InvalidGrant):
        world.refresh(client, _rt(current))


def test_a_refresh_token_issued_before_the_maximum_lifetime_was_lowered_stops_at_it() -> None:
    world = _world(max_lifetime=2 * 3600, restricted=False)
    client = world.register()
    issued = world.login(client)
    # As if issued under a longer GRANT_MAX_LIFETIME: valid for 30 days.
    record = world.refresh_record(_rt(issued))
    world.storage.refresh_tokens[record.token_hash] = replace(record, expires_at=NOW + 30 * 24 * 3600)
    world.clock.advance(2 * 3600)
    with pytest.raises(InvalidGrant, match="maximum lifetime"):
        world.refresh(client, _rt(issued))


# -- a tool's upstream refresh re-checks too ------------------------------------------------------


def test_a_tool_refreshing_the_upstream_token_rechecks_the_policy(policed: tuple[World, RegisteredClient, IssuedTokens]) -> None:
    world, _, _ = policed
    service = UpstreamTokenService(
        grants=world.storage,
        upstream_tokens=world.storage,
        identity_provider=world.idp,
        clock=world.clock,
        tokens=world.tokens,
        access_policy=world.policy.access_policy,
    )
    grant_id = world.only_grant().grant_id
    world.clock.advance(UPSTREAM_TTL)
    assert service.access_token(grant_id) == "upstream-at-2"
    # Removed from the group: the next upstream refresh a tool needs ends the grant.
    world.idp.refreshed_identity = OUTSIDER
    world.idp.refreshed = UpstreamTokens(access_token="upstream-at-3", refresh_token="upstream-rt-3", expires_at=NOW + 3 * UPSTREAM_TTL)
    world.clock.advance(UPSTREAM_TTL)
    with pytest.raises(InvalidToken, match="no longer allowed"):
        service.access_token(grant_id)
    assert world.only_grant().is_revoked
