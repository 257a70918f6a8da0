"""SQLite behind the StorageAdministration port: schema, key rotation, purge, counts, and the
export and import of records that copy-storage moves between storages."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Generator, Sequence

from ....domain.ports import RECORD_KINDS, HashKeyUsage, ImportResult, RecordBatch, StorageError
from .. import records
from ..admin import COUNTED_TABLES, PURGED_TABLES, SchemaAdministration, reencrypt_in_batches
from .database import SqliteDatabase, storage_errors
from .migrations import access_token_key

# Rows re-encrypted per transaction.
BATCH_ROWS = 1000

# Purge, in order; each takes the cut-off time. Rows of grants about to go are deleted
# explicitly rather than by ON DELETE CASCADE so that they are counted.
_REVOKED_GRANTS = "SELECT grant_id FROM grants WHERE revoked_at <= ?"
_PURGE_EXPIRED = (
    "DELETE FROM pending_authorizations WHERE expires_at <= ?",
    "DELETE FROM authorization_codes WHERE expires_at <= ?",
    "DELETE FROM access_tokens WHERE expires_at <= ?",
    "DELETE FROM refresh_tokens WHERE expires_at <= ?",
    # Cached client ID metadata documents past the time they may be served stale; never their
    # clients (no foreign key ties them).
    "DELETE FROM client_metadata_documents WHERE stale_until <= ?",
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


def _table_of(statement: str) -> str:
    """The table a purge statement deletes from ("DELETE FROM table ...")."""
    return statement.split()[2]


# Export, kind by kind (records.export_queries in SQLite's spelling of named parameters).
_EXPORT = records.export_queries(lambda name: f":{name}")


def _insert(table: str, columns: str) -> str:
    """An INSERT that leaves the row out when any of its unique keys is taken (the primary key,
    or another UNIQUE column such as a pending authorization's upstream state hash)."""
    placeholders = ", ".join("?" * len(columns.split(",")))
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) ON CONFLICT DO NOTHING"


_IMPORT = {kind: _insert(kind, records.insert_columns(kind)) for kind in RECORD_KINDS}
_IMPORT_UPSTREAM = _insert("grant_upstream_tokens", "grant_id, tokens_enc, expires_at")
# Access tokens sit at the rowid their hash gives (migration 3): token_key comes first.
_IMPORT["access_tokens"] = _insert("access_tokens", "token_key, " + records.insert_columns("access_tokens"))
_ACCESS_TOKEN_EXISTS = "SELECT 1 FROM access_tokens WHERE token_hash = ?"



class SqliteAdministration(SchemaAdministration):
    """``purge_expired`` deletes expired pending authorizations, codes and tokens; cached client
    metadata documents past their ``stale_until``; grants revoked more than
    ``records.REVOKED_GRANT_RETENTION`` ago (with their rows); and grants older than
    ``grant_retention`` that have no code or token left, so nothing can use them any more."""

    def __init__(self, db: SqliteDatabase, *, grant_retention: int = records.DEFAULT_GRANT_RETENTION) -> None:
        super().__init__(db, grant_retention=grant_retention)
        self._db = db

    @storage_errors
    def reencrypt(self, *, batch_size: int = BATCH_ROWS) -> int:
        connection = self._db.connection()
        return reencrypt_in_batches(
            self._db,
            lambda sql, params: connection.execute(sql, params).fetchall(),
            connection.execute,
            placeholder="?",
            lock="",
            batch_size=batch_size,
        )

    def purge_expired(self, now: int) -> int:
        return sum(self.purge_expired_by_kind(now).values())

    @storage_errors
    def purge_expired_by_kind(self, now: int) -> dict[str, int]:
        connection = self._db.connection()
        removed = dict.fromkeys(PURGED_TABLES, 0)
        with self._db.atomic():
            for statement in _PURGE_EXPIRED:
                removed[_table_of(statement)] += connection.execute(statement, (now,)).rowcount
            revoked_before = now - records.REVOKED_GRANT_RETENTION
            for statement in _PURGE_REVOKED_GRANTS:
                removed[_table_of(statement)] += connection.execute(statement, (revoked_before,)).rowcount
            removed["grants"] += connection.execute(_PURGE_UNUSED_GRANTS, (now - self._grant_retention,)).rowcount
        return removed

    def database_size(self) -> int:
        # The file and its write-ahead log (pages not yet checkpointed into the file).
        size = 0
        for path in (self._db.path, self._db.path + "-wal"):
            try:
                size += os.stat(path).st_size
            except FileNotFoundError:
                pass
        return size

    @storage_errors
    def counts(self) -> dict[str, int]:
        connection = self._db.connection()
        return {table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED_TABLES}

    @storage_errors
    def hash_key_usage(self, key_ids: Sequence[str], now: int) -> list[HashKeyUsage]:
        connection = self._db.connection()
        parameters: dict[str, Any] = {"now": now} | {f"k{index}": key for index, key in enumerate(key_ids)}
        listed = "{key_id} IN (" + (", ".join(f":k{index}" for index in range(len(key_ids))) or "NULL") + ")"
        return records.hash_key_usage(
            lambda query: connection.execute(query, parameters).fetchall(),
            binary_key_id="lower(hex(substr({column}, 29, 4)))",
            text_key_id="substr({column}, 57, 8)",
            key_ids=listed,
            now=":now",
        )

    @storage_errors
    def live_grants(self) -> int:
        return int(self._db.connection().execute("SELECT count(*) FROM grants WHERE revoked_at IS NULL").fetchone()[0])

    def export_records(self, now: int, *, batch_size: int = 1000) -> Generator[RecordBatch, None, None]:
        parameters = self._export_parameters(now)
        try:
            with self._db.snapshot() as connection:
                for kind in RECORD_KINDS:
                    cursor = connection.execute(_EXPORT[kind], parameters)
                    while rows := cursor.fetchmany(batch_size):
                        yield RecordBatch(kind, rows)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite storage failed: {exc}") from exc

    @storage_errors
    def import_records(self, batch: RecordBatch) -> ImportResult:
        connection = self._db.connection()
        added = 0
        with self._db.atomic():
            for row in batch.rows:
                added += self._import_row(connection, batch.kind, row)
        return ImportResult(added=added, existing=len(batch.rows) - added)

    @staticmethod
    def _import_row(connection: sqlite3.Connection, kind: str, row: Sequence[Any]) -> int:
        """Insert one exported row; 1 if it was stored, 0 if its key was taken."""
        if kind == "access_tokens":
            return _import_access_token(connection, row)
        if kind != "grants":
            return connection.execute(_IMPORT[kind], row).rowcount
        grant, (tokens_enc, expires_at) = row[: records.GRANT_WIDTH], row[records.GRANT_WIDTH :]
        if connection.execute(_IMPORT["grants"], grant).rowcount == 0:
            return 0
        if tokens_enc is not None:
            connection.execute(_IMPORT_UPSTREAM, (grant[0], tokens_enc, expires_at))
        return 1


def _import_access_token(connection: sqlite3.Connection, row: Sequence[Any]) -> int:
    # At the rowid its hash gives, or (another token's hash starting with the same 8 bytes, or a
    # hash stored as text) at the next free one, as add_access_token places it.
    key = access_token_key(row[0])
    if key is not None and connection.execute(_IMPORT["access_tokens"], (key, *row)).rowcount == 1:
        return 1
    if connection.execute(_ACCESS_TOKEN_EXISTS, (row[0],)).fetchone() is not None:
        return 0
    return connection.execute(_IMPORT["access_tokens"], (None, *row)).rowcount
