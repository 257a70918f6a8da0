"""Housekeeping: expired rows and unused dynamically registered clients are deleted, on demand and
opportunistically at most every purge_interval (RFC 7591 §3 leaves client lifetimes to the server)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.ports import StorageError

from .conftest import NOW, World

DAY = 24 * 3600


def client_ids(world: World) -> set[str]:
    return set(world.clients.clients)


def test_a_client_that_never_completed_an_authorization_goes_after_a_day(world: World) -> None:
    world.register()
    started = world.register()
    world.start(started)  # a consent page was shown, nobody went on
    world.clock.advance(DAY - 1)
    assert world.housekeeping.purge().deleted_clients == 0
    world.clock.advance(1)
    report = world.housekeeping.purge()
    assert (report.expired_total, report.deleted_clients) == (0, 2)
    assert client_ids(world) == set()
    # What was pending for them went with them.
    assert world.storage.pending == {}


def test_a_client_that_completed_an_authorization_stays_while_its_grant_lives(world: World) -> None:
    used = world.register()
    issued = world.login(used)
    world.clock.advance(89 * DAY)
    assert world.housekeeping.purge().deleted_clients == 0
    # 90 days after its last use, with its refresh token expired (30 days), it goes.
    world.clock.advance(DAY)
    assert world.housekeeping.purge().deleted_clients == 1
    assert used.client.client_id not in client_ids(world)
    assert world.storage.grants == {} and world.storage.access_tokens == {}
    assert issued.refresh_token is not None and world.storage.refresh_tokens == {}


def test_a_live_grant_keeps_an_idle_client(world: World) -> None:
    used = world.register()
    world.login(used)
    long_lived = world.storage.refresh_tokens
    for key, token in long_lived.items():
        long_lived[key] = replace(token, expires_at=NOW + 365 * DAY)
    world.clock.advance(91 * DAY)
    assert world.housekeeping.purge().deleted_clients == 0
    assert used.client.client_id in client_ids(world)


def test_clients_of_other_kinds_are_never_deleted(world: World) -> None:
    registered = world.register().client
    world.clients.add(replace(registered, kind="operator"))
    world.clock.advance(365 * DAY)
    assert world.housekeeping.purge().deleted_clients == 0
    assert client_ids(world) == {registered.client_id}


def test_registration_purges_at_most_every_purge_interval(world: World) -> None:
    first = world.register().client.client_id  # the first tick purges (nothing yet)
    world.clock.advance(DAY)
    second = world.register().client.client_id  # a day later: the first client goes
    assert client_ids(world) == {second}
    world.clock.advance(DAY)
    third = world.register().client.client_id
    assert client_ids(world) == {third}
    # Within the interval nothing is purged, however much is due.
    world.clock.advance(world.policy.purge_interval - 1)
    fourth = world.register().client.client_id
    assert client_ids(world) == {third, fourth}
    assert first not in client_ids(world)


def test_a_failing_purge_does_not_fail_the_request_and_is_retried_next_interval(world: World) -> None:
    first = world.register().client.client_id

    def unavailable(*args: object, **kwargs: object) -> int:
        raise StorageError("database is locked")

    real = world.clients.delete_unused
    world.clients.delete_unused = unavailable  # type: ignore[method-assign]
    world.clock.advance(DAY)
    assert world.register().client.client_id  # the purge failed; the registration did not
    assert len(client_ids(world)) == 2
    world.clients.delete_unused = real  # type: ignore[method-assign]
    world.clock.advance(world.policy.purge_interval)
    world.register()
    assert first not in client_ids(world) and len(client_ids(world)) == 2


@pytest.mark.parametrize("name", ["unused_client_ttl", "idle_client_ttl", "purge_interval"])
def test_lifetimes_must_be_positive(world: World, name: str) -> None:
    with pytest.raises(ValueError):
        replace(world.policy, **{name: 0})
