"""The RateLimitStore port beyond its contract (tests/contract): SQLite's migration 5, its
atomicity across threads and processes, and the limits Storage adapter on top of it (fixed
windows, expiry, opportunistic purge) with a fixed clock."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter

from mcp_oauth_bridge.adapters.http.ratelimit import RateLimited, RateLimits
from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.limits_storage import PURGE_INTERVAL_SECONDS, PortStorage
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase, SqliteRateLimitStore
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS
from mcp_oauth_bridge.domain.ports import RateLimitStore, RateWindow
from tests.fakes import FixedClock, InMemoryRateLimitStore

from .storage_fixtures import sqlite_database, sqlite_key, sqlite_path  # noqa: F401

NOW = 1_700_000_000
MINUTE = 60


def test_sqlite_stores_a_key_as_32_bytes_whatever_its_length(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    store = SqliteRateLimitStore(sqlite_database)
    store.increment("x" * 100_000, MINUTE, NOW)
    store.increment("short", MINUTE, NOW)
    lengths = sqlite_database.connection().execute("SELECT length(counter_key) FROM rate_limit_counters").fetchall()
    assert lengths == [(32,), (32,)]


# -- migration 5 --------------------------------------------------------------------------------


def test_migration_5_needs_no_other_table(tmp_path: Path) -> None:
    # The lead's migration 4 may come after it on existing databases: 5 stands on its own.
    connection = sqlite3.connect(tmp_path / "bare.db")
    try:
        for statement in MIGRATIONS[4].statements:
            connection.execute(statement)
        assert connection.execute("SELECT name FROM sqlite_schema").fetchall() == [("rate_limit_counters",)]
    finally:
        connection.close()


# -- atomicity ----------------------------------------------------------------------------------

THREADS = 8
HITS_PER_THREAD = 150
PROCESSES = 4
HITS_PER_PROCESS = 150


def test_sqlite_increments_are_atomic_across_threads(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    store = SqliteRateLimitStore(sqlite_database)
    seen: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def hit() -> None:
        start.wait()
        counts = [store.increment("shared", MINUTE, NOW).hits for _ in range(HITS_PER_THREAD)]
        with lock:
            seen.extend(counts)

    threads = [threading.Thread(target=hit) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Every increment saw a count of its own: no two read the same value.
    assert sorted(seen) == list(range(1, THREADS * HITS_PER_THREAD + 1))


def _hit_from_process(path: str, key: str, start: "multiprocessing.synchronize.Barrier", results: "multiprocessing.Queue[list[int]]") -> None:
    database = SqliteDatabase(path, SecretBox([key]))
    try:
        store = SqliteRateLimitStore(database)
        start.wait(timeout=30)
        results.put([store.increment("shared", MINUTE, NOW).hits for _ in range(HITS_PER_PROCESS)])
    finally:
        database.close()


def test_sqlite_increments_are_atomic_across_processes(tmp_path: Path) -> None:
    path, key = str(tmp_path / "counters.db"), generate_key()
    database = SqliteDatabase(path, SecretBox([key]))
    database.migrate()
    database.close()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results: "multiprocessing.Queue[list[int]]" = context.Queue()
    processes = [context.Process(target=_hit_from_process, args=(path, key, start, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        seen = [count for _ in processes for count in results.get(timeout=60)]
    finally:
        for process in processes:
            process.join(timeout=30)
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert sorted(seen) == list(range(1, PROCESSES * HITS_PER_PROCESS + 1))


# -- the limits Storage adapter -----------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def fake_store() -> InMemoryRateLimitStore:
    return InMemoryRateLimitStore()


@pytest.fixture
def limiter(fake_store: InMemoryRateLimitStore, clock: FixedClock) -> Iterator[FixedWindowRateLimiter]:
    yield FixedWindowRateLimiter(PortStorage(store=fake_store, clock=clock))


def test_fixed_window_allows_the_limit_then_refuses_until_the_window_ends(limiter: FixedWindowRateLimiter, clock: FixedClock) -> None:
    three_a_minute = parse("3/minute")
    assert [limiter.hit(three_a_minute, "client") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(three_a_minute, "other")
    clock.advance(30)
    assert not limiter.hit(three_a_minute, "client")
    stats = limiter.get_window_stats(three_a_minute, "client")
    assert (stats.reset_time, stats.remaining) == (NOW + MINUTE, 0)
    clock.advance(30)
    assert limiter.test(three_a_minute, "client")
    assert limiter.hit(three_a_minute, "client")


def test_expired_counters_are_purged_by_later_hits(limiter: FixedWindowRateLimiter, fake_store: InMemoryRateLimitStore, clock: FixedClock) -> None:
    per_minute = parse("5/minute")
    for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        limiter.hit(per_minute, address)
    assert len(fake_store.counters) == 3
    clock.advance(PURGE_INTERVAL_SECONDS + 1)
    limiter.hit(per_minute, "198.51.100.4")
    # The three ended windows are gone, not merely ignored.
    assert len(fake_store.counters) == 1


# -- batched counting of high limits (RateLimits._take) ---------------------------------------------


class CountingStore(InMemoryRateLimitStore):
    """The fake store, counting the increments that reach it (the writes a request would cost)."""

    def __init__(self) -> None:
        super().__init__()
        self.increments = 0

    def increment(self, key: str, window: int, now: int, amount: int = 1) -> RateWindow:
        self.increments += 1
        return super().increment(key, window, now, amount)


def _process(store: RateLimitStore, clock: FixedClock, introspect: str) -> RateLimits:
    """One worker's rate limits on the shared store."""
    return RateLimits(
        strategy=FixedWindowRateLimiter(PortStorage(store=store, clock=clock)), clock=clock, introspect=introspect
    )


def _admitted(limits: RateLimits, client: str = "client-1") -> bool:
    try:
        limits.charge(limits.introspect, client, "too many")
    except RateLimited:
        return False
    return True


def test_a_high_limit_is_counted_in_blocks_and_admits_exactly_the_limit_in_one_process(clock: FixedClock) -> None:
    store = CountingStore()
    limits = _process(store, clock, "600/minute")
    outcomes = [_admitted(limits) for _ in range(601)]
    assert outcomes == [True] * 600 + [False]
    # A write per block of 12 (1/50 of the limit), not one per request.
    assert store.increments == 51
    # The next window starts afresh, whatever this process still held.
    clock.advance(MINUTE)
    assert _admitted(limits)


def test_processes_sharing_a_batched_limit_never_admit_more_than_it(clock: FixedClock) -> None:
    store = CountingStore()
    workers = [_process(store, clock, "600/minute") for _ in range(3)]
    admitted = sum(_admitted(workers[index % 3]) for index in range(900))
    # At most a block (12) per other process held back near the ceiling; never more than 600.
    assert 600 - 2 * 11 <= admitted <= 600
    # A write per block admitted (and one per refused request, as for any limit).
    assert store.increments <= 600 // 12 + 3 + (900 - admitted)


def test_low_limits_are_counted_request_by_request(clock: FixedClock) -> None:
    store = CountingStore()
    workers = [_process(store, clock, "60/minute") for _ in range(2)]
    admitted = sum(_admitted(workers[index % 2]) for index in range(100))
    assert admitted == 60
    assert store.increments == 100
