"""SQLite behind the StorageAdministration port: schema, key rotation, purge and counts."""

from __future__ import annotations

from .. import records
from ..admin import COUNTED_TABLES, SchemaAdministration
from .database import SqliteDatabase, storage_errors

# Purge, in order; each takes the cut-off time. Rows of grants about to go are deleted
# explicitly rather than by ON DELETE CASCADE so that they are counted.
_REVOKED_GRANTS = "SELECT grant_id FROM grants WHERE revoked_at <= ?"
_PURGE_EXPIRED = (
    "DELETE FROM pending_authorizations WHERE expires_at <= ?",
    "DELETE FROM authorization_codes WHERE expires_at <= ?",
    "DELETE FROM access_tokens WHERE expires_at <= ?",
    "DELETE FROM refresh_tokens WHERE expires_at <= ?",
)
_PURGE_REVOKED_GRANTS = (
    f"DELETE FROM authorization_codes WHERE grant_id IN ({_REVOKED_GRANTS})",
    f"DELETE FROM access_tokens WHERE grant_id IN ({_REVOKED_GRANTS})",
    f"DELETE FROM refresh_tokens WHERE grant_id IN ({_REVOKED_GRANTS})",
    "DELETE FROM grants WHERE revoked_at <= ?",
)
_PURGE_UNUSED_GRANTS = """
    DELETE FROM grants WHERE created_at <= ?
    AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = grants.grant_id)
    AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = grants.grant_id)
    AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = grants.grant_id)
"""


class SqliteAdministration(SchemaAdministration):
    """``purge_expired`` deletes expired pending authorizations, codes and tokens; grants revoked
    more than ``records.REVOKED_GRANT_RETENTION`` ago (with their rows); and grants older than
    ``grant_retention`` that have no code or token left, so nothing can use them any more."""

    def __init__(self, db: SqliteDatabase, *, grant_retention: int = records.DEFAULT_GRANT_RETENTION) -> None:
        super().__init__(db, grant_retention=grant_retention)
        self._db = db

    @storage_errors
    def reencrypt(self) -> int:
        """Re-encrypt every encrypted column under the newest key in one transaction; return
        the number of rows rewritten."""
        rewritten = 0
        connection = self._db.connection()
        with self._db.atomic():
            for table, key, columns in records.ENCRYPTED_COLUMNS:
                selected = ", ".join(columns)
                present = " OR ".join(f"{column} IS NOT NULL" for column in columns)
                assignments = ", ".join(f"{column} = ?" for column in columns)
                rows = connection.execute(f"SELECT {key}, {selected} FROM {table} WHERE {present}").fetchall()
                for row in rows:
                    values = [None if value is None else self._db.box.rotate(value) for value in row[1:]]
                    connection.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", (*values, row[0]))
                    rewritten += 1
        return rewritten

    @storage_errors
    def purge_expired(self, now: int) -> int:
        connection = self._db.connection()
        removed = 0
        with self._db.atomic():
            for statement in _PURGE_EXPIRED:
                removed += connection.execute(statement, (now,)).rowcount
            revoked_before = now - records.REVOKED_GRANT_RETENTION
            for statement in _PURGE_REVOKED_GRANTS:
                removed += connection.execute(statement, (revoked_before,)).rowcount
            removed += connection.execute(_PURGE_UNUSED_GRANTS, (now - self._grant_retention,)).rowcount
        return removed

    @storage_errors
    def counts(self) -> dict[str, int]:
        connection = self._db.connection()
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED_TABLES}
