"""The operator's use cases (domain/services/administration.py) against the in-memory fakes:
disabling a client (refused at authorize and token, its access tokens dead at once, its grants
kept for when it is enabled), deleting one, listing and revoking grants (offboarding)."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.errors import InvalidClient, InvalidGrant, InvalidToken
from mcp_oauth_bridge.domain.services.administration import AdministrationService, UnknownRecord
from mcp_oauth_bridge.domain.services.tokens import ClientCredentials
from tests.unit.conftest import NOW, World, build_world


@pytest.fixture
def world() -> World:
    return build_world()


def administration(world: World) -> AdministrationService:
    return AdministrationService(
        clients=world.clients, grants=world.storage, unit_of_work=world.storage, clock=world.clock, audit=world.audit
    )


def test_a_disabled_client_cannot_authorize_refresh_or_use_its_token_until_enabled(world: World) -> None:
    client, other = world.register(), world.register()
    issued, others = world.login(client), world.login(other)
    admin = administration(world)

    disabled = admin.disable_client(client.client.client_id)
    assert disabled.disabled_at == NOW

    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    with pytest.raises(InvalidClient, match="this client is disabled"):
        world.directory.for_authorization(client.client.client_id)
    with pytest.raises(InvalidClient, match="this client is disabled"):
        world.client_auth.authenticate(
            ClientCredentials(client_id=client.client.client_id, client_secret=None, method="none")
        )
    # Another client's people are not affected.
    assert world.bearer.authenticate(others.access_token).client_id == other.client.client_id

    # The grant survived: once enabled, the client refreshes and its new token works.
    assert admin.enable_client(client.client.client_id).disabled_at is None
    refreshed = world.refresh(client, issued.refresh_token)
    assert world.bearer.authenticate(refreshed.access_token).client_id == client.client.client_id


def test_delete_client_takes_everything_issued_to_it(world: World) -> None:
    client = world.register()
    issued = world.login(client)
    summary = administration(world).delete_client(client.client.client_id)
    assert summary.live_grants == 1
    assert world.clients.get(client.client.client_id) is None
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(issued.access_token)
    assert world.storage.grants == {}


def test_offboarding_revokes_every_grant_of_the_person(world: World) -> None:
    # (That other people's grants stay is checked over HTTP: tests/integration/test_cli_admin.py.)
    first, second = world.register(), world.register()
    alice_1, alice_2 = world.login(first), world.login(second)
    admin = administration(world)
    (alice,) = {grant.subject for grant in world.storage.grants.values()}

    revoked = admin.revoke_grants(subject=alice)
    assert sorted(revoked) == sorted(world.storage.grants)
    for issued, client in ((alice_1, first), (alice_2, second)):
        with pytest.raises(InvalidToken):
            world.bearer.authenticate(issued.access_token)
        with pytest.raises(InvalidGrant):
            world.refresh(client, issued.refresh_token)
    assert admin.list_grants(subject=alice) == []
    # Nothing left to revoke; a named grant revoked before is no error.
    assert admin.revoke_grants(subject=alice) == []
    assert admin.revoke_grants(grant_id=revoked[0]) == []


def test_unknown_ids_are_named(world: World) -> None:
    admin = administration(world)
    for action in (admin.show_client, admin.disable_client, admin.enable_client, admin.delete_client):
        with pytest.raises(UnknownRecord, match="^no client mob_client_x$"):
            action("mob_client_x")
    with pytest.raises(UnknownRecord, match="^no grant g-x$"):
        admin.revoke_grants(grant_id="g-x")
    with pytest.raises(UnknownRecord, match="^no client mob_client_x$"):
        admin.revoke_grants(client_id="mob_client_x")
    with pytest.raises(ValueError):
        admin.revoke_grants(subject="a", client_id="b")


def test_a_client_disabled_after_it_authenticated_gets_no_tokens(world: World) -> None:
    # The token endpoint authenticated the client, then `clients disable` committed before the
    # tokens were written: the check inside the issuing transaction refuses, and rolls back.
    client = world.register()
    issued = world.login(client)
    authenticated = world.client_auth.authenticate(
        ClientCredentials(client_id=client.client.client_id, client_secret=None, method="none")
    )
    administration(world).disable_client(client.client.client_id)
    tokens_before = dict(world.storage.access_tokens)
    with pytest.raises(InvalidClient, match="this client is disabled"):
        world.token_service.refresh(authenticated, refresh_token=issued.refresh_token, scope=None, resource=None)
    assert world.storage.access_tokens == tokens_before
    # The refresh token was not consumed: enabled again, the client refreshes with it.
    administration(world).enable_client(client.client.client_id)
    assert world.refresh(client, issued.refresh_token).access_token


def test_the_operators_actions_are_audited(world: World) -> None:
    client, other = world.register(), world.register()
    world.login(client)
    world.login(other)
    admin = administration(world)
    world.audit.events.clear()
    admin.disable_client(client.client.client_id)
    admin.enable_client(client.client.client_id)
    (revoked,) = admin.revoke_grants(client_id=client.client.client_id)
    assert admin.revoke_grants(grant_id=revoked) == []
    admin.delete_client(other.client.client_id)
    assert [(e.event, e.client_id, e.grant_id, e.reason) for e in world.audit.events] == [
        ("client_disabled", client.client.client_id, None, None),
        ("client_enabled", client.client.client_id, None, None),
        ("grant_revoked", client.client.client_id, revoked, "operator"),
        ("client_deleted", other.client.client_id, None, "operator"),
    ]
    assert world.audit.events[2].subject == "user-1"
