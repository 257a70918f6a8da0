"""The SQLite adapter beyond the storage contract (tests/contract): encryption at rest,
migrations, key rotation, transactions across threads and processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.sqlite import (
    SqliteAdministration,
    SqliteAuthorizationStore,
    SqliteClientRepository,
    SqliteDatabase,
)
from mcp_oauth_bridge.adapters.storage.sqlite.database import MMAP_SIZE_BYTES
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS
from mcp_oauth_bridge.domain.model import AccessToken
from mcp_oauth_bridge.domain.ports import StorageError
from tests.contract.samples import (
    h,
    DAY,
    NOW,
    RESOURCE,
    make_access_token,
    make_client,
    make_grant,
    make_pending,
    make_refresh_token,
    make_upstream,
    make_upstream_tokens,
)
from tests.contract.stores import sqlite_stores

from .storage_fixtures import database_at_version, sqlite_database, sqlite_key, sqlite_path  # noqa: F401  (fixtures)

ALL_VERSIONS = [version for version, _ in MIGRATIONS]


# -- encryption at rest -------------------------------------------------------------------------


def test_upstream_tokens_and_pkce_verifier_are_never_stored_in_clear(
    sqlite_database: SqliteDatabase, sqlite_path: Path  # noqa: F811
) -> None:
    secrets = {
        "access": "UPSTREAM-ACCESS-c1e4a",
        "refresh": "UPSTREAM-REFRESH-77b0e",
        "id_token": "UPSTREAM-IDTOKEN-9f2d1",
        "verifier": "PKCE-VERIFIER-0d8c3-" + "v" * 30,
        "nonce": "OIDC-NONCE-5a6b7",
        "refreshed": "UPSTREAM-ACCESS-REFRESHED-3e3e",
    }
    clients = SqliteClientRepository(sqlite_database)
    authorizations = SqliteAuthorizationStore(sqlite_database)
    stores = sqlite_stores(sqlite_database)
    clients.add(make_client())
    authorizations.add_pending(make_pending())
    authorizations.attach_upstream(
        "pending-1", replace(make_upstream(), code_verifier=secrets["verifier"], nonce=secrets["nonce"])
    )
    authorizations.add_pending(
        make_pending("pending-2", upstream=replace(make_upstream("t" * 64), code_verifier=secrets["verifier"]))
    )
    upstream = make_upstream_tokens(
        access_token=secrets["access"], refresh_token=secrets["refresh"], id_token=secrets["id_token"]
    )
    stores.grants.add_grant(make_grant(subject="VISIBLE-SUBJECT-42"), upstream)
    stores.grants.add_grant(make_grant("grant-2"), upstream)
    stores.upstream_tokens.update_upstream_tokens("grant-2", replace(upstream, access_token=secrets["refreshed"]))

    on_disk = b"".join(
        path.read_bytes() for path in sqlite_path.parent.iterdir() if path.name.startswith(sqlite_path.name)
    )
    # The reader does see the file's contents (including the WAL, where recent writes live).
    assert b"VISIBLE-SUBJECT-42" in on_disk
    for name, value in secrets.items():
        assert value.encode() not in on_disk, f"{name} is stored in clear"
    # ... and yet everything reads back.
    assert stores.upstream_tokens.get_upstream_tokens("grant-1") == upstream
    assert stores.upstream_tokens.get_upstream_tokens("grant-2") == replace(upstream, access_token=secrets["refreshed"])
    pending = authorizations.get_pending("pending-1")
    assert pending is not None and pending.upstream is not None
    assert (pending.upstream.code_verifier, pending.upstream.nonce) == (secrets["verifier"], secrets["nonce"])


def test_undecryptable_value_raises_storage_error(
    sqlite_database: SqliteDatabase, sqlite_path: Path  # noqa: F811
) -> None:
    SqliteClientRepository(sqlite_database).add(make_client())
    sqlite_stores(sqlite_database).grants.add_grant(make_grant(), make_upstream_tokens())
    sqlite_stores(sqlite_database).access_tokens.add_access_token(make_access_token())

    other_key = SqliteDatabase(str(sqlite_path), SecretBox([generate_key()]))
    try:
        with pytest.raises(StorageError):
            sqlite_stores(other_key).upstream_tokens.get_upstream_tokens("grant-1")
        # Grant and token lookups never read the ciphertext, so the wrong key does not matter.
        assert sqlite_stores(other_key).grants.get_grant("grant-1") == make_grant()
        assert sqlite_stores(other_key).access_tokens.get_access_token(h("at-hash-1")) == (make_access_token(), make_grant())
    finally:
        other_key.close()


def test_key_rotation(sqlite_path: Path) -> None:  # noqa: F811
    key_a, key_b = generate_key(), generate_key()
    written = SqliteDatabase(str(sqlite_path), SecretBox([key_a]))
    SqliteClientRepository(written).add(make_client())
    sqlite_stores(written).grants.add_grant(make_grant(), make_upstream_tokens())
    sqlite_stores(written).grants.add_grant(make_grant("grant-2"), None)
    SqliteAuthorizationStore(written).add_pending(make_pending(upstream=make_upstream()))
    SqliteAuthorizationStore(written).add_pending(make_pending("pending-2"))
    written.close()

    rotating = SqliteDatabase(str(sqlite_path), SecretBox([key_b, key_a]))
    assert sqlite_stores(rotating).upstream_tokens.get_upstream_tokens("grant-1") == make_upstream_tokens()
    # One grant and one pending authorization hold ciphertext.
    assert SqliteAdministration(rotating).reencrypt() == 2
    rotating.close()

    only_b = SqliteDatabase(str(sqlite_path), SecretBox([key_b]))
    assert sqlite_stores(only_b).grants.get_grant("grant-1") == make_grant()
    assert sqlite_stores(only_b).upstream_tokens.get_upstream_tokens("grant-1") == make_upstream_tokens()
    assert sqlite_stores(only_b).grants.get_grant("grant-2") == make_grant("grant-2")
    assert sqlite_stores(only_b).upstream_tokens.get_upstream_tokens("grant-2") is None
    assert SqliteAuthorizationStore(only_b).get_pending("pending-1") == make_pending(upstream=make_upstream())
    only_b.close()

    only_a = SqliteDatabase(str(sqlite_path), SecretBox([key_a]))
    with pytest.raises(StorageError):
        sqlite_stores(only_a).upstream_tokens.get_upstream_tokens("grant-1")
    only_a.close()


def test_secret_box() -> None:
    key_a, key_b = generate_key(), generate_key()
    box = SecretBox([key_a])
    ciphertext = box.encrypt("upstream-secret")
    assert "upstream-secret" not in ciphertext
    assert box.decrypt(ciphertext) == "upstream-secret"
    assert box.encrypt("upstream-secret") != ciphertext
    rotated = SecretBox([key_b, key_a]).rotate(ciphertext)
    assert SecretBox([key_b]).decrypt(rotated) == "upstream-secret"
    with pytest.raises(StorageError):
        SecretBox([key_b]).decrypt(ciphertext)
    with pytest.raises(StorageError):
        box.decrypt("not a fernet token")


# A well-formed key, fixed so that every pytest-xdist worker collects the same parameters.
VALID_KEY = "x" * 43 + "="


@pytest.mark.parametrize(
    "keys",
    [[], ["not-a-key"], ["YQ=="], [VALID_KEY, "short"], VALID_KEY],
    ids=["none", "not-base64", "too-short", "second-bad", "lone-string"],
)
def test_secret_box_rejects_malformed_keys(keys: Any) -> None:
    with pytest.raises(ValueError) as raised:
        SecretBox(keys)
    # The message names a key by its position, never by its value.
    assert not any(key in str(raised.value) for key in (keys if isinstance(keys, list) else [keys]))


# -- migrations ---------------------------------------------------------------------------------


def test_migrations_are_recorded_and_idempotent(sqlite_path: Path, sqlite_key: str) -> None:  # noqa: F811
    database = SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key]))
    try:
        assert database.migrate() == [version for version, _ in MIGRATIONS]
        assert database.migrate() == []
        assert database.applied_migrations() == [version for version, _ in MIGRATIONS]
        rows = database.connection().execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        assert [row[0] for row in rows] == ALL_VERSIONS and all(row[1] > 0 for row in rows)
    finally:
        database.close()
    again = SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key]))
    try:
        assert again.migrate() == []
    finally:
        again.close()


def _v2_token_row(token: AccessToken) -> tuple[Any, ...]:
    # Keyed hashes (64 lower-case hex digits) as their 32 bytes, anything else as text.
    try:
        packed = bytes.fromhex(token.token_hash)
    except ValueError:
        packed = b""
    stored: bytes | str = packed if len(packed) == 32 and packed.hex() == token.token_hash else token.token_hash
    return (
        stored,
        token.grant_id,
        token.client_id,
        " ".join(token.scopes),
        token.resource,
        token.issued_at,
        token.expires_at,
        token.revoked_at,
    )


def test_migration_3_moves_existing_access_tokens_into_the_one_probe_layout(
    sqlite_path: Path, sqlite_key: str  # noqa: F811
) -> None:
    live = make_grant("grant-live")
    revoked = make_grant("grant-revoked", subject="user-2", claims={"name": "Bob"}, revoked_at=NOW + 9)
    prefix = "e7" * 8
    tokens = [
        make_access_token("0a" * 32, grant_id="grant-live"),
        make_access_token("f0" * 32, grant_id="grant-live", revoked_at=NOW + 3),  # revoked alone
        make_access_token("1b" * 32, grant_id="grant-revoked", scopes=("mcp:write",), revoked_at=NOW + 9),
        # Two hashes with the same first 8 bytes.
        make_access_token(prefix + "01" * 24, grant_id="grant-live", expires_at=NOW + 10),
        make_access_token(prefix + "02" * 24, grant_id="grant-revoked", revoked_at=NOW + 9),
        make_access_token("at-stored-as-text", grant_id="grant-live"),
    ]
    database_at_version(2, sqlite_path, [live, revoked], [_v2_token_row(token) for token in tokens])

    database = SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key]))
    try:
        assert database.migrate() == ALL_VERSIONS[2:]
        assert database.applied_migrations() == ALL_VERSIONS
        connection = database.connection()
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(access_tokens)")}
        assert {"access_tokens_grant_id", "access_tokens_expires_at"} <= indexes
        assert connection.execute("SELECT name FROM sqlite_schema WHERE name LIKE '%_v3%'").fetchall() == []

        stores = sqlite_stores(database)
        for token in tokens:
            grant = live if token.grant_id == "grant-live" else revoked
            assert stores.access_tokens.get_access_token(token.token_hash) == (token, grant)
        assert stores.access_tokens.get_access_token(prefix + "03" * 24) is None
        # Existing tokens are where new ones would be: one probe (one of the pair is moved).
        keys = _token_keys(database)
        assert [keys[token.token_hash] == _signed_prefix(token.token_hash) for token in tokens[:3]] == [True] * 3
        assert sorted(keys[token.token_hash] == _signed_prefix(prefix) for token in tokens[3:5]) == [False, True]

        # The migrated rows behave as new ones: revocation, purge, cascade.
        stores.access_tokens.add_access_token(make_access_token("2c" * 32, grant_id="grant-live"))
        stores.grants.revoke_grant("grant-live", NOW + 20)
        found = stores.access_tokens.get_access_token("0a" * 32)
        assert found is not None and found[0].revoked_at == NOW + 20 and found[1].revoked_at == NOW + 20
        found = stores.access_tokens.get_access_token("f0" * 32)
        assert found is not None and found[0].revoked_at == NOW + 3 and found[1].revoked_at == NOW + 20
        assert stores.admin.purge_expired(NOW + 10) == 1
        assert stores.access_tokens.get_access_token(prefix + "01" * 24) is None
        assert stores.access_tokens.get_access_token(prefix + "02" * 24) is not None
        SqliteClientRepository(database).delete("client-1")
        assert connection.execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0] == 0
    finally:
        database.close()


def test_migration_4_keeps_current_refresh_tokens_and_drops_rotated_ones(
    sqlite_path: Path, sqlite_key: str  # noqa: F811
) -> None:
    grant = make_grant("grant-1")
    current, rotated, revoked = "0c" * 32, "0d" * 32, "0e" * 32
    rows = [
        (bytes.fromhex(current), "grant-1", "client-1", "mcp:read mcp:write", RESOURCE, NOW, NOW + DAY, None, None, None, None),
        (bytes.fromhex(rotated), "grant-1", "client-1", "mcp:read", RESOURCE, NOW - 10, NOW + DAY, NOW,
         bytes.fromhex(current), None, None),
        (bytes.fromhex(revoked), "grant-1", "client-1", "mcp:read", RESOURCE, NOW, NOW + DAY, None, None, None, NOW + 1),
    ]
    database_at_version(3, sqlite_path, [grant], [], rows)

    database = SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key]))
    try:
        assert database.migrate() == ALL_VERSIONS[3:]
        stores = sqlite_stores(database)
        assert stores.refresh_tokens.get_refresh_token(current) == (
            make_refresh_token(current, scopes=("mcp:read", "mcp:write"), expires_at=NOW + DAY), grant
        )
        assert stores.refresh_tokens.get_refresh_token(revoked) == (
            make_refresh_token(revoked, scopes=("mcp:read",), expires_at=NOW + DAY, revoked_at=NOW + 1), grant
        )
        assert stores.refresh_tokens.get_refresh_token(rotated) is None
        assert stores.refresh_tokens.current_refresh_generation("grant-1") == 0
        connection = database.connection()
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(refresh_tokens)")}
        assert {"refresh_tokens_grant_id", "refresh_tokens_expires_at"} <= indexes
        # The carried-over token rotates like a new one.
        assert stores.refresh_tokens.rotate_refresh_token(current, NOW + 5) is True
    finally:
        database.close()


def test_schema_is_created_on_first_use_and_parent_directory_made(tmp_path: Path, sqlite_key: str) -> None:  # noqa: F811
    path = tmp_path / "a" / "b" / "bridge.db"
    database = SqliteDatabase(str(path), SecretBox([sqlite_key]))
    try:
        assert SqliteClientRepository(database).list() == []
        assert path.exists()
        assert database.applied_migrations() == ALL_VERSIONS
    finally:
        database.close()


def test_new_database_file_and_directory_are_private(sqlite_database: SqliteDatabase, sqlite_path: Path) -> None:  # noqa: F811
    assert sqlite_path.stat().st_mode & 0o777 == 0o600
    assert sqlite_path.parent.stat().st_mode & 0o777 == 0o700
    assert Path(str(sqlite_path) + "-wal").stat().st_mode & 0o077 == 0


def test_concurrent_migrations_on_one_file_both_succeed(sqlite_path: Path, sqlite_key: str) -> None:  # noqa: F811
    workers = 6
    barrier = threading.Barrier(workers)
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    databases = [SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key])) for _ in range(workers)]

    def run(database: SqliteDatabase) -> None:
        try:
            barrier.wait()
            applied.append(database.migrate())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(database,)) for database in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in databases:
        database.close()

    assert errors == []
    assert sorted(applied) == [[]] * (workers - 1) + [ALL_VERSIONS]


def test_connection_pragmas(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    connection = sqlite_database.connection()
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    # synchronous=NORMAL is 1.
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1
    # Reads through a memory map (SQLite caps the size at its compile-time maximum).
    assert 0 < connection.execute("PRAGMA mmap_size").fetchone()[0] <= MMAP_SIZE_BYTES


# -- storage layout -----------------------------------------------------------------------------


def test_keyed_hashes_are_stored_as_32_byte_blobs_and_other_strings_as_text(
    sqlite_database: SqliteDatabase,  # noqa: F811
) -> None:
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database)
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    hex_hash = "0f" * 32
    upper_hash = hex_hash.upper()  # a different string: not packed, so not the same key
    for token_hash in (hex_hash, upper_hash, "at-hash-1"):
        stores.access_tokens.add_access_token(make_access_token(token_hash))
    stores.refresh_tokens.add_refresh_token(make_refresh_token("ab" * 32))

    stored = dict(sqlite_database.connection().execute("SELECT token_hash, typeof(token_hash) FROM access_tokens"))
    assert stored == {bytes.fromhex(hex_hash): "blob", upper_hash: "text", "at-hash-1": "text"}
    refresh_key = sqlite_database.connection().execute("SELECT token_hash FROM refresh_tokens").fetchone()[0]
    assert refresh_key == bytes.fromhex("ab" * 32)
    for token_hash in (hex_hash, upper_hash, "at-hash-1"):
        found = stores.access_tokens.get_access_token(token_hash)
        assert found is not None and found[0] == make_access_token(token_hash)
    refresh = stores.refresh_tokens.get_refresh_token("ab" * 32)
    assert refresh is not None and refresh[0].token_hash == "ab" * 32
    assert stores.access_tokens.get_access_token("0F" * 31 + "0f") is None


def _token_keys(database: SqliteDatabase) -> dict[str, int]:
    """token_key of every access-token row, by the domain's hash string."""
    rows = database.connection().execute("SELECT token_hash, token_key FROM access_tokens").fetchall()
    return {(key.hex() if isinstance(key, bytes) else key): rowid for key, rowid in rows}


def _signed_prefix(token_hash: str) -> int:
    return int.from_bytes(bytes.fromhex(token_hash[:16]), "big", signed=True)


def test_access_tokens_are_stored_at_the_key_their_hash_gives_with_a_copy_of_their_grant(
    sqlite_database: SqliteDatabase,  # noqa: F811
) -> None:
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database)
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    # Both signs and both ends of the signed 64-bit range.
    hashes = ["0123456789abcdef" + "aa" * 24, "fedcba9876543210" + "aa" * 24, "7f" + "ff" * 31, "80" + "00" * 31]
    for token_hash in hashes:
        stores.access_tokens.add_access_token(make_access_token(token_hash))
    stores.access_tokens.add_access_token(make_access_token("at-text"))

    keys = _token_keys(sqlite_database)
    assert {token_hash: keys[token_hash] for token_hash in hashes} == {
        hashes[0]: 0x0123456789ABCDEF,
        hashes[1]: 0xFEDCBA9876543210 - 2**64,
        hashes[2]: 2**63 - 1,
        hashes[3]: -(2**63),
    }
    # A hash stored as text has no derived key; it takes a free rowid.
    assert keys["at-text"] not in {keys[token_hash] for token_hash in hashes}
    row = sqlite_database.connection().execute(
        "SELECT grant_client_id, grant_subject, grant_claims, grant_scopes, grant_resource, grant_created_at, "
        "grant_revoked_at FROM access_tokens WHERE token_hash = ?",
        (bytes.fromhex(hashes[0]),),
    ).fetchone()
    grant = make_grant()
    claims = json.dumps(dict(grant.claims))
    assert row == (grant.client_id, grant.subject, claims, "mcp:read mcp:write", grant.resource, NOW, None)
    for token_hash in [*hashes, "at-text"]:
        assert stores.access_tokens.get_access_token(token_hash) == (make_access_token(token_hash), grant)


@pytest.mark.parametrize(
    "prefix",
    ["00" * 8, "c3" * 8, "7f" + "ff" * 7],
    ids=["zero", "negative", "largest-rowid"],
)
def test_access_tokens_whose_hashes_share_their_first_8_bytes_are_both_kept(
    sqlite_database: SqliteDatabase, prefix: str  # noqa: F811
) -> None:
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database)
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    stores.grants.add_grant(make_grant("grant-2", subject="user-2"), make_upstream_tokens())
    first_hash, second_hash, unknown_hash = prefix + "11" * 24, prefix + "22" * 24, prefix + "33" * 24
    first = make_access_token(first_hash, expires_at=NOW + 10)
    second = make_access_token(second_hash, grant_id="grant-2", scopes=("mcp:write",), expires_at=NOW + 20)
    stores.access_tokens.add_access_token(first)
    stores.access_tokens.add_access_token(second)

    # The first has the key; the second, issued all the same, has another one.
    keys = _token_keys(sqlite_database)
    assert keys[first_hash] == _signed_prefix(first_hash)
    assert keys[second_hash] != keys[first_hash]
    grant_1, grant_2 = make_grant(), make_grant("grant-2", subject="user-2")
    assert stores.access_tokens.get_access_token(first_hash) == (first, grant_1)
    assert stores.access_tokens.get_access_token(second_hash) == (second, grant_2)
    assert stores.access_tokens.get_access_token(unknown_hash) is None

    # Revoked independently.
    stores.access_tokens.revoke_access_token(second_hash, NOW + 1)
    assert stores.access_tokens.get_access_token(first_hash) == (first, grant_1)
    assert stores.access_tokens.get_access_token(second_hash) == (replace(second, revoked_at=NOW + 1), grant_2)
    stores.access_tokens.revoke_access_token(first_hash, NOW + 2)
    assert stores.access_tokens.get_access_token(first_hash) == (replace(first, revoked_at=NOW + 2), grant_1)
    assert stores.access_tokens.get_access_token(second_hash) == (replace(second, revoked_at=NOW + 1), grant_2)
    # A grant's revocation reaches its own token only.
    stores.grants.revoke_grant("grant-2", NOW + 3)
    found = stores.access_tokens.get_access_token(first_hash)
    assert found is not None and not found[1].is_revoked
    found = stores.access_tokens.get_access_token(second_hash)
    assert found is not None and found[1].revoked_at == NOW + 3

    # Purged independently: the first goes, the second stays where it is and still resolves, and a
    # third hash with the same prefix takes the freed key.
    assert stores.admin.purge_expired(NOW + 10) == 1
    assert stores.access_tokens.get_access_token(first_hash) is None
    revoked_second = (replace(second, revoked_at=NOW + 1), replace(grant_2, revoked_at=NOW + 3))
    assert stores.access_tokens.get_access_token(second_hash) == revoked_second
    third = make_access_token(unknown_hash, expires_at=NOW + 30)
    stores.access_tokens.add_access_token(third)
    assert _token_keys(sqlite_database)[unknown_hash] == _signed_prefix(unknown_hash)
    assert stores.access_tokens.get_access_token(unknown_hash) == (third, grant_1)
    assert stores.access_tokens.get_access_token(first_hash) is None
    assert stores.admin.purge_expired(NOW + 20) == 1
    assert stores.access_tokens.get_access_token(second_hash) is None
    assert stores.access_tokens.get_access_token(unknown_hash) == (third, grant_1)

    # The foreign key still cascades, whichever key a row has.
    stores.access_tokens.add_access_token(replace(second, expires_at=NOW + 40))
    assert stores.access_tokens.get_access_token(second_hash) is not None
    SqliteClientRepository(sqlite_database).delete("client-1")
    assert sqlite_database.connection().execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0] == 0


def test_an_access_token_hash_is_stored_once(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database)
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    token_hash = "5a" * 32
    stores.access_tokens.add_access_token(make_access_token(token_hash))
    with pytest.raises(StorageError):
        stores.access_tokens.add_access_token(make_access_token(token_hash, expires_at=NOW + 5))
    assert stores.access_tokens.get_access_token(token_hash) == (make_access_token(token_hash), make_grant())
    assert sqlite_database.connection().execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0] == 1


def test_upstream_tokens_live_apart_from_the_grant_and_go_with_it(
    sqlite_database: SqliteDatabase,  # noqa: F811
) -> None:
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database)
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    stores.grants.add_grant(make_grant("grant-2"), None)
    connection = sqlite_database.connection()
    columns = [row[1] for row in connection.execute("PRAGMA table_info(grants)")]
    assert not any("upstream" in column or column.endswith("_enc") for column in columns)
    assert [row[0] for row in connection.execute("SELECT grant_id FROM grant_upstream_tokens")] == ["grant-1"]
    # A grant whose upstream tokens cannot be stored is not stored either.
    with pytest.raises(StorageError):
        stores.grants.add_grant(make_grant("grant-3"), replace(make_upstream_tokens(), expires_at=cast(int, None)))
    assert stores.grants.get_grant("grant-3") is None
    # Updating the tokens of an unknown grant stores nothing.
    stores.upstream_tokens.update_upstream_tokens("unknown", make_upstream_tokens())
    assert connection.execute("SELECT COUNT(*) FROM grant_upstream_tokens").fetchone()[0] == 1
    SqliteClientRepository(sqlite_database).delete("client-1")
    assert connection.execute("SELECT COUNT(*) FROM grant_upstream_tokens").fetchone()[0] == 0


# -- connections and transactions ---------------------------------------------------------------


def test_each_thread_has_its_own_connection(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(sqlite_database.connection()))
    thread.start()
    thread.join()
    assert seen[0] is not sqlite_database.connection()


def test_closed_database_reopens_on_next_use(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    SqliteClientRepository(sqlite_database).add(make_client())
    sqlite_database.close()
    assert SqliteClientRepository(sqlite_database).get("client-1") == make_client()


def test_nested_transaction_failure_undoes_only_its_own_writes(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    clients = SqliteClientRepository(sqlite_database)
    with sqlite_database.atomic():
        clients.add(make_client("outer"))
        with pytest.raises(RuntimeError):
            with sqlite_database.atomic():
                clients.add(make_client("inner"))
                raise RuntimeError("inner block fails")
        clients.add(make_client("after"))
    assert sorted(client.client_id for client in clients.list()) == ["after", "outer"]


def test_transactions_are_isolated_until_commit(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    clients = SqliteClientRepository(sqlite_database)
    seen_inside: list[object] = []
    with sqlite_database.atomic():
        clients.add(make_client())
        reader = threading.Thread(target=lambda: seen_inside.append(clients.get("client-1")))
        reader.start()
        reader.join()
    assert seen_inside == [None]
    assert clients.get("client-1") is not None


def test_sqlite_errors_become_storage_errors(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    stores = sqlite_stores(sqlite_database)
    # A token for an unknown grant is refused (and nothing is stored).
    with pytest.raises(StorageError):
        stores.access_tokens.add_access_token(make_access_token(grant_id="no-such-grant"))
    assert sqlite_database.connection().execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0] == 0
    SqliteClientRepository(sqlite_database).add(make_client())
    stores.grants.add_grant(make_grant(), make_upstream_tokens())
    with pytest.raises(StorageError):
        stores.grants.add_grant(make_grant(), make_upstream_tokens())
    with pytest.raises(StorageError):
        with stores.unit_of_work.atomic():
            stores.grants.add_grant(make_grant("grant-2"), make_upstream_tokens())
            sqlite_database.connection().execute("SELECT * FROM no_such_table")
    assert stores.grants.get_grant("grant-2") is None


def test_purge_removes_grants_left_without_codes_or_tokens(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    SqliteClientRepository(sqlite_database).add(make_client())
    stores = sqlite_stores(sqlite_database, grant_retention=30 * DAY)
    stores.grants.add_grant(make_grant("grant-unused"), make_upstream_tokens())
    stores.grants.add_grant(make_grant("grant-in-use"), make_upstream_tokens())
    stores.access_tokens.add_access_token(make_access_token("at", grant_id="grant-in-use", expires_at=NOW + 31 * DAY))
    stores.grants.add_grant(make_grant("grant-young", created_at=NOW + 20 * DAY), make_upstream_tokens())

    assert stores.admin.purge_expired(NOW + 30 * DAY) == 1
    assert stores.grants.get_grant("grant-unused") is None
    assert stores.grants.get_grant("grant-in-use") is not None
    assert stores.grants.get_grant("grant-young") is not None


def _read_client_after_fork(database: SqliteDatabase, parent_connection_id: int, results: Any) -> None:
    try:
        fresh = database.connection()
        client = SqliteClientRepository(database).get("client-1")
        results.put((id(fresh) != parent_connection_id, client == make_client()))
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on it
        results.put(repr(exc))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork() is how gunicorn makes its workers")
def test_a_forked_worker_opens_its_own_connection(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    # gunicorn --preload: the master may have used the database before forking its workers.
    SqliteClientRepository(sqlite_database).add(make_client())
    parent_connection = sqlite_database.connection()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_read_client_after_fork, args=(sqlite_database, id(parent_connection), results))
    child.start()
    assert results.get(timeout=30) == (True, True)
    child.join(timeout=30)
    # The parent's connection is untouched by the child.
    assert SqliteClientRepository(sqlite_database).get("client-1") == make_client()
