"""What StorageAdministration does the same way on every SQL backend: the schema through the
backend's database object, re-encryption batch by batch, and the tables whose rows ``counts``
reports."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol, Sequence

from . import records
from .crypto import SecretBox

# What counts() reports, by table.
COUNTED_TABLES = (
    "clients",
    "pending_authorizations",
    "authorization_codes",
    "grants",
    "access_tokens",
    "refresh_tokens",
    "rate_limit_counters",
    "client_metadata_documents",
)

# What purge_expired_by_kind reports, by table (rate-limit counters have their own purge).
PURGED_TABLES = (
    "pending_authorizations",
    "authorization_codes",
    "access_tokens",
    "refresh_tokens",
    "grants",
    "client_metadata_documents",
)


class SchemaDatabase(Protocol):
    def migrate(self) -> list[int]: ...

    def pending_migrations(self) -> list[int]: ...

    def applied_migrations(self) -> list[int]: ...

    def ensure_schema(self, *, busy_wait: float) -> bool: ...

    def close(self) -> None: ...


class SchemaAdministration:
    """The schema part of StorageAdministration, delegated to the backend's database object;
    subclasses add re-encryption, purge and counts. ``grant_retention``: how long a grant with
    no code or token left is kept (the purge's cut-off)."""

    def __init__(self, db: SchemaDatabase, *, grant_retention: int = records.DEFAULT_GRANT_RETENTION) -> None:
        self._schema = db
        self._grant_retention = grant_retention

    def migrate(self) -> list[int]:
        return self._schema.migrate()

    def pending_migrations(self) -> list[int]:
        return self._schema.pending_migrations()

    def applied_migrations(self) -> list[int]:
        return self._schema.applied_migrations()

    def ensure_schema(self, *, busy_wait: float) -> bool:
        return self._schema.ensure_schema(busy_wait=busy_wait)

    def close(self) -> None:
        self._schema.close()

    def _export_parameters(self, now: int) -> dict[str, int]:
        """The cut-offs of records.export_queries: what ``purge_expired(now)`` would keep."""
        return {
            "now": now,
            "revoked_before": now - records.REVOKED_GRANT_RETENTION,
            "unused_before": now - self._grant_retention,
        }


class EncryptedDatabase(Protocol):
    box: SecretBox

    def atomic(self) -> AbstractContextManager[None]: ...


def reencrypt_in_batches(
    db: EncryptedDatabase,
    fetchall: Callable[[str, tuple[Any, ...]], Sequence[Sequence[Any]]],
    execute: Callable[[str, tuple[Any, ...]], object],
    *,
    placeholder: str,
    lock: str,
    batch_size: int,
) -> int:
    """Re-encrypt every encrypted column (records.ENCRYPTED_COLUMNS) under the newest key, a batch
    of rows per transaction (in primary-key order), so that the server's writers wait for one
    batch at most and an interrupted run leaves every value readable (under the old key or the
    new) for the next run to finish; return the number of rows rewritten. Nobody rewrites a
    batch's rows between its read and its update: ``lock`` ends the read (PostgreSQL's
    FOR UPDATE; SQLite's transaction holds the write lock from BEGIN IMMEDIATE). ``placeholder``
    is the backend's parameter marker."""
    rewritten = 0
    for table, key, columns in records.ENCRYPTED_COLUMNS:
        present = " OR ".join(f"{column} IS NOT NULL" for column in columns)
        select = (
            f"SELECT {key}, {', '.join(columns)} FROM {table} WHERE ({present}) AND {key} > {placeholder} "
            f"ORDER BY {key} LIMIT {placeholder}{lock}"
        )
        assignments = ", ".join(f"{column} = {placeholder}" for column in columns)
        update = f"UPDATE {table} SET {assignments} WHERE {key} = {placeholder}"
        after = ""
        while True:
            with db.atomic():
                rows = fetchall(select, (after, batch_size))
                for row in rows:
                    values = [None if value is None else db.box.rotate(value) for value in row[1:]]
                    execute(update, (*values, row[0]))
            rewritten += len(rows)
            if len(rows) < batch_size:
                break
            after = rows[-1][0]
    return rewritten
