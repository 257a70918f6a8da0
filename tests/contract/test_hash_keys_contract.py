"""The storage contract of token hash key rotation (issue 11 §2), on every backend: what still
depends on each key (StorageAdministration.hash_key_usage, read by `keys status`), and a client's
secret or registration token hashed again under the current key (ClientRepository.rehash)."""

from __future__ import annotations

from mcp_oauth_bridge.domain.ports import HashKeyUsage
from mcp_oauth_bridge.domain.security import TokenHasher

from .samples import (
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

CURRENT, OLDER = TokenHasher(b"c" * 32), TokenHasher(b"o" * 32)
C, O = CURRENT.key_ids[0], OLDER.key_ids[0]


def usage_of(storage: Stores, key_ids: list[str]) -> set[tuple[str, str | None, int, int | None]]:
    usage = storage.admin.hash_key_usage(key_ids, NOW)
    assert all(isinstance(item, HashKeyUsage) for item in usage)
    return {(item.kind, item.key_id, item.count, item.last_expires_at) for item in usage}


def test_hash_key_usage_counts_what_still_matters_by_the_key_that_hashed_it(storage: Stores) -> None:
    storage.clients.add(
        make_client("client-1", secret_hash=OLDER.hash("secret-1"), registration_token_hash=CURRENT.hash("reg-1"))
    )
    # Hashed before hashes carried key ids: the whole HMAC, under no listed id.
    storage.clients.add(make_client("client-2", secret_hash=h("legacy-secret"), registration_token_hash=None))
    storage.clients.add(make_client("client-3", secret_hash=None, token_endpoint_auth_method="none"))
    given_grant(storage, make_grant("grant-1"))
    given_grant(storage, make_grant("grant-2"))
    add_access = storage.access_tokens.add_access_token
    add_access(make_access_token(CURRENT.hash("at-current"), "grant-1", expires_at=NOW + HOUR))
    add_access(make_access_token(OLDER.hash("at-older"), "grant-1", expires_at=NOW + 2 * HOUR))
    add_access(make_access_token(h("at-legacy"), "grant-1", expires_at=NOW + 3 * HOUR))
    add_access(make_access_token(OLDER.hash("at-expired"), "grant-1", expires_at=NOW))
    add_access(make_access_token(OLDER.hash("at-revoked"), "grant-1", revoked_at=NOW - 5))
    add_access(make_access_token(OLDER.hash("at-revoked-grant"), "grant-2"))
    add_refresh = storage.refresh_tokens.add_refresh_token
    add_refresh(make_refresh_token(OLDER.hash("rt-current"), "grant-1", generation=1, expires_at=NOW + 9 * HOUR))
    # The token generation 1 replaced is kept for reuse detection: it counts.
    add_refresh(make_refresh_token(OLDER.hash("rt-rotated"), "grant-1", rotated_at=NOW - 10, expires_at=NOW + 8 * HOUR))
    add_refresh(make_refresh_token(OLDER.hash("rt-revoked-grant"), "grant-2"))
    storage.grants.revoke_grant("grant-2", NOW - 1)
    add_code = storage.authorizations.add_code
    add_code(make_code(OLDER.hash("code-live"), "grant-1", expires_at=NOW + 60))
    add_code(make_code(OLDER.hash("code-redeemed"), "grant-1", redeemed_at=NOW - 1))
    add_code(make_code(OLDER.hash("code-expired"), "grant-1", expires_at=NOW - 1))
    storage.authorizations.add_pending(make_pending("pending-live", csrf_token_hash=OLDER.hash("csrf-1"), expires_at=NOW + 600))
    storage.authorizations.add_pending(make_pending("pending-expired", csrf_token_hash=OLDER.hash("csrf-2"), expires_at=NOW))

    assert usage_of(storage, [C, O]) == {
        ("access_tokens", C, 1, NOW + HOUR),
        ("access_tokens", O, 1, NOW + 2 * HOUR),
        ("access_tokens", None, 1, NOW + 3 * HOUR),
        ("refresh_tokens", O, 2, NOW + 9 * HOUR),
        ("authorization_codes", O, 1, NOW + 60),
        ("pending_authorizations", O, 1, NOW + 600),
        ("client_secrets", O, 1, None),
        ("client_secrets", None, 1, None),
        ("registration_tokens", C, 1, None),
    }
    # Asked about the current key only, the older key's hashes are under no listed id.
    assert usage_of(storage, [C]) == {
        ("access_tokens", C, 1, NOW + HOUR),
        ("access_tokens", None, 2, NOW + 3 * HOUR),
        ("refresh_tokens", None, 2, NOW + 9 * HOUR),
        ("authorization_codes", None, 1, NOW + 60),
        ("pending_authorizations", None, 1, NOW + 600),
        ("client_secrets", None, 2, None),
        ("registration_tokens", C, 1, None),
    }


def test_hash_key_usage_of_an_empty_database_is_empty(storage: Stores) -> None:
    assert storage.admin.hash_key_usage([C, O], NOW) == []


def test_rehash_replaces_a_hash_only_while_it_is_the_old_one(storage: Stores) -> None:
    storage.clients.add(make_client("client-1", secret_hash=OLDER.hash("s"), registration_token_hash=OLDER.hash("r")))

    assert storage.clients.rehash("client-1", "secret_hash", OLDER.hash("s"), CURRENT.hash("s")) is True
    assert storage.clients.rehash("client-1", "registration_token_hash", OLDER.hash("r"), CURRENT.hash("r")) is True
    client = storage.clients.get("client-1")
    assert client is not None
    assert (client.secret_hash, client.registration_token_hash) == (CURRENT.hash("s"), CURRENT.hash("r"))
    # A secret replaced meanwhile (RFC 7592) is left alone, as is an unknown client.
    storage.clients.add(make_client("client-1", secret_hash=CURRENT.hash("new secret")))
    assert storage.clients.rehash("client-1", "secret_hash", OLDER.hash("s"), CURRENT.hash("s")) is False
    assert storage.clients.get("client-1").secret_hash == CURRENT.hash("new secret")  # type: ignore[union-attr]
    assert storage.clients.rehash("nobody", "secret_hash", OLDER.hash("s"), CURRENT.hash("s")) is False
