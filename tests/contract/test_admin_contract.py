"""The storage contract of what the administration CLI needs (issue 11 §2): disabling and
enabling a client (ClientRepository.disable / enable) and who is connected (GrantStore.grant_usage),
on every backend."""

from __future__ import annotations

from dataclasses import replace

from mcp_oauth_bridge.domain.ports import GrantUsage

from .samples import DAY, HOUR, NOW, h, make_access_token, make_client, make_grant, make_refresh_token
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
