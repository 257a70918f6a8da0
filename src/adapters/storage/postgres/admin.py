"""PostgreSQL behind the StorageAdministration port: schema, key rotation, purge and counts.

Purge and re-encryption work in bounded batches, each its own short transaction, so that they
never hold many row locks or one long transaction while instances serve requests; both are
safe to interrupt and run again.
"""

from __future__ import annotations

from .. import records
from ..admin import COUNTED_TABLES, SchemaAdministration
from .database import PostgresDatabase

# Rows deleted or re-encrypted per statement.
BATCH_ROWS = 1000

_EXPIRED_TABLES = ("pending_authorizations", "authorization_codes", "access_tokens", "refresh_tokens")
_GRANT_TABLES = ("authorization_codes", "access_tokens", "refresh_tokens")


def _delete_expired(table: str) -> str:
    return f"""
        DELETE FROM {table} WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM {table} WHERE expires_at <= %(cut)s LIMIT %(batch)s))
    """


def _delete_of_revoked_grants(table: str) -> str:
    return f"""
        DELETE FROM {table} WHERE ctid = ANY (ARRAY(
            SELECT t.ctid FROM {table} t JOIN grants g ON g.grant_id = t.grant_id
            WHERE g.revoked_at <= %(cut)s LIMIT %(batch)s))
    """


# The grants' upstream tokens go with them (ON DELETE CASCADE), uncounted as on SQLite.
_DELETE_REVOKED_GRANTS = """
    DELETE FROM grants WHERE grant_id = ANY (ARRAY(
        SELECT grant_id FROM grants WHERE revoked_at <= %(cut)s LIMIT %(batch)s))
"""
_DELETE_UNUSED_GRANTS = """
    DELETE FROM grants WHERE grant_id = ANY (ARRAY(
        SELECT grant_id FROM grants WHERE created_at <= %(cut)s
        AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = grants.grant_id)
        AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = grants.grant_id)
        AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = grants.grant_id)
        LIMIT %(batch)s))
"""



class PostgresAdministration(SchemaAdministration):
    """``purge_expired`` deletes what SQLite's does (records.REVOKED_GRANT_RETENTION,
    ``grant_retention``), batch by batch."""

    def __init__(self, db: PostgresDatabase, *, grant_retention: int = records.DEFAULT_GRANT_RETENTION) -> None:
        super().__init__(db, grant_retention=grant_retention)
        self._db = db

    def _in_batches(self, sql: str, cut: int) -> int:
        removed = 0
        while True:
            count = self._db.execute(sql, {"cut": cut, "batch": BATCH_ROWS})
            removed += count
            if count < BATCH_ROWS:
                return removed

    def purge_expired(self, now: int) -> int:
        removed = sum(self._in_batches(_delete_expired(table), now) for table in _EXPIRED_TABLES)
        revoked_before = now - records.REVOKED_GRANT_RETENTION
        removed += sum(self._in_batches(_delete_of_revoked_grants(table), revoked_before) for table in _GRANT_TABLES)
        removed += self._in_batches(_DELETE_REVOKED_GRANTS, revoked_before)
        removed += self._in_batches(_DELETE_UNUSED_GRANTS, now - self._grant_retention)
        return removed

    def reencrypt(self) -> int:
        """Re-encrypt every encrypted column under the newest key, a batch of rows per
        transaction (in primary-key order); return the number of rows rewritten."""
        rewritten = 0
        for table, key, columns in records.ENCRYPTED_COLUMNS:
            selected = ", ".join(columns)
            present = " OR ".join(f"{column} IS NOT NULL" for column in columns)
            assignments = ", ".join(f"{column} = %s" for column in columns)
            after = ""
            while True:
                with self._db.atomic():
                    rows = self._db.fetchall(
                        f"SELECT {key}, {selected} FROM {table} WHERE ({present}) AND {key} > %s "
                        f"ORDER BY {key} LIMIT %s FOR UPDATE",
                        (after, BATCH_ROWS),
                    )
                    for row in rows:
                        values = [None if value is None else self._db.box.rotate(value) for value in row[1:]]
                        self._db.execute(f"UPDATE {table} SET {assignments} WHERE {key} = %s", (*values, row[0]))
                rewritten += len(rows)
                if len(rows) < BATCH_ROWS:
                    break
                after = rows[-1][0]
        return rewritten

    def counts(self) -> dict[str, int]:
        counts = {}
        for table in COUNTED_TABLES:
            row = self._db.fetchone(f"SELECT count(*) FROM {table}")
            counts[table] = 0 if row is None else int(row[0])
        return counts
