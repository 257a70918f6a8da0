"""SQLite behind the GrantStore and UpstreamTokenStore ports: grants, and each grant's upstream
tokens (encrypted, in their own table so that grant rows stay small) with the refresh lease."""

from __future__ import annotations

from ....domain.model import Grant, UpstreamTokens
from ....domain.ports import GrantUsage
from .. import records
from .database import SqliteDatabase, storage_errors

_INSERT_GRANT = f"INSERT INTO grants ({records.GRANT_COLUMNS.replace('g.', '')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_UPSTREAM = "INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at) VALUES (?, ?, ?)"
_SELECT_GRANT = f"SELECT {records.GRANT_COLUMNS} FROM grants g WHERE g.grant_id = ?"
_SELECT_GRANTS = f"SELECT {records.GRANT_COLUMNS} FROM grants g ORDER BY g.created_at, g.grant_id"
_SELECT_CLIENT_GRANTS = (
    f"SELECT {records.GRANT_COLUMNS} FROM grants g WHERE g.client_id = ? ORDER BY g.created_at, g.grant_id"
)
_REVOKE_GRANT = "UPDATE grants SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL"
# After _REVOKE_GRANT: the token rows' copy of the grant takes the grant's revocation time (the
# first one, as the grant keeps it) and every token not revoked yet is revoked now.
_REVOKE_GRANT_ACCESS_TOKENS = """
    UPDATE access_tokens
    SET revoked_at = coalesce(revoked_at, ?1), grant_revoked_at = (SELECT revoked_at FROM grants WHERE grant_id = ?2)
    WHERE grant_id = ?2 AND (revoked_at IS NULL OR grant_revoked_at IS NULL)
"""
_REVOKE_GRANT_REFRESH_TOKENS = "UPDATE refresh_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL"
_SELECT_GRANT_USAGE = records.select_grant_usage(optional="?", value="?")
_SELECT_UPSTREAM = "SELECT tokens_enc FROM grant_upstream_tokens WHERE grant_id = ?"
_ACQUIRE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = ?, refresh_until = ?
    WHERE grant_id = ? AND (refresh_until IS NULL OR refresh_until <= ?)
"""
_RELEASE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = NULL, refresh_until = NULL
    WHERE grant_id = ? AND refresh_holder = ?
"""
# Insert or replace, but only for a grant that exists (an unknown grant is ignored, as before).
_UPDATE_UPSTREAM = """
    INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at)
    SELECT grant_id, ?, ? FROM grants WHERE grant_id = ?
    ON CONFLICT (grant_id) DO UPDATE SET tokens_enc = excluded.tokens_enc, expires_at = excluded.expires_at
"""


class SqliteGrantStore:
    """Grants; revoking one revokes every token issued from it in the same transaction."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def add_grant(self, grant: Grant, upstream: UpstreamTokens | None) -> None:
        connection = self._db.connection()
        row = records.grant_row(grant)
        if upstream is None:
            connection.execute(_INSERT_GRANT, row)
            return
        sealed = records.seal_upstream(upstream, self._db.box)
        # Both rows or neither.
        with self._db.atomic():
            connection.execute(_INSERT_GRANT, row)
            connection.execute(_INSERT_UPSTREAM, (grant.grant_id, sealed, upstream.expires_at))

    @storage_errors
    def get_grant(self, grant_id: str) -> Grant | None:
        row = self._db.connection().execute(_SELECT_GRANT, (grant_id,)).fetchone()
        return None if row is None else records.grant_from_row(row)

    @storage_errors
    def list_grants(self, client_id: str | None = None) -> list[Grant]:
        connection = self._db.connection()
        if client_id is None:
            rows = connection.execute(_SELECT_GRANTS).fetchall()
        else:
            rows = connection.execute(_SELECT_CLIENT_GRANTS, (client_id,)).fetchall()
        return [records.grant_from_row(row) for row in rows]

    @storage_errors
    def revoke_grant(self, grant_id: str, now: int) -> None:
        connection = self._db.connection()
        with self._db.atomic():
            connection.execute(_REVOKE_GRANT, (now, grant_id))
            connection.execute(_REVOKE_GRANT_ACCESS_TOKENS, (now, grant_id))
            connection.execute(_REVOKE_GRANT_REFRESH_TOKENS, (now, grant_id))


    @storage_errors
    def grant_usage(self, *, subject: str | None = None, client_id: str | None = None) -> list[GrantUsage]:
        parameters = (subject, subject, client_id, client_id)
        rows = self._db.connection().execute(_SELECT_GRANT_USAGE, parameters).fetchall()
        return [GrantUsage(records.grant_from_row(row), row[records.GRANT_WIDTH]) for row in rows]

class SqliteUpstreamTokenStore:
    """The upstream tokens of each grant (sealed) and the lease for refreshing them."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def get_upstream_tokens(self, grant_id: str) -> UpstreamTokens | None:
        row = self._db.connection().execute(_SELECT_UPSTREAM, (grant_id,)).fetchone()
        return None if row is None else records.open_upstream(row[0], self._db.box)

    @storage_errors
    def update_upstream_tokens(self, grant_id: str, tokens: UpstreamTokens) -> None:
        self._db.connection().execute(
            _UPDATE_UPSTREAM, (records.seal_upstream(tokens, self._db.box), tokens.expires_at, grant_id)
        )

    @storage_errors
    def acquire_upstream_refresh_lock(self, grant_id: str, holder: str, now: int, until: int) -> bool:
        cursor = self._db.connection().execute(_ACQUIRE_REFRESH_LOCK, (holder, until, grant_id, now))
        return cursor.rowcount == 1

    @storage_errors
    def release_upstream_refresh_lock(self, grant_id: str, holder: str) -> None:
        self._db.connection().execute(_RELEASE_REFRESH_LOCK, (grant_id, holder))
