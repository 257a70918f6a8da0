"""SQLite behind the AccessTokenStore and RefreshTokenStore ports."""

from __future__ import annotations

from ....domain.model import AccessToken, Grant, RefreshToken
from ....domain.ports import StorageError
from .. import records
from .database import SqliteDatabase, storage_errors
from .migrations import access_token_key

# The token with a copy of its grant's fields (migration 3), read from the grant in the same
# statement: nothing is inserted for an unknown grant, nor when another token already has the
# key (two hashes with the same first 8 bytes; add_access_token then inserts at the next free
# rowid, token_key NULL, as for a hash stored as text). A second row with the same hash still
# fails on the UNIQUE token_hash.
_INSERT_ACCESS_TOKEN = f"""
    INSERT INTO access_tokens (
        token_key, {records.ACCESS_COLUMNS.replace('a.', '')}, {records.ACCESS_GRANT_COLUMNS.replace('a.', '')}
    )
    SELECT ?1, ?2, g.grant_id, ?3, ?4, ?5, ?6, ?7, ?8,
        g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
    FROM grants g WHERE g.grant_id = ?9
    ON CONFLICT (token_key) DO NOTHING
"""
# The hot path of every MCP request and introspection: one rowid probe, the full hash compared.
_SELECT_ACCESS_TOKEN = f"""
    SELECT {records.ACCESS_COLUMNS}, a.grant_id, {records.ACCESS_GRANT_COLUMNS}
    FROM access_tokens a
    WHERE a.token_key = ? AND a.token_hash = ?
"""
# When that finds nothing: a token moved off its key by a collision, a hash stored as text, or
# an unknown hash (through the UNIQUE index on token_hash).
_SELECT_ACCESS_TOKEN_BY_HASH = f"""
    SELECT {records.ACCESS_COLUMNS}, a.grant_id, {records.ACCESS_GRANT_COLUMNS}
    FROM access_tokens a
    WHERE a.token_hash = ?
"""
_REVOKE_ACCESS_TOKEN = "UPDATE access_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL"
_INSERT_REFRESH_TOKEN = (
    f"INSERT INTO refresh_tokens ({records.REFRESH_COLUMNS.replace('r.', '')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_REFRESH_TOKEN = f"""
    SELECT {records.REFRESH_COLUMNS}, {records.GRANT_COLUMNS}
    FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id
    WHERE r.token_hash = ?
"""
_CURRENT_REFRESH_GENERATION = "SELECT max(generation) FROM refresh_tokens WHERE grant_id = ?"
_ROTATE_REFRESH_TOKEN = """
    UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ? AND rotated_at IS NULL
    RETURNING grant_id, generation
"""
# After a rotation only the rotated token and its successor (inserted next) remain.
_FORGET_OLDER_REFRESH_TOKENS = "DELETE FROM refresh_tokens WHERE grant_id = ? AND generation <= ? AND token_hash != ?"
_MARK_REFRESH_RETRIED = "UPDATE refresh_tokens SET retried_at = ? WHERE token_hash = ? AND retried_at IS NULL"



class SqliteAccessTokenStore:
    """Access tokens, each row with a copy of its grant: a lookup is one rowid probe."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def add_access_token(self, token: AccessToken) -> None:
        connection = self._db.connection()
        key, grant_id, *fields = records.access_token_row(token)
        row = [access_token_key(key), key, *fields, grant_id]
        inserted = connection.execute(_INSERT_ACCESS_TOKEN, row).rowcount
        if inserted == 0 and row[0] is not None:
            # Another token's hash starts with the same 8 bytes (or the grant is unknown).
            row[0] = None
            inserted = connection.execute(_INSERT_ACCESS_TOKEN, row).rowcount
        if inserted != 1:
            raise StorageError(f"SQLite storage failed: no grant {token.grant_id!r} for the access token")

    @storage_errors
    def get_access_token(self, token_hash: str) -> tuple[AccessToken, Grant] | None:
        connection = self._db.connection()
        key = records.hash_key(token_hash)
        row = None
        if isinstance(key, bytes):
            row = connection.execute(_SELECT_ACCESS_TOKEN, (access_token_key(key), key)).fetchone()
        if row is None:
            row = connection.execute(_SELECT_ACCESS_TOKEN_BY_HASH, (key,)).fetchone()
            if row is None:
                return None
        return records.access_token_and_grant(row)

    @storage_errors
    def revoke_access_token(self, token_hash: str, now: int) -> None:
        self._db.connection().execute(_REVOKE_ACCESS_TOKEN, (now, records.hash_key(token_hash)))


class SqliteRefreshTokenStore:
    """Refresh tokens: a grant's current generation and the token it replaced."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def add_refresh_token(self, token: RefreshToken) -> None:
        self._db.connection().execute(_INSERT_REFRESH_TOKEN, records.refresh_token_row(token))

    @storage_errors
    def get_refresh_token(self, token_hash: str) -> tuple[RefreshToken, Grant] | None:
        row = self._db.connection().execute(_SELECT_REFRESH_TOKEN, (records.hash_key(token_hash),)).fetchone()
        if row is None:
            return None
        return records.refresh_token_and_grant(row)

    @storage_errors
    def current_refresh_generation(self, grant_id: str) -> int | None:
        row = self._db.connection().execute(_CURRENT_REFRESH_GENERATION, (grant_id,)).fetchone()
        return None if row is None else row[0]

    @storage_errors
    def rotate_refresh_token(self, token_hash: str, now: int) -> bool:
        connection = self._db.connection()
        key = records.hash_key(token_hash)
        with self._db.atomic():
            # fetchall(): a statement with RETURNING has done its write only once fully stepped.
            rows = connection.execute(_ROTATE_REFRESH_TOKEN, (now, key)).fetchall()
            if not rows:
                return False
            grant_id, generation = rows[0]
            connection.execute(_FORGET_OLDER_REFRESH_TOKENS, (grant_id, generation, key))
        return True

    @storage_errors
    def mark_refresh_retried(self, token_hash: str, now: int) -> bool:
        cursor = self._db.connection().execute(_MARK_REFRESH_RETRIED, (now, records.hash_key(token_hash)))
        return cursor.rowcount == 1
