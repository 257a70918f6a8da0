"""What StorageAdministration does the same way on every SQL backend: the schema through the
backend's database object, and the tables whose rows ``counts`` reports."""

from __future__ import annotations

from typing import Protocol

from . import records

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
