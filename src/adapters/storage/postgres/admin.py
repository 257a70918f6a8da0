"""PostgreSQL behind the StorageAdministration port: schema, key rotation, purge, counts, and
the export and import of records that copy-storage moves between storages.

Purge and re-encryption work in bounded batches, each its own short transaction, so that they
never hold many row locks or one long transaction while instances serve requests; both are
safe to interrupt and run again. Export reads one snapshot through server-side cursors, a batch
at a time; import stores a batch per transaction (COPY into a staging table, then one INSERT).
"""

from __future__ import annotations

from typing import Any, Generator, Sequence

import psycopg

from ....domain.ports import RECORD_KINDS, HashKeyUsage, ImportResult, RecordBatch
from .. import records
from ..admin import COUNTED_TABLES, PURGED_TABLES, SchemaAdministration, reencrypt_in_batches
from .database import PostgresDatabase

# Rows deleted or re-encrypted per statement.
BATCH_ROWS = 1000

_EXPIRED_TABLES = ("pending_authorizations", "authorization_codes", "access_tokens", "refresh_tokens")
_GRANT_TABLES = ("authorization_codes", "access_tokens", "refresh_tokens")


def _delete_expired(table: str, column: str = "expires_at") -> str:
    return f"""
        DELETE FROM {table} WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM {table} WHERE {column} <= %(cut)s LIMIT %(batch)s))
    """


# Cached client ID metadata documents past the time they may be served stale; never their
# clients (no foreign key ties them).
_DELETE_STALE_DOCUMENTS = _delete_expired("client_metadata_documents", "stale_until")


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

# Export, kind by kind (records.export_queries in psycopg's spelling of named parameters).
_EXPORT = records.export_queries(lambda name: f"%({name})s")
# The primary key each kind's INSERT returns for the rows it stored.
_PRIMARY_KEYS = {
    "clients": "client_id",
    "pending_authorizations": "pending_id",
    "grants": "grant_id",
    "authorization_codes": "code_hash",
    "access_tokens": "token_hash",
    "refresh_tokens": "token_hash",
    "grant_upstream_tokens": "grant_id",
}


def _staging(table: str) -> str:
    """A temporary table shaped like ``table`` that an import batch is copied into first; emptied
    when the transaction ends, dropped with the session."""
    return f"CREATE TEMP TABLE IF NOT EXISTS import_{table} (LIKE {table}) ON COMMIT DELETE ROWS"


def _insert_staged(table: str, columns: str) -> str:
    """Store the staged rows, leaving out a row whose unique keys (the primary key, or another
    UNIQUE column such as a pending authorization's upstream state hash) are taken; return the
    key of each row stored."""
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM import_{table} "
        f"ON CONFLICT DO NOTHING RETURNING {_PRIMARY_KEYS[table]}"
    )


def _storable(kind: str, row: Sequence[Any]) -> tuple[Any, ...] | None:
    """The row with its keyed hashes as this backend stores them (32 bytes); None when one is
    text that is not a keyed hash (SQLite keeps such values as they are; no bytea column can)."""
    values = list(row)
    for position in records.HASH_POSITIONS.get(kind, ()):
        value = values[position]
        if isinstance(value, str):
            values[position] = records.hash_bytes(value)
            if values[position] is None:
                return None
    return tuple(values)



class PostgresAdministration(SchemaAdministration):
    """``purge_expired`` deletes what SQLite's does (records.REVOKED_GRANT_RETENTION,
    ``grant_retention``, cached client metadata documents past their ``stale_until``), batch by
    batch."""

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
        return sum(self.purge_expired_by_kind(now).values())

    def purge_expired_by_kind(self, now: int) -> dict[str, int]:
        removed = dict.fromkeys(PURGED_TABLES, 0)
        for table in _EXPIRED_TABLES:
            removed[table] += self._in_batches(_delete_expired(table), now)
        removed["client_metadata_documents"] += self._in_batches(_DELETE_STALE_DOCUMENTS, now)
        revoked_before = now - records.REVOKED_GRANT_RETENTION
        for table in _GRANT_TABLES:
            removed[table] += self._in_batches(_delete_of_revoked_grants(table), revoked_before)
        removed["grants"] += self._in_batches(_DELETE_REVOKED_GRANTS, revoked_before)
        removed["grants"] += self._in_batches(_DELETE_UNUSED_GRANTS, now - self._grant_retention)
        return removed

    def reencrypt(self, *, batch_size: int = BATCH_ROWS) -> int:
        return reencrypt_in_batches(
            self._db, self._db.fetchall, self._db.execute, placeholder="%s", lock=" FOR UPDATE", batch_size=batch_size
        )

    def database_size(self) -> int:
        row = self._db.fetchone("SELECT pg_database_size(current_database())")
        return 0 if row is None else int(row[0])

    def counts(self) -> dict[str, int]:
        counts = {}
        for table in COUNTED_TABLES:
            row = self._db.fetchone(f"SELECT count(*) FROM {table}")
            counts[table] = 0 if row is None else int(row[0])
        return counts

    def hash_key_usage(self, key_ids: Sequence[str], now: int) -> list[HashKeyUsage]:
        parameters = {"now": now, "key_ids": list(key_ids)}
        return records.hash_key_usage(
            lambda query: self._db.fetchall(query, parameters),
            binary_key_id="encode(substring({column} from 29 for 4), 'hex')",
            text_key_id="substr({column}, 57, 8)",
            key_ids="{key_id} = ANY(%(key_ids)s)",
            now="%(now)s",
        )

    def live_grants(self) -> int:
        row = self._db.fetchone("SELECT count(*) FROM grants WHERE revoked_at IS NULL")
        return 0 if row is None else int(row[0])

    def export_records(self, now: int, *, batch_size: int = 1000) -> Generator[RecordBatch, None, None]:
        parameters = self._export_parameters(now)
        try:
            with self._db.snapshot() as connection:
                for kind in RECORD_KINDS:
                    # A server-side cursor: the rows come a batch at a time, never all at once.
                    with connection.cursor(name=f"export_{kind}") as cursor:
                        cursor.execute(_EXPORT[kind], parameters)
                        while rows := cursor.fetchmany(batch_size):
                            yield RecordBatch(kind, rows)
        except psycopg.Error as exc:
            raise self._db.storage_error(exc) from exc

    def import_records(self, batch: RecordBatch) -> ImportResult:
        storable = [row for row in (_storable(batch.kind, row) for row in batch.rows) if row is not None]
        unstorable = len(batch.rows) - len(storable)
        if not storable:
            return ImportResult(unstorable=unstorable)
        with self._db.atomic(), self._db.connection() as connection:
            if batch.kind == "grants":
                added = _import_grants(connection, storable)
            else:
                added = len(_insert(connection, batch.kind, records.insert_columns(batch.kind), storable))
        return ImportResult(added=added, existing=len(storable) - added, unstorable=unstorable)


def _insert(connection: psycopg.Connection[Any], table: str, columns: str, rows: Sequence[Sequence[Any]]) -> set[Any]:
    """Store the rows (COPY into a staging table, then one INSERT: a batch costs a few round
    trips, not one per row); return the keys of those stored."""
    connection.execute(_staging(table))
    with connection.cursor() as cursor, cursor.copy(f"COPY import_{table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return {key for (key,) in connection.execute(_insert_staged(table, columns)).fetchall()}


def _import_grants(connection: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> int:
    width = records.GRANT_WIDTH
    stored = _insert(connection, "grants", records.insert_columns("grants"), [row[:width] for row in rows])
    # The upstream tokens of the grants stored now (a grant already here keeps its own).
    upstream = [(row[0], *row[width:]) for row in rows if row[0] in stored and row[width] is not None]
    if upstream:
        _insert(connection, "grant_upstream_tokens", "grant_id, tokens_enc, expires_at", upstream)
    return len(stored)
