"""The storage contract: what every storage backend's stores must do, run against each backend
that ``conftest.py`` provides (the in-memory fakes, SQLite, PostgreSQL): one empty database per
test, every port reached through ``storage`` (a ``Stores``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.domain.model import CLIENT_KINDS, Grant, UpstreamTokens
from mcp_oauth_bridge.domain.ports import (
    AccessTokenStore,
    AuthorizationStore,
    ClientRepository,
    GrantStore,
    MetadataDocumentStore,
    RateLimitStore,
    RefreshTokenStore,
    StorageAdministration,
    UnitOfWork,
    UpstreamTokenStore,
)

from .stores import Stores
from .samples import (
    h,
    NOW,
    HOUR,
    DAY,
    make_client,
    make_pending,
    make_upstream,
    make_upstream_tokens,
    make_grant,
    make_code,
    make_access_token,
    make_refresh_token,
)


def given_grant(
    storage: Stores, grant: Grant | None = None, upstream: UpstreamTokens | None = make_upstream_tokens()
) -> Grant:
    grant = grant or make_grant()
    if storage.clients.get(grant.client_id) is None:
        storage.clients.add(make_client(grant.client_id))
    storage.grants.add_grant(grant, upstream)
    return grant


def test_every_store_implements_its_port(storage: Stores) -> None:
    assert isinstance(storage.unit_of_work, UnitOfWork)
    assert isinstance(storage.clients, ClientRepository)
    assert isinstance(storage.authorizations, AuthorizationStore)
    assert isinstance(storage.grants, GrantStore)
    assert isinstance(storage.upstream_tokens, UpstreamTokenStore)
    assert isinstance(storage.access_tokens, AccessTokenStore)
    assert isinstance(storage.refresh_tokens, RefreshTokenStore)
    assert isinstance(storage.rate_limits, RateLimitStore)
    assert isinstance(storage.admin, StorageAdministration)
    assert isinstance(storage.documents, MetadataDocumentStore)


# -- ClientRepository -----------------------------------------------------------------------


def test_client_round_trip_keeps_every_field(storage: Stores) -> None:
    client = make_client(kind="cimd", last_used_at=NOW + 5)
    storage.clients.add(client)
    assert storage.clients.get("client-1") == client


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_a_client_of_each_kind_round_trips_with_its_registration_token_hash(storage: Stores, kind: str) -> None:
    client = make_client(kind=kind, registration_token_hash=h("registration-token"), last_used_at=NOW + 5)
    storage.clients.add(client)
    assert storage.clients.get("client-1") == client
    assert storage.clients.list() == [client]


def test_a_client_without_a_registration_token_hash_reads_back_without_one(storage: Stores) -> None:
    storage.clients.add(make_client(registration_token_hash=None))
    stored = storage.clients.get("client-1")
    assert stored is not None and stored.registration_token_hash is None


def test_a_new_registration_token_hash_is_read_back_at_once(storage: Stores) -> None:
    # RFC 7592 §2.2 (PUT) may issue a new registration access token: the row is read on every
    # get, and an unchanged row's decoded client is reused only while the row is the same.
    storage.clients.add(make_client(registration_token_hash=h("token-1")))
    assert storage.clients.get("client-1") == make_client(registration_token_hash=h("token-1"))
    storage.clients.add(make_client(registration_token_hash=h("token-2")))
    assert storage.clients.get("client-1") == make_client(registration_token_hash=h("token-2"))
    storage.clients.add(make_client(registration_token_hash=None))
    assert storage.clients.get("client-1") == make_client(registration_token_hash=None)
    storage.clients.add(make_client(registration_token_hash=h("token-1")))
    assert storage.clients.get("client-1") == make_client(registration_token_hash=h("token-1"))


def test_public_client_without_optional_fields_round_trips(storage: Stores) -> None:
    client = make_client(
        token_endpoint_auth_method="none", secret_hash=None, client_name=None, scope=None, extra_metadata={}
    )
    storage.clients.add(client)
    stored = storage.clients.get("client-1")
    assert stored == client
    assert stored is not None and stored.is_public


def test_unknown_client_is_none(storage: Stores) -> None:
    assert storage.clients.get("nobody") is None


def test_adding_a_client_again_replaces_it_and_keeps_its_grants(storage: Stores) -> None:
    given_grant(storage)
    updated = make_client(client_name="Renamed", redirect_uris=("https://new.example/cb",))
    storage.clients.add(updated)
    assert storage.clients.get("client-1") == updated
    assert storage.grants.get_grant("grant-1") is not None


def test_list_returns_every_client(storage: Stores) -> None:
    assert storage.clients.list() == []
    first, second = make_client("client-1"), make_client("client-2", issued_at=NOW + 1)
    storage.clients.add(first)
    storage.clients.add(second)
    assert sorted(storage.clients.list(), key=lambda c: c.client_id) == [first, second]


def test_touch_records_last_use(storage: Stores) -> None:
    storage.clients.add(make_client())
    storage.clients.touch("client-1", NOW + 100)
    stored = storage.clients.get("client-1")
    assert stored is not None and stored.last_used_at == NOW + 100
    storage.clients.touch("nobody", NOW)  # unknown clients are ignored


def test_delete_removes_the_client_and_everything_issued_to_it(storage: Stores) -> None:
    given_grant(storage)
    storage.access_tokens.add_access_token(make_access_token())
    storage.refresh_tokens.add_refresh_token(make_refresh_token())
    storage.authorizations.add_code(make_code())
    storage.authorizations.add_pending(make_pending())

    assert storage.clients.delete("client-1") is True
    assert storage.clients.delete("client-1") is False
    assert storage.clients.get("client-1") is None
    assert storage.grants.get_grant("grant-1") is None
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") is None
    assert storage.access_tokens.get_access_token(h("at-hash-1")) is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-hash-1")) is None
    assert storage.authorizations.get_code(h("code-hash-1")) is None
    assert storage.authorizations.get_pending("pending-1") is None


def test_delete_unused_takes_only_unused_or_idle_clients_of_the_kind(storage: Stores) -> None:
    cutoff_unused, cutoff_idle, now = NOW, NOW - 90 * DAY, NOW + DAY
    # Never used: registered at the cut-off goes, a second later stays.
    storage.clients.add(make_client("never-used-old", issued_at=cutoff_unused))
    storage.authorizations.add_pending(make_pending("pending-of-old", client_id="never-used-old"))
    storage.clients.add(make_client("never-used-new", issued_at=cutoff_unused + 1))
    # Used once, long ago, nothing live: goes with its dead grant.
    storage.clients.add(make_client("idle", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
    given_grant(storage, make_grant("grant-idle", client_id="idle"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-idle"), grant_id="grant-idle", expires_at=now))
    # Used long ago but its refresh token still lives: stays.
    storage.clients.add(make_client("idle-live", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
    given_grant(storage, make_grant("grant-live", client_id="idle-live"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-live"), grant_id="grant-live", expires_at=now + 1))
    # Used long ago, its only live token belongs to a revoked grant: goes.
    storage.clients.add(make_client("idle-revoked", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
    given_grant(storage, make_grant("grant-revoked", client_id="idle-revoked"))
    storage.access_tokens.add_access_token(
        make_access_token(h("at-revoked"), grant_id="grant-revoked", expires_at=now + 1)
    )
    storage.grants.revoke_grant("grant-revoked", NOW - DAY)
    # Used recently: stays.
    storage.clients.add(make_client("recent", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle + 1))
    # Another kind is never deleted.
    storage.clients.add(make_client("operator", kind="operator", issued_at=cutoff_idle - DAY))

    deleted = storage.clients.delete_unused(
        "registered", never_used_before=cutoff_unused, idle_before=cutoff_idle, now=now
    )

    assert deleted == 3
    assert sorted(c.client_id for c in storage.clients.list()) == [
        "idle-live", "never-used-new", "operator", "recent"
    ]
    assert storage.authorizations.get_pending("pending-of-old") is None
    assert storage.grants.get_grant("grant-idle") is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-idle")) is None
    assert storage.grants.get_grant("grant-revoked") is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-live")) is not None


# -- AuthorizationStore: pending authorizations ---------------------------------------------


def test_pending_round_trip(storage: Stores) -> None:
    storage.clients.add(make_client())
    pending = make_pending()
    storage.authorizations.add_pending(pending)
    assert storage.authorizations.get_pending("pending-1") == pending
    assert storage.authorizations.get_pending("unknown") is None


def test_pending_with_upstream_and_no_state_round_trips(storage: Stores) -> None:
    storage.clients.add(make_client())
    pending = make_pending(request=replace(make_pending().request, state=None), upstream=make_upstream())
    storage.authorizations.add_pending(pending)
    assert storage.authorizations.get_pending("pending-1") == pending


def test_attach_upstream_only_once(storage: Stores) -> None:
    storage.clients.add(make_client())
    storage.authorizations.add_pending(make_pending())
    upstream = make_upstream()
    assert storage.authorizations.attach_upstream("pending-1", upstream) is True
    assert storage.authorizations.attach_upstream("pending-1", make_upstream(h("state-2"))) is False
    stored = storage.authorizations.get_pending("pending-1")
    assert stored is not None and stored.upstream == upstream
    assert storage.authorizations.attach_upstream("unknown", make_upstream(h("state-3"))) is False


def test_consume_upstream_is_single_use(storage: Stores) -> None:
    storage.clients.add(make_client())
    storage.authorizations.add_pending(make_pending())
    upstream = make_upstream()
    storage.authorizations.attach_upstream("pending-1", upstream)

    consumed = storage.authorizations.consume_upstream(upstream.state_hash, NOW + 10)
    assert consumed == replace(make_pending(), upstream=upstream, consumed_at=NOW + 10)
    assert storage.authorizations.consume_upstream(upstream.state_hash, NOW + 11) is None
    stored = storage.authorizations.get_pending("pending-1")
    assert stored is not None and stored.consumed_at == NOW + 10


def test_consume_upstream_refuses_expired_unknown_and_unattached(storage: Stores) -> None:
    storage.clients.add(make_client())
    storage.authorizations.add_pending(make_pending())
    upstream = make_upstream()
    storage.authorizations.attach_upstream("pending-1", upstream)
    assert storage.authorizations.consume_upstream(upstream.state_hash, NOW + 600) is None
    assert storage.authorizations.consume_upstream("unknown", NOW) is None
    storage.authorizations.add_pending(make_pending("pending-2"))
    # A pending authorization without an upstream transaction has no state to match.
    assert storage.authorizations.consume_upstream("", NOW) is None


def test_delete_pending(storage: Stores) -> None:
    storage.clients.add(make_client())
    storage.authorizations.add_pending(make_pending())
    storage.authorizations.delete_pending("pending-1")
    assert storage.authorizations.get_pending("pending-1") is None
    storage.authorizations.delete_pending("pending-1")  # deleting twice is harmless


# -- AuthorizationStore: codes --------------------------------------------------------------


def test_redeem_code_once(storage: Stores) -> None:
    grant = given_grant(storage)
    code = make_code()
    storage.authorizations.add_code(code)
    assert storage.authorizations.get_code(h("code-hash-1")) == (code, grant)

    assert storage.authorizations.redeem_code(h("code-hash-1"), NOW + 5) is True
    assert storage.authorizations.get_code(h("code-hash-1")) == (replace(code, redeemed_at=NOW + 5), grant)
    # Only the first redemption changes the row.
    assert storage.authorizations.redeem_code(h("code-hash-1"), NOW + 9) is False
    assert storage.authorizations.get_code(h("code-hash-1")) == (replace(code, redeemed_at=NOW + 5), grant)


def test_unknown_code(storage: Stores) -> None:
    assert storage.authorizations.get_code("unknown") is None
    assert storage.authorizations.redeem_code("unknown", NOW) is False


def test_get_code_returns_an_expired_code_for_the_service_to_judge(storage: Stores) -> None:
    given_grant(storage)
    storage.authorizations.add_code(make_code())
    found = storage.authorizations.get_code(h("code-hash-1"))
    assert found is not None and found[0].expires_at == NOW + 60


# -- GrantStore: grants ---------------------------------------------------------------------


def test_grant_round_trip_keeps_claims_and_upstream_tokens(storage: Stores) -> None:
    grant = given_grant(storage)
    assert storage.grants.get_grant("grant-1") == grant
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") == make_upstream_tokens()
    assert storage.grants.get_grant("unknown") is None


def test_grant_without_upstream_tokens_round_trips(storage: Stores) -> None:
    upstream = UpstreamTokens(access_token=h("at-only"), expires_at=NOW + 1)
    for grant, tokens in ((make_grant("grant-1"), None), (make_grant("grant-2", claims={}), upstream)):
        given_grant(storage, grant, tokens)
        assert storage.grants.get_grant(grant.grant_id) == grant
        assert storage.upstream_tokens.get_upstream_tokens(grant.grant_id) == tokens


def test_get_upstream_tokens_is_none_for_an_unknown_grant_or_one_without_them(storage: Stores) -> None:
    assert storage.upstream_tokens.get_upstream_tokens("unknown") is None
    given_grant(storage, make_grant("grant-none"), None)
    assert storage.grants.get_grant("grant-none") is not None
    assert storage.upstream_tokens.get_upstream_tokens("grant-none") is None


def test_list_grants_all_and_by_client(storage: Stores) -> None:
    first = given_grant(storage, make_grant("grant-1", "client-1"))
    second = given_grant(storage, make_grant("grant-2", "client-2", created_at=NOW + 1))
    assert sorted(storage.grants.list_grants(), key=lambda g: g.grant_id) == [first, second]
    assert storage.grants.list_grants("client-2") == [second]
    assert storage.grants.list_grants("nobody") == []


def test_upstream_refresh_lock_is_exclusive_until_released_or_expired(storage: Stores) -> None:
    given_grant(storage)
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "a", NOW, NOW + 30) is True
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "b", NOW + 10, NOW + 40) is False
    # Only the holder releases it.
    storage.upstream_tokens.release_upstream_refresh_lock("grant-1", "b")
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "b", NOW + 10, NOW + 40) is False
    storage.upstream_tokens.release_upstream_refresh_lock("grant-1", "a")
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "b", NOW + 11, NOW + 41) is True
    # A holder that died leaves a lease that expires.
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "c", NOW + 41, NOW + 71) is True
    assert storage.upstream_tokens.acquire_upstream_refresh_lock("unknown", "a", NOW, NOW + 30) is False


def test_update_upstream_tokens(storage: Stores) -> None:
    given_grant(storage)
    fresh = make_upstream_tokens(access_token="new-upstream-at", expires_at=NOW + 2 * HOUR, id_token=None)
    storage.upstream_tokens.update_upstream_tokens("grant-1", fresh)
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") == fresh
    # The grant itself is untouched.
    assert storage.grants.get_grant("grant-1") == make_grant()
    # A grant stored without upstream tokens gets them.
    given_grant(storage, make_grant("grant-2"), None)
    storage.upstream_tokens.update_upstream_tokens("grant-2", fresh)
    assert storage.upstream_tokens.get_upstream_tokens("grant-2") == fresh


def test_revoke_grant_revokes_every_token_issued_from_it(storage: Stores) -> None:
    given_grant(storage)
    given_grant(storage, make_grant("grant-2"))
    storage.access_tokens.add_access_token(make_access_token(h("at-1")))
    storage.access_tokens.add_access_token(make_access_token(h("at-2"), revoked_at=NOW + 1))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1")))
    storage.access_tokens.add_access_token(make_access_token(h("other-at"), grant_id="grant-2"))

    storage.grants.revoke_grant("grant-1", NOW + 50)

    grant = storage.grants.get_grant("grant-1")
    assert grant is not None and grant.revoked_at == NOW + 50 and grant.is_revoked
    at1, at2, rt1 = (
        storage.access_tokens.get_access_token(h("at-1")),
        storage.access_tokens.get_access_token(h("at-2")),
        storage.refresh_tokens.get_refresh_token(h("rt-1")),
    )
    assert at1 is not None and at1[0].revoked_at == NOW + 50 and at1[1].is_revoked
    # An earlier revocation keeps its time.
    assert at2 is not None and at2[0].revoked_at == NOW + 1
    assert rt1 is not None and rt1[0].revoked_at == NOW + 50
    other = storage.access_tokens.get_access_token(h("other-at"))
    assert other is not None and other[0].revoked_at is None and not other[1].is_revoked

    storage.grants.revoke_grant("grant-1", NOW + 99)
    again = storage.grants.get_grant("grant-1")
    assert again is not None and again.revoked_at == NOW + 50
    storage.grants.revoke_grant("unknown", NOW)


# -- GrantStore: access tokens --------------------------------------------------------------


def test_get_access_token_returns_the_token_and_its_grant(storage: Stores) -> None:
    grant = given_grant(storage)
    token = make_access_token()
    storage.access_tokens.add_access_token(token)
    assert storage.access_tokens.get_access_token(h("at-hash-1")) == (token, grant)
    assert storage.access_tokens.get_access_token("unknown") is None


def test_revoke_access_token_only_that_token(storage: Stores) -> None:
    given_grant(storage)
    storage.access_tokens.add_access_token(make_access_token(h("at-1")))
    storage.access_tokens.add_access_token(make_access_token(h("at-2")))
    storage.access_tokens.revoke_access_token(h("at-1"), NOW + 7)
    storage.access_tokens.revoke_access_token(h("at-1"), NOW + 8)
    storage.access_tokens.revoke_access_token("unknown", NOW)
    first, second = storage.access_tokens.get_access_token(h("at-1")), storage.access_tokens.get_access_token(h("at-2"))
    assert first is not None and first[0].revoked_at == NOW + 7
    assert second is not None and second[0].revoked_at is None
    assert not first[1].is_revoked


def test_the_grant_of_an_access_token_is_the_grant_as_it_is_now(storage: Stores) -> None:
    grant = given_grant(storage)
    storage.access_tokens.add_access_token(make_access_token(h("at-alone")))
    storage.access_tokens.add_access_token(make_access_token(h("at-live")))
    storage.access_tokens.revoke_access_token(h("at-alone"), NOW + 5)
    alone = storage.access_tokens.get_access_token(h("at-alone"))
    assert alone is not None and alone[1] == grant

    storage.grants.revoke_grant("grant-1", NOW + 50)
    storage.grants.revoke_grant("grant-1", NOW + 60)
    # A token issued after the revocation (the service never does it) still shows it.
    storage.access_tokens.add_access_token(make_access_token(h("at-after")))
    revoked = replace(grant, revoked_at=NOW + 50)
    assert storage.grants.get_grant("grant-1") == revoked
    for token_hash, revoked_at in ((h("at-alone"), NOW + 5), (h("at-live"), NOW + 50), (h("at-after"), None)):
        found = storage.access_tokens.get_access_token(token_hash)
        assert found is not None and found == (make_access_token(token_hash, revoked_at=revoked_at), revoked)


def test_access_tokens_whose_hashes_share_all_but_their_last_bytes_are_distinct(storage: Stores) -> None:
    grant = given_grant(storage)
    prefix = "9c" * 31
    first = make_access_token(prefix + "01", expires_at=NOW + 10)
    second = make_access_token(prefix + "02", scopes=("mcp:write",))
    storage.access_tokens.add_access_token(first)
    storage.access_tokens.add_access_token(second)
    assert storage.access_tokens.get_access_token(prefix + "01") == (first, grant)
    assert storage.access_tokens.get_access_token(prefix + "02") == (second, grant)
    assert storage.access_tokens.get_access_token(prefix + "03") is None
    storage.access_tokens.revoke_access_token(prefix + "02", NOW + 1)
    assert storage.access_tokens.get_access_token(prefix + "01") == (first, grant)
    assert storage.admin.purge_expired(NOW + 10) == 1
    assert storage.access_tokens.get_access_token(prefix + "01") is None
    assert storage.access_tokens.get_access_token(prefix + "02") == (replace(second, revoked_at=NOW + 1), grant)


# -- GrantStore: refresh tokens -------------------------------------------------------------


def test_refresh_token_round_trip(storage: Stores) -> None:
    grant = given_grant(storage)
    token = make_refresh_token()
    storage.refresh_tokens.add_refresh_token(token)
    assert storage.refresh_tokens.get_refresh_token(h("rt-hash-1")) == (token, grant)
    assert storage.refresh_tokens.get_refresh_token("unknown") is None


def test_rotation_keeps_the_rotated_token_and_newer_generations(storage: Stores) -> None:
    given_grant(storage)
    given_grant(storage, make_grant("grant-2"))
    assert storage.refresh_tokens.current_refresh_generation("grant-1") is None
    storage.refresh_tokens.add_refresh_token(
        make_refresh_token(h("rt-0"), generation=0, rotated_at=NOW, retried_at=NOW + 1)
    )
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1a"), generation=1))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1b"), generation=1))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-other"), grant_id="grant-2", generation=0))
    assert storage.refresh_tokens.current_refresh_generation("grant-1") == 1

    assert storage.refresh_tokens.rotate_refresh_token(h("rt-1b"), NOW + 10) is True
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-2"), generation=2))
    assert storage.refresh_tokens.current_refresh_generation("grant-1") == 2
    # The token rotated now stays (a retry within the grace); its sibling and the older
    # generation go; other grants are untouched.
    rotated = storage.refresh_tokens.get_refresh_token(h("rt-1b"))
    assert rotated is not None and rotated[0] == make_refresh_token(h("rt-1b"), generation=1, rotated_at=NOW + 10)
    assert storage.refresh_tokens.get_refresh_token(h("rt-1a")) is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-0")) is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-2")) is not None
    assert storage.refresh_tokens.get_refresh_token(h("rt-other")) is not None
    # A token is rotated once.
    assert storage.refresh_tokens.rotate_refresh_token(h("rt-1b"), NOW + 11) is False
    assert storage.refresh_tokens.rotate_refresh_token("unknown", NOW + 11) is False


def test_a_retry_is_recorded_once(storage: Stores) -> None:
    given_grant(storage)
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-0"), rotated_at=NOW))
    assert storage.refresh_tokens.mark_refresh_retried(h("rt-0"), NOW + 5) is True
    assert storage.refresh_tokens.mark_refresh_retried(h("rt-0"), NOW + 6) is False
    retried = storage.refresh_tokens.get_refresh_token(h("rt-0"))
    assert retried is not None and retried[0] == make_refresh_token(h("rt-0"), rotated_at=NOW, retried_at=NOW + 5)
    assert storage.refresh_tokens.mark_refresh_retried("unknown", NOW) is False


# -- GrantStore: transactions ---------------------------------------------------------------


def test_atomic_commits(storage: Stores) -> None:
    storage.clients.add(make_client())
    with storage.unit_of_work.atomic():
        storage.grants.add_grant(make_grant(), make_upstream_tokens())
        storage.access_tokens.add_access_token(make_access_token())
    assert storage.access_tokens.get_access_token(h("at-hash-1")) is not None
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") == make_upstream_tokens()


def test_atomic_rolls_back_on_exception(storage: Stores) -> None:
    storage.clients.add(make_client())

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with storage.unit_of_work.atomic():
            storage.grants.add_grant(make_grant(), make_upstream_tokens())
            storage.authorizations.add_code(make_code())
            storage.access_tokens.add_access_token(make_access_token())
            raise Boom()
    assert storage.grants.get_grant("grant-1") is None
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") is None
    assert storage.access_tokens.get_access_token(h("at-hash-1")) is None
    assert storage.authorizations.get_code(h("code-hash-1")) is None


def test_atomic_nests(storage: Stores) -> None:
    given_grant(storage)
    storage.refresh_tokens.add_refresh_token(make_refresh_token())
    with storage.unit_of_work.atomic():
        found = storage.refresh_tokens.get_refresh_token(h("rt-hash-1"))
        assert found is not None
        # revoke_grant is itself atomic: nesting joins the open transaction.
        storage.grants.revoke_grant(found[1].grant_id, NOW + 1)
    revoked = storage.refresh_tokens.get_refresh_token(h("rt-hash-1"))
    assert revoked is not None and revoked[0].revoked_at == NOW + 1


# -- GrantStore: purge ----------------------------------------------------------------------


def test_purge_removes_expired_rows_and_keeps_live_ones(storage: Stores) -> None:
    given_grant(storage)
    storage.authorizations.add_pending(make_pending("pending-old", expires_at=NOW + 10))
    storage.authorizations.add_pending(make_pending("pending-live", expires_at=NOW + 1000))
    storage.authorizations.add_code(make_code(h("code-old"), expires_at=NOW + 10))
    storage.authorizations.add_code(make_code(h("code-live"), expires_at=NOW + 1000))
    storage.access_tokens.add_access_token(make_access_token(h("at-old"), expires_at=NOW + 10))
    storage.access_tokens.add_access_token(make_access_token(h("at-live"), expires_at=NOW + 1000))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-old"), expires_at=NOW + 10))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-live"), expires_at=NOW + 1000))

    assert storage.admin.purge_expired(NOW + 10) == 4

    assert storage.authorizations.get_pending("pending-old") is None
    assert storage.authorizations.get_pending("pending-live") is not None
    assert storage.authorizations.get_code(h("code-old")) is None
    assert storage.authorizations.get_code(h("code-live")) is not None
    assert storage.access_tokens.get_access_token(h("at-old")) is None
    assert storage.access_tokens.get_access_token(h("at-live")) is not None
    assert storage.refresh_tokens.get_refresh_token(h("rt-old")) is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-live")) is not None
    assert storage.grants.get_grant("grant-1") is not None
    assert storage.admin.purge_expired(NOW + 10) == 0


def test_purge_removes_long_revoked_grants_with_their_tokens(storage: Stores) -> None:
    given_grant(storage, make_grant("grant-old"))
    given_grant(storage, make_grant("grant-recent"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-old"), grant_id="grant-old"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-recent"), grant_id="grant-recent"))
    storage.grants.revoke_grant("grant-old", NOW)
    storage.grants.revoke_grant("grant-recent", NOW + 2 * DAY - HOUR)

    # The old grant and its refresh token go; the recently revoked one stays, so a replay
    # of its token still meets "revoked" rather than "unknown".
    assert storage.admin.purge_expired(NOW + 2 * DAY) == 2
    assert storage.grants.get_grant("grant-old") is None
    assert storage.refresh_tokens.get_refresh_token(h("rt-old")) is None
    assert storage.grants.get_grant("grant-recent") is not None
    assert storage.refresh_tokens.get_refresh_token(h("rt-recent")) is not None


def test_live_grants_counts_the_grants_not_revoked(storage: Stores) -> None:
    # What /metrics reads at each scrape (issue 11 §4).
    assert storage.admin.live_grants() == 0
    given_grant(storage, make_grant("grant-a"))
    given_grant(storage, make_grant("grant-b"))
    given_grant(storage, make_grant("grant-c", client_id="client-2"))
    storage.grants.revoke_grant("grant-b", NOW)
    assert storage.admin.live_grants() == 2
