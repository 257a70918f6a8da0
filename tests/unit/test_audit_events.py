"""Issue 11 §3: each security event is recorded where it happens, naming the client, the
upstream subject and the grant, and carrying nothing secret."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from mcp_oauth_bridge.domain import audit
from mcp_oauth_bridge.domain.audit import AuditEvent
from mcp_oauth_bridge.domain.errors import AuthorizationRedirect, InvalidGrant, InvalidToken, UpstreamSignInFailed
from mcp_oauth_bridge.domain.errors import InvalidRedirectUri, InvalidRequest, TemporarilyUnavailable
from mcp_oauth_bridge.domain.model import Grant, UpstreamTokens
from mcp_oauth_bridge.domain.ports import AuditTrail, UpstreamIdentityError
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from mcp_oauth_bridge.domain.services.upstream import UpstreamTokenService
from tests.fakes import RecordingAuditTrail

from .conftest import NOW, REDIRECT_URI, VERIFIER, World, query

SUBJECT = "user-1"


def only(world: World, name: str) -> AuditEvent:
    events = world.audit.named(name)
    assert len(events) == 1, world.audit.events
    return events[0]


def assert_nothing_secret(world: World, *secrets: str | None) -> None:
    values = [str(value) for event in world.audit.events for value in asdict(event).values() if value is not None]
    for secret in secrets:
        if secret:
            assert not any(secret in value for value in values), secret


def test_the_fakes_are_audit_trails() -> None:
    assert isinstance(RecordingAuditTrail(), AuditTrail)
    assert isinstance(audit.NoAuditTrail(), AuditTrail)


# -- clients --------------------------------------------------------------------------------------


def test_registration_records_the_client(world: World) -> None:
    registered = world.register()
    assert world.audit.events == [
        AuditEvent(event=audit.CLIENT_REGISTERED, client_id=registered.client.client_id, reason="registered")
    ]


def test_a_refused_registration_records_nothing(world: World) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.registration.register({"redirect_uris": "not a list"})
    assert world.audit.events == []


def test_an_operator_client_is_recorded_as_registered_by_the_operator(world: World) -> None:
    registered = world.registration.create_operator_client(name="Ops", redirect_uris=[REDIRECT_URI], public=False)
    event = only(world, audit.CLIENT_REGISTERED)
    assert event == AuditEvent(event=audit.CLIENT_REGISTERED, client_id=registered.client.client_id, reason="operator")
    assert_nothing_secret(world, registered.client_secret)


def test_update_and_delete_through_the_configuration_endpoint_are_recorded(world: World) -> None:
    registered = world.register_confidential()
    client_id = registered.client.client_id
    token = registered.registration_access_token
    world.registration.replace(
        client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI], "client_name": "Renamed"}
    )
    world.registration.delete(client_id, token)
    assert world.audit.names() == [audit.CLIENT_REGISTERED, audit.CLIENT_UPDATED, audit.CLIENT_DELETED]
    assert all(event.client_id == client_id for event in world.audit.events)
    assert_nothing_secret(world, token, registered.client_secret)


def test_a_delete_with_a_wrong_registration_token_records_nothing(world: World, public_client: RegisteredClient) -> None:
    with pytest.raises(InvalidToken):
        world.registration.delete(public_client.client.client_id, "mob_rat_wrong")
    assert world.audit.names() == [audit.CLIENT_REGISTERED]


def test_the_events_other_helpers_record_have_their_names() -> None:
    assert audit.client_disabled("c1") == AuditEvent(event="client_disabled", client_id="c1")
    assert audit.client_enabled("c1") == AuditEvent(event="client_enabled", client_id="c1")
    assert audit.sign_in_denied_by_policy("c1", "sub-1", reason="not_in_group") == AuditEvent(
        event="upstream_sign_in_denied_by_policy", client_id="c1", subject="sub-1", reason="not_in_group"
    )
    grant = Grant(grant_id="g1", client_id="c1", subject="sub-1", claims={"email": "a@b"}, scopes=(), resource="r", created_at=NOW)
    assert audit.grant_revoked(grant, audit.REVOKED_BY_OPERATOR) == AuditEvent(
        event="grant_revoked", client_id="c1", subject="sub-1", grant_id="g1", reason="operator"
    )


# -- consent and sign-in --------------------------------------------------------------------------


def test_consent_approved_names_the_client(world: World, public_client: RegisteredClient) -> None:
    world.approve(world.start(public_client))
    assert world.audit.events[1:] == [AuditEvent(event=audit.CONSENT_APPROVED, client_id=public_client.client.client_id)]


def test_consent_denied_names_the_client(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    world.authorization.decide(
        pending_id=prompt.pending_id, csrf_token=prompt.csrf_token, browser_id=prompt.browser_id, approved=False
    )
    assert world.audit.events[1:] == [AuditEvent(event=audit.CONSENT_DENIED, client_id=public_client.client.client_id)]


def test_a_consent_that_fails_its_csrf_check_records_nothing(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    with pytest.raises(InvalidRequest):
        world.authorization.decide(pending_id=prompt.pending_id, csrf_token="forged", browser_id=prompt.browser_id, approved=True)
    assert world.audit.names() == [audit.CLIENT_REGISTERED]


def test_a_successful_sign_in_records_the_subject_and_the_new_grant(world: World, public_client: RegisteredClient) -> None:
    prompt = world.start(public_client)
    idp_url = world.approve(prompt)
    redirect = world.callback(idp_url)
    grant = world.only_grant()
    client_id = public_client.client.client_id
    expected = {"client_id": client_id, "subject": SUBJECT, "grant_id": grant.grant_id}
    assert asdict(only(world, audit.UPSTREAM_SIGN_IN_SUCCEEDED)) == {
        "event": audit.UPSTREAM_SIGN_IN_SUCCEEDED, **expected, "reason": None, "upstream_error": None
    }
    assert asdict(only(world, audit.GRANT_CREATED)) == {
        "event": audit.GRANT_CREATED, **expected, "reason": None, "upstream_error": None
    }
    # Never the person's name or address, the code, the state, the nonce or the verifier.
    upstream = world.idp.exchanges[0]
    assert_nothing_secret(
        world, "alice", "alice@example.com", query(redirect)["code"], query(idp_url)["state"],
        upstream["nonce"], upstream["code_verifier"], prompt.csrf_token, prompt.browser_id,
    )


@pytest.mark.parametrize("error", ["access_denied", "temporarily_unavailable", "invalid_client"])
def test_an_upstream_error_is_recorded_with_its_code(world: World, public_client: RegisteredClient, error: str) -> None:
    idp_url = world.approve(world.start(public_client))
    with pytest.raises((AuthorizationRedirect, UpstreamSignInFailed)):
        world.callback(idp_url, code=None, error=error, error_description="secret-looking description")
    assert only(world, audit.UPSTREAM_SIGN_IN_FAILED) == AuditEvent(
        event=audit.UPSTREAM_SIGN_IN_FAILED, client_id=public_client.client.client_id, upstream_error=error
    )
    assert world.audit.named(audit.GRANT_CREATED) == []
    assert_nothing_secret(world, "secret-looking description")


@pytest.mark.parametrize("temporary", [True, False])
def test_a_failed_code_exchange_upstream_is_recorded_with_its_code(
    world: World, public_client: RegisteredClient, temporary: bool
) -> None:
    world.idp.failure = UpstreamIdentityError("rejected", temporary=temporary, upstream_error="invalid_grant")
    idp_url = world.approve(world.start(public_client))
    with pytest.raises((AuthorizationRedirect, UpstreamSignInFailed)):
        world.callback(idp_url)
    assert only(world, audit.UPSTREAM_SIGN_IN_FAILED).upstream_error == "invalid_grant"
    assert world.audit.named(audit.UPSTREAM_SIGN_IN_SUCCEEDED) == []


# -- replays and revocation -----------------------------------------------------------------------


def test_code_replay_is_recorded_and_revokes_the_grant_once(world: World, public_client: RegisteredClient) -> None:
    code = world.authorize_and_get_code(public_client)
    issued = world.exchange(public_client, code)
    for _ in range(2):
        with pytest.raises(InvalidGrant):
            world.exchange(public_client, code)
    grant = world.only_grant()
    identity = {"client_id": public_client.client.client_id, "subject": SUBJECT, "grant_id": grant.grant_id}
    assert world.audit.named(audit.CODE_REPLAY) == [AuditEvent(event=audit.CODE_REPLAY, **identity)] * 2
    assert world.audit.named(audit.GRANT_REVOKED) == [
        AuditEvent(event=audit.GRANT_REVOKED, **identity, reason=audit.REVOKED_FOR_CODE_REPLAY)
    ]
    assert_nothing_secret(world, code, VERIFIER, issued.access_token, issued.refresh_token)


def test_refresh_token_reuse_is_recorded_and_revokes_the_grant(world: World, public_client: RegisteredClient) -> None:
    first = world.login(public_client)
    second = world.refresh(public_client, first.refresh_token)
    third = world.refresh(public_client, second.refresh_token)
    assert world.audit.named(audit.REFRESH_TOKEN_REUSE) == []
    with pytest.raises(InvalidGrant):
        world.refresh(public_client, first.refresh_token)
    grant = world.only_grant()
    identity = {"client_id": public_client.client.client_id, "subject": SUBJECT, "grant_id": grant.grant_id}
    assert world.audit.events[-2:] == [
        AuditEvent(event=audit.REFRESH_TOKEN_REUSE, **identity),
        AuditEvent(event=audit.GRANT_REVOKED, **identity, reason=audit.REVOKED_FOR_REFRESH_TOKEN_REUSE),
    ]
    assert_nothing_secret(
        world, *(tokens.access_token for tokens in (first, second, third)),
        *(tokens.refresh_token for tokens in (first, second, third)),
    )


def test_revoking_a_refresh_token_records_the_grant_revoked_by_the_client(
    world: World, public_client: RegisteredClient
) -> None:
    issued = world.login(public_client)
    world.token_service.revoke(public_client.client, token=issued.access_token, token_type_hint=None)
    # An access token alone does not end the grant.
    assert world.audit.named(audit.GRANT_REVOKED) == []
    for _ in range(2):
        world.token_service.revoke(public_client.client, token=issued.refresh_token, token_type_hint="refresh_token")
    grant = world.only_grant()
    assert world.audit.named(audit.GRANT_REVOKED) == [
        AuditEvent(
            event=audit.GRANT_REVOKED, client_id=public_client.client.client_id, subject=SUBJECT,
            grant_id=grant.grant_id, reason=audit.REVOKED_BY_CLIENT,
        )
    ]


def test_another_clients_revocation_records_nothing(world: World, public_client: RegisteredClient) -> None:
    issued = world.login(public_client)
    other = world.register()
    world.token_service.revoke(other.client, token=issued.refresh_token, token_type_hint="refresh_token")
    assert world.audit.named(audit.GRANT_REVOKED) == []


# -- the upstream session ends --------------------------------------------------------------------


def upstream_service(world: World, *, refresh_token: str | None) -> UpstreamTokenService:
    world.storage.add_grant(
        Grant(grant_id="g1", client_id="c1", subject="sub-1", claims={}, scopes=(), resource="r", created_at=NOW),
        UpstreamTokens(access_token="upstream-at-1", expires_at=NOW, refresh_token=refresh_token),
    )
    return UpstreamTokenService(
        grants=world.storage, upstream_tokens=world.storage, identity_provider=world.idp, clock=world.clock,
        tokens=world.tokens, audit=world.audit,
    )


def test_upstream_invalid_grant_records_the_revocation_with_the_upstream_code(world: World) -> None:
    service = upstream_service(world, refresh_token="upstream-rt-1")
    world.idp.failure = UpstreamIdentityError("expired", temporary=False, upstream_error="invalid_grant")
    with pytest.raises(InvalidToken):
        service.access_token("g1")
    assert world.audit.events == [
        AuditEvent(
            event=audit.GRANT_REVOKED, client_id="c1", subject="sub-1", grant_id="g1",
            reason=audit.REVOKED_UPSTREAM_INVALID_GRANT, upstream_error="invalid_grant",
        )
    ]
    assert_nothing_secret(world, "upstream-rt-1", "upstream-at-1")


def test_an_upstream_outage_revokes_nothing_and_records_nothing(world: World) -> None:
    service = upstream_service(world, refresh_token="upstream-rt-1")
    world.idp.failure = UpstreamIdentityError("503", temporary=True)
    with pytest.raises(TemporarilyUnavailable):
        service.access_token("g1")
    assert world.audit.events == []


def test_an_upstream_session_without_a_refresh_token_records_its_end(world: World) -> None:
    service = upstream_service(world, refresh_token=None)
    with pytest.raises(InvalidToken):
        service.access_token("g1")
    assert world.audit.events == [
        AuditEvent(
            event=audit.GRANT_REVOKED, client_id="c1", subject="sub-1", grant_id="g1",
            reason=audit.REVOKED_UPSTREAM_SESSION_EXPIRED,
        )
    ]
