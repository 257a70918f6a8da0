"""The storage contract of what the administration CLI needs (issue 11 §2): disabling and
enabling a client (ClientRepository.disable / enable) and who is connected (GrantStore.grant_usage),
on every backend."""

from __future__ import annotations

from dataclasses import replace

from mcp_oauth_bridge.domain.ports import GrantUsage

from tests.fakes import InMemoryStorage

from .samples import (
    DAY,
    HOUR,
    NOW,
    h,
    make_access_token,
    make_client,
    make_code,
    make_grant,
    make_pending,
    make_refresh_token,
)
from .stores import Stores
from .test_storage_contract import given_grant


def test_disable_marks_the_client_and_revokes_its_live_access_tokens_only(storage: Stores) -> None:
    given_grant(storage, make_grant("grant-1", "client-1"))
    given_grant(storage, make_grant("grant-2", "client-2"))
    storage.access_tokens.add_access_token(make_access_token(h("at-1"), "grant-1"))
    storage.access_tokens.add_access_token(make_access_token(h("at-expired"), "grant-1", expires_at=NOW - 1))
    storage.access_tokens.add_access_token(make_access_token(h("at-other"), "grant-2", client_id="client-2"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1"), "grant-1"))

    assert storage.clients.disable("client-1", NOW) is True

    client = storage.clients.get("client-1")
    assert client is not None and client.disabled_at == NOW and client.is_disabled
    found = storage.access_tokens.get_access_token(h("at-1"))
    assert found is not None and found[0].revoked_at == NOW
    # The grant itself, its refresh token and other clients' tokens are untouched.
    assert found[1].revoked_at is None
    expired = storage.access_tokens.get_access_token(h("at-expired"))
    assert expired is not None and expired[0].revoked_at is None
    other = storage.access_tokens.get_access_token(h("at-other"))
    assert other is not None and other[0].revoked_at is None
    refresh = storage.refresh_tokens.get_refresh_token(h("rt-1"))
    assert refresh is not None and refresh[0].revoked_at is None and refresh[1].revoked_at is None
    other_client = storage.clients.get("client-2")
    assert other_client is not None and other_client.disabled_at is None


def test_disable_again_keeps_the_first_time_and_enable_clears_it(storage: Stores) -> None:
    storage.clients.add(make_client("client-1"))
    assert storage.clients.disable("client-1", NOW)
    assert storage.clients.disable("client-1", NOW + 5)
    assert storage.clients.get("client-1").disabled_at == NOW  # type: ignore[union-attr]
    assert storage.clients.enable("client-1") is True
    client = storage.clients.get("client-1")
    assert client is not None and client.disabled_at is None and not client.is_disabled


def test_disable_and_enable_of_an_unknown_client_are_false(storage: Stores) -> None:
    assert storage.clients.disable("nobody", NOW) is False
    assert storage.clients.enable("nobody") is False


def test_rewriting_a_disabled_client_keeps_it_disabled(storage: Stores) -> None:
    # RFC 7592 updates and new metadata documents rewrite the client with add(); only enable
    # may lift the mark.
    storage.clients.add(make_client("client-1"))
    storage.clients.disable("client-1", NOW)
    storage.clients.add(replace(make_client("client-1"), client_name="Renamed"))
    client = storage.clients.get("client-1")
    assert client is not None and client.client_name == "Renamed" and client.disabled_at == NOW
    assert [c.disabled_at for c in storage.clients.list()] == [NOW]


def test_grant_usage_lists_live_grants_with_the_last_token_issued(storage: Stores) -> None:
    first = given_grant(storage, make_grant("grant-1", "client-1", created_at=NOW - 2 * DAY))
    second = given_grant(storage, make_grant("grant-2", "client-2", created_at=NOW - DAY))
    third = given_grant(storage, make_grant("grant-3", "client-1", subject="user-2", created_at=NOW - HOUR))
    given_grant(storage, make_grant("grant-4", "client-1", created_at=NOW))
    storage.grants.revoke_grant("grant-4", NOW)
    storage.access_tokens.add_access_token(make_access_token(h("at-1"), "grant-1", issued_at=NOW - 10))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1"), "grant-1", issued_at=NOW - 5))
    storage.access_tokens.add_access_token(
        make_access_token(h("at-2"), "grant-2", client_id="client-2", issued_at=NOW - 7)
    )

    assert storage.grants.grant_usage() == [
        GrantUsage(first, NOW - 5),
        GrantUsage(second, NOW - 7),
        GrantUsage(third, None),
    ]
    assert storage.grants.grant_usage(subject="user-1") == [GrantUsage(first, NOW - 5), GrantUsage(second, NOW - 7)]
    assert storage.grants.grant_usage(client_id="client-1") == [GrantUsage(first, NOW - 5), GrantUsage(third, None)]
    assert storage.grants.grant_usage(subject="user-2", client_id="client-2") == []


def test_purge_by_kind_counts_what_went_from_each_table(storage: Stores) -> None:
    given_grant(storage)
    given_grant(storage, make_grant("grant-revoked"))
    storage.authorizations.add_pending(make_pending("pending-old", expires_at=NOW + 10))
    storage.authorizations.add_pending(make_pending("pending-live", expires_at=NOW + 1000))
    storage.authorizations.add_code(make_code(h("code-old"), expires_at=NOW + 10))
    for n in range(2):
        storage.access_tokens.add_access_token(make_access_token(h(f"at-old-{n}"), expires_at=NOW + 10))
    storage.access_tokens.add_access_token(make_access_token(h("at-live"), expires_at=NOW + 1000))
    # A grant revoked long ago goes with its (unexpired) refresh token.
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-revoked"), "grant-revoked"))
    storage.grants.revoke_grant("grant-revoked", NOW - 2 * DAY)

    assert storage.admin.purge_expired_by_kind(NOW + 10) == {
        "pending_authorizations": 1,
        "authorization_codes": 1,
        "access_tokens": 2,
        "refresh_tokens": 1,
        "grants": 1,
        "client_metadata_documents": 0,
    }
    assert set(storage.admin.purge_expired_by_kind(NOW + 10).values()) == {0}
    assert storage.access_tokens.get_access_token(h("at-live")) is not None


def test_database_size_grows_with_what_is_stored(storage: Stores) -> None:
    before = storage.admin.database_size()
    for n in range(300):
        given_grant(storage, make_grant(f"grant-{n}", claims={"padding": "x" * 1000}))
    after = storage.admin.database_size()
    # The in-memory fake has no size; the SQL backends report the bytes on disk.
    assert after == before == 0 if isinstance(storage.admin, InMemoryStorage) else after > before > 0


def test_is_disabled_reads_the_mark(storage: Stores) -> None:
    storage.clients.add(make_client("client-1"))
    assert storage.clients.is_disabled("client-1") is False
    storage.clients.disable("client-1", NOW)
    assert storage.clients.is_disabled("client-1") is True
    storage.clients.enable("client-1")
    assert storage.clients.is_disabled("client-1") is False
    assert storage.clients.is_disabled("nobody") is False
