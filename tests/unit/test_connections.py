"""My connections (domain/services/connections.py): the account sign-in, listing, revoking."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from mcp_oauth_bridge.domain.errors import AccessDenied, InvalidRequest, InvalidToken
from mcp_oauth_bridge.domain.security import s256_challenge
from mcp_oauth_bridge.domain.services.connections import SIGN_IN_TTL, ConnectionsService

from .conftest import World


@pytest.fixture
def service(world: World) -> ConnectionsService:
    return ConnectionsService(
        grants=world.storage, clients=world.clients, identity_provider=world.idp, clock=world.clock, tokens=world.tokens,
        audit=world.audit,
    )


def test_sign_in_uses_state_nonce_and_pkce(world: World, service: ConnectionsService) -> None:
    sign_in, url = service.start_sign_in()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"state": sign_in.state, "nonce": sign_in.nonce, "code_challenge": s256_challenge(sign_in.code_verifier)}
    assert ConnectionsService.is_its_callback(sign_in, sign_in.state)
    assert not ConnectionsService.is_its_callback(sign_in, sign_in.state + "x")
    assert not ConnectionsService.is_its_callback(None, sign_in.state)
    identity = service.finish_sign_in(sign_in, code="c", error=None)
    assert identity.subject == "user-1"
    assert world.idp.exchanges == [{"code": "c", "code_verifier": sign_in.code_verifier, "nonce": sign_in.nonce}]


def test_sign_in_expires_and_denials_are_errors(world: World, service: ConnectionsService) -> None:
    sign_in, _ = service.start_sign_in()
    with pytest.raises(AccessDenied):
        service.finish_sign_in(sign_in, code=None, error="access_denied")
    with pytest.raises(InvalidRequest):
        service.finish_sign_in(sign_in, code=None, error=None)
    world.clock.advance(SIGN_IN_TTL)
    with pytest.raises(InvalidRequest):
        service.finish_sign_in(sign_in, code="c", error=None)
    assert world.idp.exchanges == []


def test_a_person_lists_and_revokes_only_their_own(world: World, service: ConnectionsService) -> None:
    registered = world.register()
    tokens = world.login(registered)
    (connection,) = service.connections("user-1")
    assert connection.client is not None and connection.client.client_id == registered.client.client_id
    assert service.connections("someone-else") == []
    grant_id = connection.grant.grant_id
    assert service.revoke("someone-else", grant_id) is False
    assert world.storage.grants[grant_id].revoked_at is None
    assert service.revoke("user-1", grant_id) is True
    assert world.storage.grants[grant_id].revoked_at == world.clock.now()
    (event,) = [e for e in world.audit.events if e.event == "grant_revoked"]
    assert (event.reason, event.subject, event.grant_id) == ("user", "user-1", grant_id)
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(tokens.access_token)
    assert service.revoke("user-1", grant_id) is False
    assert service.connections("user-1") == []
