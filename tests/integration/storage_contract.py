"""The storage contract: what every ClientRepository, AuthorizationStore and GrantStore adapter
must do, with the semantics of tests/fakes.py.

Reuse it by subclassing ``StorageContract`` in a ``Test...`` class that provides the fixtures
``clients_repo``, ``authorization_store`` and ``grant_store`` (all on one empty database).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mcp_oauth_bridge.domain.model import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    Client,
    Grant,
    PendingAuthorization,
    RefreshToken,
    UpstreamTokens,
    UpstreamTransaction,
)
from mcp_oauth_bridge.domain.ports import AuthorizationStore, ClientRepository, GrantStore

NOW = 1_700_000_000
HOUR = 3600
DAY = 24 * HOUR
RESOURCE = "https://auth.example.com/mcp"
REDIRECT_URI = "http://127.0.0.1:33418/callback"
# RFC 7636 Appendix B.
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def make_client(client_id: str = "client-1", **changes: Any) -> Client:
    client = Client(
        client_id=client_id,
        redirect_uris=(REDIRECT_URI, "https://app.example/cb"),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        token_endpoint_auth_method="client_secret_post",
        issued_at=NOW,
        client_name="Example Client",
        scope="mcp:read mcp:write",
        extra_metadata={"logo_uri": "https://app.example/logo.png", "contacts": ["ops@app.example"], "x": {"n": 1}},
        secret_hash="c" * 64,
        kind="registered",
        last_used_at=None,
    )
    return replace(client, **changes)


def make_pending(pending_id: str = "pending-1", client_id: str = "client-1", **changes: Any) -> PendingAuthorization:
    pending = PendingAuthorization(
        pending_id=pending_id,
        request=AuthorizationRequest(
            client_id=client_id,
            redirect_uri=REDIRECT_URI,
            scopes=("mcp:read", "mcp:write"),
            resource=RESOURCE,
            code_challenge=CHALLENGE,
            code_challenge_method="S256",
            state="client-state-é",
        ),
        csrf_token_hash="f" * 64,
        browser_binding_hash="b" * 64,
        created_at=NOW,
        expires_at=NOW + 600,
    )
    return replace(pending, **changes)


def make_upstream(state_hash: str = "s" * 64) -> UpstreamTransaction:
    return UpstreamTransaction(state_hash=state_hash, code_verifier="mob_pv_" + "v" * 43, nonce="mob_n_" + "n" * 43)


def make_upstream_tokens(**changes: Any) -> UpstreamTokens:
    tokens = UpstreamTokens(
        access_token="upstream-access-token",
        expires_at=NOW + HOUR,
        refresh_token="upstream-refresh-token",
        scope="openid profile offline_access",
        id_token="header.payload.signature",
    )
    return replace(tokens, **changes)


def make_grant(grant_id: str = "grant-1", client_id: str = "client-1", **changes: Any) -> Grant:
    grant = Grant(
        grant_id=grant_id,
        client_id=client_id,
        subject="user-1",
        claims={"preferred_username": "alice", "email": "alice@example.com", "groups": ["a", "b"], "n": 1},
        scopes=("mcp:read", "mcp:write"),
        resource=RESOURCE,
        created_at=NOW,
    )
    return replace(grant, **changes)


def make_code(code_hash: str = "code-hash-1", grant_id: str = "grant-1", **changes: Any) -> AuthorizationCode:
    code = AuthorizationCode(
        code_hash=code_hash,
        grant_id=grant_id,
        client_id="client-1",
        redirect_uri=REDIRECT_URI,
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
        resource=RESOURCE,
        scopes=("mcp:read",),
        issued_at=NOW,
        expires_at=NOW + 60,
    )
    return replace(code, **changes)


def make_access_token(token_hash: str = "at-hash-1", grant_id: str = "grant-1", **changes: Any) -> AccessToken:
    token = AccessToken(
        token_hash=token_hash,
        grant_id=grant_id,
        client_id="client-1",
        scopes=("mcp:read",),
        resource=RESOURCE,
        issued_at=NOW,
        expires_at=NOW + HOUR,
    )
    return replace(token, **changes)


def make_refresh_token(token_hash: str = "rt-hash-1", grant_id: str = "grant-1", **changes: Any) -> RefreshToken:
    token = RefreshToken(
        token_hash=token_hash,
        grant_id=grant_id,
        client_id="client-1",
        generation=0,
        scopes=("mcp:read", "mcp:write"),
        resource=RESOURCE,
        issued_at=NOW,
        expires_at=NOW + 30 * DAY,
    )
    return replace(token, **changes)


class StorageContract:
    """Every port method, against a real database; subclasses provide the three fixtures."""

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def given_grant(
        clients_repo: ClientRepository,
        grant_store: GrantStore,
        grant: Grant | None = None,
        upstream: UpstreamTokens | None = make_upstream_tokens(),
    ) -> Grant:
        grant = grant or make_grant()
        if clients_repo.get(grant.client_id) is None:
            clients_repo.add(make_client(grant.client_id))
        grant_store.add_grant(grant, upstream)
        return grant

    # -- ClientRepository -----------------------------------------------------------------------

    def test_client_round_trip_keeps_every_field(self, clients_repo: ClientRepository) -> None:
        client = make_client(kind="cimd", last_used_at=NOW + 5)
        clients_repo.add(client)
        assert clients_repo.get("client-1") == client

    def test_public_client_without_optional_fields_round_trips(self, clients_repo: ClientRepository) -> None:
        client = make_client(
            token_endpoint_auth_method="none", secret_hash=None, client_name=None, scope=None, extra_metadata={}
        )
        clients_repo.add(client)
        stored = clients_repo.get("client-1")
        assert stored == client
        assert stored is not None and stored.is_public

    def test_unknown_client_is_none(self, clients_repo: ClientRepository) -> None:
        assert clients_repo.get("nobody") is None

    def test_adding_a_client_again_replaces_it_and_keeps_its_grants(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        updated = make_client(client_name="Renamed", redirect_uris=("https://new.example/cb",))
        clients_repo.add(updated)
        assert clients_repo.get("client-1") == updated
        assert grant_store.get_grant("grant-1") is not None

    def test_list_returns_every_client(self, clients_repo: ClientRepository) -> None:
        assert clients_repo.list() == []
        first, second = make_client("client-1"), make_client("client-2", issued_at=NOW + 1)
        clients_repo.add(first)
        clients_repo.add(second)
        assert sorted(clients_repo.list(), key=lambda c: c.client_id) == [first, second]

    def test_touch_records_last_use(self, clients_repo: ClientRepository) -> None:
        clients_repo.add(make_client())
        clients_repo.touch("client-1", NOW + 100)
        stored = clients_repo.get("client-1")
        assert stored is not None and stored.last_used_at == NOW + 100
        clients_repo.touch("nobody", NOW)  # unknown clients are ignored

    def test_delete_removes_the_client_and_everything_issued_to_it(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        grant_store.add_access_token(make_access_token())
        grant_store.add_refresh_token(make_refresh_token())
        authorization_store.add_code(make_code())
        authorization_store.add_pending(make_pending())

        assert clients_repo.delete("client-1") is True
        assert clients_repo.delete("client-1") is False
        assert clients_repo.get("client-1") is None
        assert grant_store.get_grant("grant-1") is None
        assert grant_store.get_upstream_tokens("grant-1") is None
        assert grant_store.get_access_token("at-hash-1") is None
        assert grant_store.get_refresh_token("rt-hash-1") is None
        assert authorization_store.get_code("code-hash-1") is None
        assert authorization_store.get_pending("pending-1") is None

    def test_delete_unused_takes_only_unused_or_idle_clients_of_the_kind(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        cutoff_unused, cutoff_idle, now = NOW, NOW - 90 * DAY, NOW + DAY
        # Never used: registered at the cut-off goes, a second later stays.
        clients_repo.add(make_client("never-used-old", issued_at=cutoff_unused))
        authorization_store.add_pending(make_pending("pending-of-old", client_id="never-used-old"))
        clients_repo.add(make_client("never-used-new", issued_at=cutoff_unused + 1))
        # Used once, long ago, nothing live: goes with its dead grant.
        clients_repo.add(make_client("idle", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
        self.given_grant(clients_repo, grant_store, make_grant("grant-idle", client_id="idle"))
        grant_store.add_refresh_token(make_refresh_token("rt-idle", grant_id="grant-idle", expires_at=now))
        # Used long ago but its refresh token still lives: stays.
        clients_repo.add(make_client("idle-live", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
        self.given_grant(clients_repo, grant_store, make_grant("grant-live", client_id="idle-live"))
        grant_store.add_refresh_token(make_refresh_token("rt-live", grant_id="grant-live", expires_at=now + 1))
        # Used long ago, its only live token belongs to a revoked grant: goes.
        clients_repo.add(make_client("idle-revoked", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle))
        self.given_grant(clients_repo, grant_store, make_grant("grant-revoked", client_id="idle-revoked"))
        grant_store.add_access_token(make_access_token("at-revoked", grant_id="grant-revoked", expires_at=now + 1))
        grant_store.revoke_grant("grant-revoked", NOW - DAY)
        # Used recently: stays.
        clients_repo.add(make_client("recent", issued_at=cutoff_idle - DAY, last_used_at=cutoff_idle + 1))
        # Another kind is never deleted.
        clients_repo.add(make_client("operator", kind="operator", issued_at=cutoff_idle - DAY))

        deleted = clients_repo.delete_unused(
            "registered", never_used_before=cutoff_unused, idle_before=cutoff_idle, now=now
        )

        assert deleted == 3
        assert sorted(c.client_id for c in clients_repo.list()) == [
            "idle-live", "never-used-new", "operator", "recent"
        ]
        assert authorization_store.get_pending("pending-of-old") is None
        assert grant_store.get_grant("grant-idle") is None
        assert grant_store.get_refresh_token("rt-idle") is None
        assert grant_store.get_grant("grant-revoked") is None
        assert grant_store.get_refresh_token("rt-live") is not None

    # -- AuthorizationStore: pending authorizations ---------------------------------------------

    def test_pending_round_trip(self, clients_repo: ClientRepository, authorization_store: AuthorizationStore) -> None:
        clients_repo.add(make_client())
        pending = make_pending()
        authorization_store.add_pending(pending)
        assert authorization_store.get_pending("pending-1") == pending
        assert authorization_store.get_pending("unknown") is None

    def test_pending_with_upstream_and_no_state_round_trips(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore
    ) -> None:
        clients_repo.add(make_client())
        pending = make_pending(request=replace(make_pending().request, state=None), upstream=make_upstream())
        authorization_store.add_pending(pending)
        assert authorization_store.get_pending("pending-1") == pending

    def test_attach_upstream_only_once(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore
    ) -> None:
        clients_repo.add(make_client())
        authorization_store.add_pending(make_pending())
        upstream = make_upstream()
        assert authorization_store.attach_upstream("pending-1", upstream) is True
        assert authorization_store.attach_upstream("pending-1", make_upstream("t" * 64)) is False
        stored = authorization_store.get_pending("pending-1")
        assert stored is not None and stored.upstream == upstream
        assert authorization_store.attach_upstream("unknown", make_upstream("u" * 64)) is False

    def test_consume_upstream_is_single_use(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore
    ) -> None:
        clients_repo.add(make_client())
        authorization_store.add_pending(make_pending())
        upstream = make_upstream()
        authorization_store.attach_upstream("pending-1", upstream)

        consumed = authorization_store.consume_upstream(upstream.state_hash, NOW + 10)
        assert consumed == replace(make_pending(), upstream=upstream, consumed_at=NOW + 10)
        assert authorization_store.consume_upstream(upstream.state_hash, NOW + 11) is None
        stored = authorization_store.get_pending("pending-1")
        assert stored is not None and stored.consumed_at == NOW + 10

    def test_consume_upstream_refuses_expired_unknown_and_unattached(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore
    ) -> None:
        clients_repo.add(make_client())
        authorization_store.add_pending(make_pending())
        upstream = make_upstream()
        authorization_store.attach_upstream("pending-1", upstream)
        assert authorization_store.consume_upstream(upstream.state_hash, NOW + 600) is None
        assert authorization_store.consume_upstream("unknown", NOW) is None
        authorization_store.add_pending(make_pending("pending-2"))
        # A pending authorization without an upstream transaction has no state to match.
        assert authorization_store.consume_upstream("", NOW) is None

    def test_delete_pending(self, clients_repo: ClientRepository, authorization_store: AuthorizationStore) -> None:
        clients_repo.add(make_client())
        authorization_store.add_pending(make_pending())
        authorization_store.delete_pending("pending-1")
        assert authorization_store.get_pending("pending-1") is None
        authorization_store.delete_pending("pending-1")  # deleting twice is harmless

    # -- AuthorizationStore: codes --------------------------------------------------------------

    def test_redeem_code_once(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        code = make_code()
        authorization_store.add_code(code)
        assert authorization_store.get_code("code-hash-1") == (code, grant)

        assert authorization_store.redeem_code("code-hash-1", NOW + 5) is True
        assert authorization_store.get_code("code-hash-1") == (replace(code, redeemed_at=NOW + 5), grant)
        # Only the first redemption changes the row.
        assert authorization_store.redeem_code("code-hash-1", NOW + 9) is False
        assert authorization_store.get_code("code-hash-1") == (replace(code, redeemed_at=NOW + 5), grant)

    def test_unknown_code(self, authorization_store: AuthorizationStore) -> None:
        assert authorization_store.get_code("unknown") is None
        assert authorization_store.redeem_code("unknown", NOW) is False

    def test_get_code_returns_an_expired_code_for_the_service_to_judge(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        authorization_store.add_code(make_code())
        found = authorization_store.get_code("code-hash-1")
        assert found is not None and found[0].expires_at == NOW + 60

    # -- GrantStore: grants ---------------------------------------------------------------------

    def test_grant_round_trip_keeps_claims_and_upstream_tokens(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        assert grant_store.get_grant("grant-1") == grant
        assert grant_store.get_upstream_tokens("grant-1") == make_upstream_tokens()
        assert grant_store.get_grant("unknown") is None

    def test_grant_without_upstream_tokens_round_trips(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        upstream = UpstreamTokens(access_token="at-only", expires_at=NOW + 1)
        for grant, tokens in ((make_grant("grant-1"), None), (make_grant("grant-2", claims={}), upstream)):
            self.given_grant(clients_repo, grant_store, grant, tokens)
            assert grant_store.get_grant(grant.grant_id) == grant
            assert grant_store.get_upstream_tokens(grant.grant_id) == tokens

    def test_get_upstream_tokens_is_none_for_an_unknown_grant_or_one_without_them(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        assert grant_store.get_upstream_tokens("unknown") is None
        self.given_grant(clients_repo, grant_store, make_grant("grant-none"), None)
        assert grant_store.get_grant("grant-none") is not None
        assert grant_store.get_upstream_tokens("grant-none") is None

    def test_list_grants_all_and_by_client(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        first = self.given_grant(clients_repo, grant_store, make_grant("grant-1", "client-1"))
        second = self.given_grant(clients_repo, grant_store, make_grant("grant-2", "client-2", created_at=NOW + 1))
        assert sorted(grant_store.list_grants(), key=lambda g: g.grant_id) == [first, second]
        assert grant_store.list_grants("client-2") == [second]
        assert grant_store.list_grants("nobody") == []

    def test_upstream_refresh_lock_is_exclusive_until_released_or_expired(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        assert grant_store.acquire_upstream_refresh_lock("grant-1", "a", NOW, NOW + 30) is True
        assert grant_store.acquire_upstream_refresh_lock("grant-1", "b", NOW + 10, NOW + 40) is False
        # Only the holder releases it.
        grant_store.release_upstream_refresh_lock("grant-1", "b")
        assert grant_store.acquire_upstream_refresh_lock("grant-1", "b", NOW + 10, NOW + 40) is False
        grant_store.release_upstream_refresh_lock("grant-1", "a")
        assert grant_store.acquire_upstream_refresh_lock("grant-1", "b", NOW + 11, NOW + 41) is True
        # A holder that died leaves a lease that expires.
        assert grant_store.acquire_upstream_refresh_lock("grant-1", "c", NOW + 41, NOW + 71) is True
        assert grant_store.acquire_upstream_refresh_lock("unknown", "a", NOW, NOW + 30) is False

    def test_update_upstream_tokens(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        self.given_grant(clients_repo, grant_store)
        fresh = make_upstream_tokens(access_token="new-upstream-at", expires_at=NOW + 2 * HOUR, id_token=None)
        grant_store.update_upstream_tokens("grant-1", fresh)
        assert grant_store.get_upstream_tokens("grant-1") == fresh
        # The grant itself is untouched.
        assert grant_store.get_grant("grant-1") == make_grant()
        # A grant stored without upstream tokens gets them.
        self.given_grant(clients_repo, grant_store, make_grant("grant-2"), None)
        grant_store.update_upstream_tokens("grant-2", fresh)
        assert grant_store.get_upstream_tokens("grant-2") == fresh

    def test_revoke_grant_revokes_every_token_issued_from_it(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        self.given_grant(clients_repo, grant_store, make_grant("grant-2"))
        grant_store.add_access_token(make_access_token("at-1"))
        grant_store.add_access_token(make_access_token("at-2", revoked_at=NOW + 1))
        grant_store.add_refresh_token(make_refresh_token("rt-1"))
        grant_store.add_access_token(make_access_token("other-at", grant_id="grant-2"))

        grant_store.revoke_grant("grant-1", NOW + 50)

        grant = grant_store.get_grant("grant-1")
        assert grant is not None and grant.revoked_at == NOW + 50 and grant.is_revoked
        at1, at2, rt1 = (
            grant_store.get_access_token("at-1"),
            grant_store.get_access_token("at-2"),
            grant_store.get_refresh_token("rt-1"),
        )
        assert at1 is not None and at1[0].revoked_at == NOW + 50 and at1[1].is_revoked
        # An earlier revocation keeps its time.
        assert at2 is not None and at2[0].revoked_at == NOW + 1
        assert rt1 is not None and rt1[0].revoked_at == NOW + 50
        other = grant_store.get_access_token("other-at")
        assert other is not None and other[0].revoked_at is None and not other[1].is_revoked

        grant_store.revoke_grant("grant-1", NOW + 99)
        again = grant_store.get_grant("grant-1")
        assert again is not None and again.revoked_at == NOW + 50
        grant_store.revoke_grant("unknown", NOW)

    # -- GrantStore: access tokens --------------------------------------------------------------

    def test_get_access_token_returns_the_token_and_its_grant(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        token = make_access_token()
        grant_store.add_access_token(token)
        assert grant_store.get_access_token("at-hash-1") == (token, grant)
        assert grant_store.get_access_token("unknown") is None

    def test_revoke_access_token_only_that_token(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        grant_store.add_access_token(make_access_token("at-1"))
        grant_store.add_access_token(make_access_token("at-2"))
        grant_store.revoke_access_token("at-1", NOW + 7)
        grant_store.revoke_access_token("at-1", NOW + 8)
        grant_store.revoke_access_token("unknown", NOW)
        first, second = grant_store.get_access_token("at-1"), grant_store.get_access_token("at-2")
        assert first is not None and first[0].revoked_at == NOW + 7
        assert second is not None and second[0].revoked_at is None
        assert not first[1].is_revoked

    def test_the_grant_of_an_access_token_is_the_grant_as_it_is_now(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        grant_store.add_access_token(make_access_token("at-alone"))
        grant_store.add_access_token(make_access_token("at-live"))
        grant_store.revoke_access_token("at-alone", NOW + 5)
        alone = grant_store.get_access_token("at-alone")
        assert alone is not None and alone[1] == grant

        grant_store.revoke_grant("grant-1", NOW + 50)
        grant_store.revoke_grant("grant-1", NOW + 60)
        # A token issued after the revocation (the service never does it) still shows it.
        grant_store.add_access_token(make_access_token("at-after"))
        revoked = replace(grant, revoked_at=NOW + 50)
        assert grant_store.get_grant("grant-1") == revoked
        for token_hash, revoked_at in (("at-alone", NOW + 5), ("at-live", NOW + 50), ("at-after", None)):
            found = grant_store.get_access_token(token_hash)
            assert found is not None and found == (make_access_token(token_hash, revoked_at=revoked_at), revoked)

    def test_access_tokens_whose_hashes_share_all_but_their_last_bytes_are_distinct(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        prefix = "9c" * 31
        first = make_access_token(prefix + "01", expires_at=NOW + 10)
        second = make_access_token(prefix + "02", scopes=("mcp:write",))
        grant_store.add_access_token(first)
        grant_store.add_access_token(second)
        assert grant_store.get_access_token(prefix + "01") == (first, grant)
        assert grant_store.get_access_token(prefix + "02") == (second, grant)
        assert grant_store.get_access_token(prefix + "03") is None
        grant_store.revoke_access_token(prefix + "02", NOW + 1)
        assert grant_store.get_access_token(prefix + "01") == (first, grant)
        assert grant_store.purge_expired(NOW + 10) == 1
        assert grant_store.get_access_token(prefix + "01") is None
        assert grant_store.get_access_token(prefix + "02") == (replace(second, revoked_at=NOW + 1), grant)

    # -- GrantStore: refresh tokens -------------------------------------------------------------

    def test_refresh_token_round_trip(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        grant = self.given_grant(clients_repo, grant_store)
        token = make_refresh_token()
        grant_store.add_refresh_token(token)
        assert grant_store.get_refresh_token("rt-hash-1") == (token, grant)
        assert grant_store.get_refresh_token("unknown") is None

    def test_rotation_keeps_the_rotated_token_and_newer_generations(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        self.given_grant(clients_repo, grant_store, make_grant("grant-2"))
        assert grant_store.current_refresh_generation("grant-1") is None
        grant_store.add_refresh_token(make_refresh_token("rt-0", generation=0, rotated_at=NOW, retried_at=NOW + 1))
        grant_store.add_refresh_token(make_refresh_token("rt-1a", generation=1))
        grant_store.add_refresh_token(make_refresh_token("rt-1b", generation=1))
        grant_store.add_refresh_token(make_refresh_token("rt-other", grant_id="grant-2", generation=0))
        assert grant_store.current_refresh_generation("grant-1") == 1

        assert grant_store.rotate_refresh_token("rt-1b", NOW + 10) is True
        grant_store.add_refresh_token(make_refresh_token("rt-2", generation=2))
        assert grant_store.current_refresh_generation("grant-1") == 2
        # The token rotated now stays (a retry within the grace); its sibling and the older
        # generation go; other grants are untouched.
        rotated = grant_store.get_refresh_token("rt-1b")
        assert rotated is not None and rotated[0] == make_refresh_token("rt-1b", generation=1, rotated_at=NOW + 10)
        assert grant_store.get_refresh_token("rt-1a") is None
        assert grant_store.get_refresh_token("rt-0") is None
        assert grant_store.get_refresh_token("rt-2") is not None
        assert grant_store.get_refresh_token("rt-other") is not None
        # A token is rotated once.
        assert grant_store.rotate_refresh_token("rt-1b", NOW + 11) is False
        assert grant_store.rotate_refresh_token("unknown", NOW + 11) is False

    def test_a_retry_is_recorded_once(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        self.given_grant(clients_repo, grant_store)
        grant_store.add_refresh_token(make_refresh_token("rt-0", rotated_at=NOW))
        assert grant_store.mark_refresh_retried("rt-0", NOW + 5) is True
        assert grant_store.mark_refresh_retried("rt-0", NOW + 6) is False
        retried = grant_store.get_refresh_token("rt-0")
        assert retried is not None and retried[0] == make_refresh_token("rt-0", rotated_at=NOW, retried_at=NOW + 5)
        assert grant_store.mark_refresh_retried("unknown", NOW) is False

    # -- GrantStore: transactions ---------------------------------------------------------------

    def test_atomic_commits(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        clients_repo.add(make_client())
        with grant_store.atomic():
            grant_store.add_grant(make_grant(), make_upstream_tokens())
            grant_store.add_access_token(make_access_token())
        assert grant_store.get_access_token("at-hash-1") is not None
        assert grant_store.get_upstream_tokens("grant-1") == make_upstream_tokens()

    def test_atomic_rolls_back_on_exception(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        clients_repo.add(make_client())

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with grant_store.atomic():
                grant_store.add_grant(make_grant(), make_upstream_tokens())
                authorization_store.add_code(make_code())
                grant_store.add_access_token(make_access_token())
                raise Boom()
        assert grant_store.get_grant("grant-1") is None
        assert grant_store.get_upstream_tokens("grant-1") is None
        assert grant_store.get_access_token("at-hash-1") is None
        assert authorization_store.get_code("code-hash-1") is None

    def test_atomic_nests(self, clients_repo: ClientRepository, grant_store: GrantStore) -> None:
        self.given_grant(clients_repo, grant_store)
        grant_store.add_refresh_token(make_refresh_token())
        with grant_store.atomic():
            found = grant_store.get_refresh_token("rt-hash-1")
            assert found is not None
            # revoke_grant is itself atomic: nesting joins the open transaction.
            grant_store.revoke_grant(found[1].grant_id, NOW + 1)
        revoked = grant_store.get_refresh_token("rt-hash-1")
        assert revoked is not None and revoked[0].revoked_at == NOW + 1

    # -- GrantStore: purge ----------------------------------------------------------------------

    def test_purge_removes_expired_rows_and_keeps_live_ones(
        self, clients_repo: ClientRepository, authorization_store: AuthorizationStore, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store)
        authorization_store.add_pending(make_pending("pending-old", expires_at=NOW + 10))
        authorization_store.add_pending(make_pending("pending-live", expires_at=NOW + 1000))
        authorization_store.add_code(make_code("code-old", expires_at=NOW + 10))
        authorization_store.add_code(make_code("code-live", expires_at=NOW + 1000))
        grant_store.add_access_token(make_access_token("at-old", expires_at=NOW + 10))
        grant_store.add_access_token(make_access_token("at-live", expires_at=NOW + 1000))
        grant_store.add_refresh_token(make_refresh_token("rt-old", expires_at=NOW + 10))
        grant_store.add_refresh_token(make_refresh_token("rt-live", expires_at=NOW + 1000))

        assert grant_store.purge_expired(NOW + 10) == 4

        assert authorization_store.get_pending("pending-old") is None
        assert authorization_store.get_pending("pending-live") is not None
        assert authorization_store.get_code("code-old") is None
        assert authorization_store.get_code("code-live") is not None
        assert grant_store.get_access_token("at-old") is None
        assert grant_store.get_access_token("at-live") is not None
        assert grant_store.get_refresh_token("rt-old") is None
        assert grant_store.get_refresh_token("rt-live") is not None
        assert grant_store.get_grant("grant-1") is not None
        assert grant_store.purge_expired(NOW + 10) == 0

    def test_purge_removes_long_revoked_grants_with_their_tokens(
        self, clients_repo: ClientRepository, grant_store: GrantStore
    ) -> None:
        self.given_grant(clients_repo, grant_store, make_grant("grant-old"))
        self.given_grant(clients_repo, grant_store, make_grant("grant-recent"))
        grant_store.add_refresh_token(make_refresh_token("rt-old", grant_id="grant-old"))
        grant_store.add_refresh_token(make_refresh_token("rt-recent", grant_id="grant-recent"))
        grant_store.revoke_grant("grant-old", NOW)
        grant_store.revoke_grant("grant-recent", NOW + 2 * DAY - HOUR)

        # The old grant and its refresh token go; the recently revoked one stays, so a replay
        # of its token still meets "revoked" rather than "unknown".
        assert grant_store.purge_expired(NOW + 2 * DAY) == 2
        assert grant_store.get_grant("grant-old") is None
        assert grant_store.get_refresh_token("rt-old") is None
        assert grant_store.get_grant("grant-recent") is not None
        assert grant_store.get_refresh_token("rt-recent") is not None
