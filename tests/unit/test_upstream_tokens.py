"""Transparent upstream refresh: fresh tokens pass through; stale ones are refreshed once under the
grant's lease; invalid_grant ends the grant; outages leave it intact."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.errors import InvalidToken, TemporarilyUnavailable
from mcp_oauth_bridge.domain.model import UpstreamTokens
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.services.upstream import LEASE_SECONDS, REFRESH_MARGIN, UpstreamTokenService
from tests.fakes import FixedClock

from .conftest import NOW, World

GRANT = "grant"


@pytest.fixture
def upstream(world: World) -> UpstreamTokenService:
    return UpstreamTokenService(grants=world.storage, upstream_tokens=world.storage, identity_provider=world.idp, clock=world.clock, tokens=world.tokens)


def store(world: World, *, expires_in: int, refresh_token: str | None = "rt-1", access_token: str = "at-1") -> None:
    from mcp_oauth_bridge.domain.model import Grant

    world.storage.add_grant(
        Grant(grant_id=GRANT, client_id="c", subject="s", claims={}, scopes=(), resource="r", created_at=NOW),
        UpstreamTokens(access_token=access_token, expires_at=NOW + expires_in, refresh_token=refresh_token),
    )


def test_a_fresh_token_is_used_without_refreshing(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=REFRESH_MARGIN + 1)
    assert upstream.access_token(GRANT) == "at-1"
    assert world.idp.refreshes == []


def test_a_token_expiring_within_the_margin_is_refreshed_and_stored(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=REFRESH_MARGIN)
    world.idp.refreshed = UpstreamTokens(access_token="at-2", expires_at=NOW + 3600, refresh_token="rt-2")
    assert upstream.access_token(GRANT) == "at-2"
    assert world.idp.refreshes == ["rt-1"]
    assert world.storage.get_upstream_tokens(GRANT) == world.idp.refreshed
    # The next call uses the stored token: one refresh only.
    assert upstream.access_token(GRANT) == "at-2"
    assert world.idp.refreshes == ["rt-1"]
    assert world.storage.refresh_locks == {}


def test_a_refresh_without_a_new_refresh_token_keeps_the_old_one(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0)
    world.idp.refreshed = UpstreamTokens(access_token="at-2", expires_at=NOW + 3600, refresh_token=None)
    upstream.access_token(GRANT)
    stored = world.storage.get_upstream_tokens(GRANT)
    assert stored is not None and stored.refresh_token == "rt-1"


def test_a_rejected_token_is_replaced_even_if_not_expired(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=3600)
    world.idp.refreshed = UpstreamTokens(access_token="at-2", expires_at=NOW + 3600, refresh_token="rt-2")
    assert upstream.access_token(GRANT, rejected="at-1") == "at-2"
    # A token rejected earlier but already replaced by someone else is not refreshed again.
    assert upstream.access_token(GRANT, rejected="at-1") == "at-2"
    assert world.idp.refreshes == ["rt-1"]


def test_while_another_request_holds_the_lease_its_result_is_used(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0)
    assert world.storage.acquire_upstream_refresh_lock(GRANT, "other-worker", NOW, NOW + LEASE_SECONDS)

    class RefreshedMeanwhile(FixedClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            world.storage.update_upstream_tokens(
                GRANT, UpstreamTokens(access_token="at-other", expires_at=self.current + 3600, refresh_token="rt-other")
            )

    clock = RefreshedMeanwhile(NOW)
    service = UpstreamTokenService(grants=world.storage, upstream_tokens=world.storage, identity_provider=world.idp, clock=clock, tokens=world.tokens)
    assert service.access_token(GRANT) == "at-other"
    assert world.idp.refreshes == []


def test_a_lease_that_is_never_released_means_503_not_a_second_refresh(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0)
    assert world.storage.acquire_upstream_refresh_lock(GRANT, "stuck", NOW, NOW + 10_000)
    with pytest.raises(TemporarilyUnavailable):
        upstream.access_token(GRANT)
    assert world.idp.refreshes == []


def test_an_expired_lease_of_a_dead_holder_is_taken_over(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0)
    assert world.storage.acquire_upstream_refresh_lock(GRANT, "dead", NOW, NOW + 2)
    assert upstream.access_token(GRANT) == world.idp.login.tokens.access_token
    assert world.idp.refreshes == ["rt-1"]


def test_invalid_grant_upstream_revokes_the_grant(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0)
    world.idp.failure = UpstreamIdentityError("refresh token expired", temporary=False, upstream_error="invalid_grant")
    with pytest.raises(InvalidToken):
        upstream.access_token(GRANT)
    grant = world.storage.get_grant(GRANT)
    assert grant is not None and grant.is_revoked
    assert world.storage.refresh_locks == {}


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamIdentityError("503 from the provider", temporary=True),
        UpstreamIdentityError("bad client secret", temporary=False, upstream_error="invalid_client"),
    ],
)
def test_outages_and_misconfiguration_leave_the_grant_intact(
    world: World, upstream: UpstreamTokenService, failure: UpstreamIdentityError
) -> None:
    store(world, expires_in=0)
    world.idp.failure = failure
    with pytest.raises(TemporarilyUnavailable):
        upstream.access_token(GRANT)
    grant = world.storage.get_grant(GRANT)
    assert grant is not None and not grant.is_revoked
    assert world.storage.refresh_locks == {}


def test_no_upstream_refresh_token_ends_the_grant(world: World, upstream: UpstreamTokenService) -> None:
    store(world, expires_in=0, refresh_token=None)
    with pytest.raises(InvalidToken):
        upstream.access_token(GRANT)
    grant = world.storage.get_grant(GRANT)
    assert grant is not None and grant.is_revoked


def test_unknown_grant_is_invalid_token(upstream: UpstreamTokenService) -> None:
    with pytest.raises(InvalidToken):
        upstream.access_token("nope")

