"""The ``limits`` library's storage interface on the project's own RateLimitStore port, so that
Flask-Limiter's fixed-window strategy counts in the project's database (shared by every worker
and instance) without a Redis.

``limits`` finds storages by URI scheme; Flask-Limiter builds its storage from a URI and keyword
options, so this class is registered under ``mcp-oauth-bridge://`` and receives the app's store
and clock as options (the class holds no state of its own: every app gets its own instance).
"""

from __future__ import annotations

import logging

from limits.storage import Storage

from ...domain.ports import Clock, RateLimitStore, StorageError

log = logging.getLogger(__name__)

STORAGE_URI = "mcp-oauth-bridge://"
# Expired counters are deleted by each process at most this often (and by `purge`).
PURGE_INTERVAL_SECONDS = 60


class PortStorage(Storage):
    """Fixed-window counters (``incr``, ``get``, ``get_expiry``) on a RateLimitStore.

    Only the fixed-window strategy is supported: it is one atomic statement per hit on any SQL
    database, where the sliding-window counter would be a read-modify-write of two windows.
    """

    STORAGE_SCHEME = ["mcp-oauth-bridge"]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        store: RateLimitStore,
        clock: Clock,
        purge_interval: int = PURGE_INTERVAL_SECONDS,
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._store = store
        self._clock = clock
        self._purge_interval = purge_interval
        self._next_purge = 0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return StorageError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._clock.now()
        self._purge_now_and_then(now)
        return self._store.increment(key, int(expiry), now, amount).hits

    def get(self, key: str) -> int:
        window = self._store.current(key, self._clock.now())
        return 0 if window is None else window.hits

    def get_expiry(self, key: str) -> float:
        now = self._clock.now()
        window = self._store.current(key, now)
        # As limits' own storages: a key without a live window resets now.
        return float(now if window is None else window.ends_at)

    def check(self) -> bool:
        try:
            self._store.current("health-check", self._clock.now())
        except StorageError:
            return False
        return True

    def reset(self) -> int | None:
        # Nothing in the application resets every limit at once; the port has no such write.
        raise NotImplementedError

    def clear(self, key: str) -> None:
        self._store.clear(key)

    def _purge_now_and_then(self, now: int) -> None:
        # Expired counters would otherwise stay until the next hit on the same key, and keys
        # are made of addresses and client ids that strangers choose.
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_interval
        try:
            removed = self._store.purge_expired(now)
        except StorageError as exc:
            log.warning("could not purge expired rate-limit counters: %s", exc)
            return
        if removed:
            log.debug("purged %d expired rate-limit counters", removed)
