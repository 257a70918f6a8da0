"""PostgreSQL behind the RateLimitStore port: fixed-window counters shared by every worker and
instance on the database (table ``rate_limit_counters``)."""

from __future__ import annotations

from ....domain.ports import RateWindow
from ..records import counter_key
from .database import PostgresDatabase

# One statement per hit: INSERT ... ON CONFLICT DO UPDATE locks the row, so two concurrent hits
# on one key serialise and never both read the same count.
_INCREMENT = """
    INSERT INTO rate_limit_counters (counter_key, hits, ends_at) VALUES (%(key)s, %(amount)s, %(now)s + %(window)s)
    ON CONFLICT (counter_key) DO UPDATE SET
        hits = CASE WHEN rate_limit_counters.ends_at > %(now)s
                    THEN rate_limit_counters.hits + excluded.hits ELSE excluded.hits END,
        ends_at = CASE WHEN rate_limit_counters.ends_at > %(now)s
                       THEN rate_limit_counters.ends_at ELSE excluded.ends_at END
    RETURNING hits, ends_at
"""
_CURRENT = "SELECT hits, ends_at FROM rate_limit_counters WHERE counter_key = %s AND ends_at > %s"
_CLEAR = "DELETE FROM rate_limit_counters WHERE counter_key = %s"
_PURGE = "DELETE FROM rate_limit_counters WHERE ends_at <= %s"


class PostgresRateLimitStore:
    """Rate-limit counters in the project's PostgreSQL database: one row per live key."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def increment(self, key: str, window: int, now: int, amount: int = 1) -> RateWindow:
        parameters = {"key": counter_key(key), "amount": amount, "now": now, "window": window}
        row = self._db.fetchone(_INCREMENT, parameters)
        assert row is not None  # an upsert with RETURNING always returns its row
        return RateWindow(*row)

    def current(self, key: str, now: int) -> RateWindow | None:
        row = self._db.fetchone(_CURRENT, (counter_key(key), now))
        return None if row is None else RateWindow(*row)

    def clear(self, key: str) -> None:
        self._db.execute(_CLEAR, (counter_key(key),))

    def purge_expired(self, now: int) -> int:
        return self._db.execute(_PURGE, (now,))
