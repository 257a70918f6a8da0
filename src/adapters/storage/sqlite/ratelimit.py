"""SQLite behind the RateLimitStore port: fixed-window counters for the rate limits, shared by
every worker that opens the same file (table ``rate_limit_counters``, migration 5)."""

from __future__ import annotations

from ....domain.ports import RateWindow
from ..records import counter_key
from .database import SqliteDatabase, storage_errors

# One statement per hit: SQLite runs it under the database's write lock, so two workers
# counting the same key never both read the same count (UPSERT needs SQLite 3.24, RETURNING
# 3.35). In the DO UPDATE clause every column name is the row's value before this statement.
_INCREMENT = """
    INSERT INTO rate_limit_counters (counter_key, hits, ends_at) VALUES (?1, ?2, ?3 + ?4)
    ON CONFLICT (counter_key) DO UPDATE SET
        hits = CASE WHEN ends_at > ?3 THEN hits + excluded.hits ELSE excluded.hits END,
        ends_at = CASE WHEN ends_at > ?3 THEN ends_at ELSE excluded.ends_at END
    RETURNING hits, ends_at
"""
_CURRENT = "SELECT hits, ends_at FROM rate_limit_counters WHERE counter_key = ? AND ends_at > ?"
_CLEAR = "DELETE FROM rate_limit_counters WHERE counter_key = ?"
_PURGE = "DELETE FROM rate_limit_counters WHERE ends_at <= ?"


class SqliteRateLimitStore:
    """Rate-limit counters in the project's SQLite file: one row per live key, rewritten in
    place by each hit, deleted by ``purge_expired`` once its window has ended."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def increment(self, key: str, window: int, now: int, amount: int = 1) -> RateWindow:
        # fetchall(): an autocommit statement with RETURNING commits only once fully stepped.
        rows = self._db.connection().execute(_INCREMENT, (counter_key(key), amount, now, window)).fetchall()
        return RateWindow(*rows[0])

    @storage_errors
    def current(self, key: str, now: int) -> RateWindow | None:
        row = self._db.connection().execute(_CURRENT, (counter_key(key), now)).fetchone()
        return None if row is None else RateWindow(*row)

    @storage_errors
    def clear(self, key: str) -> None:
        self._db.connection().execute(_CLEAR, (counter_key(key),))

    @storage_errors
    def purge_expired(self, now: int) -> int:
        return self._db.connection().execute(_PURGE, (now,)).rowcount
