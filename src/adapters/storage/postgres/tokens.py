"""PostgreSQL behind the AccessTokenStore and RefreshTokenStore ports."""

from __future__ import annotations

from ....domain.model import AccessToken, Grant, RefreshToken
from ....domain.ports import StorageError
from .. import records
from .database import PostgresDatabase

# The token with a copy of its grant's fields, read from the grant in the same statement under
# a share lock on the grant's row: a concurrent revoke_grant (which updates that row first)
# either waits for this insert to commit and then revokes the token, or commits first and the
# copy reads the revocation. Nothing is inserted for an unknown grant.
_INSERT_ACCESS_TOKEN = f"""
    INSERT INTO access_tokens ({records.ACCESS_COLUMNS.replace('a.', '')}, {records.ACCESS_GRANT_COLUMNS.replace('a.', '')})
    SELECT %s, g.grant_id, %s, %s, %s, %s, %s, %s,
        g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
    FROM grants g WHERE g.grant_id = %s
    FOR SHARE
"""
# The hot path of every MCP request and introspection: one probe of the primary key's index.
_SELECT_ACCESS_TOKEN = f"""
    SELECT {records.ACCESS_COLUMNS}, a.grant_id, {records.ACCESS_GRANT_COLUMNS}
    FROM access_tokens a WHERE a.token_hash = %s
"""
_REVOKE_ACCESS_TOKEN = "UPDATE access_tokens SET revoked_at = %s WHERE token_hash = %s AND revoked_at IS NULL"
_INSERT_REFRESH_TOKEN = (
    f"INSERT INTO refresh_tokens ({records.REFRESH_COLUMNS.replace('r.', '')}) VALUES ({', '.join(['%s'] * 11)})"
)
# Inside a transaction, every lock on a grant's rows is taken grant first, then its refresh
# tokens: revoke_grant updates the grant, then its tokens; the refresh grant's transaction
# share-locks the grant here before locking the token below (it then issues tokens under that
# share lock, see _INSERT_ACCESS_TOKEN). Locking the token first would deadlock with a
# revocation of the same grant (it holding the grant, waiting for the token; the refresh
# holding the token, waiting for the grant), and PostgreSQL would abort one of them.
_LOCK_GRANT_OF_REFRESH_TOKEN = """
    SELECT 1 FROM grants WHERE grant_id = (SELECT grant_id FROM refresh_tokens WHERE token_hash = %s)
    FOR SHARE
"""
# FOR UPDATE OF r: inside the refresh grant's transaction the token's row stays locked until it
# ends, so a second presentation of the same token waits and then reads it rotated (the grace
# and replay rules then decide exactly as when SQLite serialises the two transactions).
_SELECT_REFRESH_TOKEN = f"""
    SELECT {records.REFRESH_COLUMNS}, {records.GRANT_COLUMNS}
    FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id
    WHERE r.token_hash = %s
    FOR UPDATE OF r
"""
_CURRENT_REFRESH_GENERATION = "SELECT max(generation) FROM refresh_tokens WHERE grant_id = %s"
_ROTATE_REFRESH_TOKEN = """
    UPDATE refresh_tokens SET rotated_at = %s WHERE token_hash = %s AND rotated_at IS NULL
    RETURNING grant_id, generation
"""
# After a rotation only the rotated token and its successor (inserted next) remain.
_FORGET_OLDER_REFRESH_TOKENS = """
    DELETE FROM refresh_tokens WHERE grant_id = %s AND generation <= %s AND token_hash != %s
"""
_MARK_REFRESH_RETRIED = "UPDATE refresh_tokens SET retried_at = %s WHERE token_hash = %s AND retried_at IS NULL"


class PostgresAccessTokenStore:
    """Access tokens, each row with a copy of its grant: a lookup is one indexed probe."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_access_token(self, token: AccessToken) -> None:
        key, grant_id, *fields = records.access_token_row(token, encode=records.stored_hash)
        if self._db.execute(_INSERT_ACCESS_TOKEN, (key, *fields, grant_id)) != 1:
            raise StorageError(f"PostgreSQL storage failed: no grant {token.grant_id!r} for the access token")

    def get_access_token(self, token_hash: str) -> tuple[AccessToken, Grant] | None:
        key = records.hash_bytes(token_hash)
        row = None if key is None else self._db.fetchone(_SELECT_ACCESS_TOKEN, (key,))
        return None if row is None else records.access_token_and_grant(row)

    def revoke_access_token(self, token_hash: str, now: int) -> None:
        key = records.hash_bytes(token_hash)
        if key is not None:
            self._db.execute(_REVOKE_ACCESS_TOKEN, (now, key))


class PostgresRefreshTokenStore:
    """Refresh tokens: a grant's current generation and the token it replaced."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_refresh_token(self, token: RefreshToken) -> None:
        self._db.execute(_INSERT_REFRESH_TOKEN, records.refresh_token_row(token, encode=records.stored_hash))

    def get_refresh_token(self, token_hash: str) -> tuple[RefreshToken, Grant] | None:
        key = records.hash_bytes(token_hash)
        if key is None:
            return None
        if self._db.in_transaction():
            self._db.fetchone(_LOCK_GRANT_OF_REFRESH_TOKEN, (key,))
        row = self._db.fetchone(_SELECT_REFRESH_TOKEN, (key,))
        return None if row is None else records.refresh_token_and_grant(row)

    def current_refresh_generation(self, grant_id: str) -> int | None:
        row = self._db.fetchone(_CURRENT_REFRESH_GENERATION, (grant_id,))
        return None if row is None else row[0]

    def rotate_refresh_token(self, token_hash: str, now: int) -> bool:
        key = records.hash_bytes(token_hash)
        if key is None:
            return False
        with self._db.atomic():
            row = self._db.fetchone(_ROTATE_REFRESH_TOKEN, (now, key))
            if row is None:
                return False
            grant_id, generation = row
            self._db.execute(_FORGET_OLDER_REFRESH_TOKENS, (grant_id, generation, key))
        return True

    def mark_refresh_retried(self, token_hash: str, now: int) -> bool:
        key = records.hash_bytes(token_hash)
        return key is not None and self._db.execute(_MARK_REFRESH_RETRIED, (now, key)) == 1
