"""The RateLimitStore contract: fixed-window counters, on every storage backend."""

from __future__ import annotations

from mcp_oauth_bridge.domain.ports import RateWindow

from .stores import Stores

NOW = 1_700_000_000
MINUTE = 60


def test_a_first_hit_opens_a_window_that_later_hits_count_in(storage: Stores) -> None:
    assert storage.rate_limits.increment("k", MINUTE, NOW) == RateWindow(1, NOW + MINUTE)
    assert storage.rate_limits.increment("k", MINUTE, NOW + 30) == RateWindow(2, NOW + MINUTE)
    assert storage.rate_limits.increment("k", MINUTE, NOW + 59, amount=3) == RateWindow(5, NOW + MINUTE)
    assert storage.rate_limits.current("k", NOW + 59) == RateWindow(5, NOW + MINUTE)


def test_a_hit_after_the_window_ends_starts_a_new_one(storage: Stores) -> None:
    storage.rate_limits.increment("k", MINUTE, NOW)
    storage.rate_limits.increment("k", MINUTE, NOW + 1)
    assert storage.rate_limits.current("k", NOW + MINUTE) is None
    assert storage.rate_limits.increment("k", MINUTE, NOW + MINUTE) == RateWindow(1, NOW + 2 * MINUTE)


def test_keys_count_apart(storage: Stores) -> None:
    storage.rate_limits.increment("a", MINUTE, NOW)
    storage.rate_limits.increment("a", MINUTE, NOW)
    assert storage.rate_limits.increment("b", 10, NOW + 5) == RateWindow(1, NOW + 15)
    assert storage.rate_limits.current("a", NOW + 5) == RateWindow(2, NOW + MINUTE)
    assert storage.rate_limits.current("never", NOW) is None


def test_clear_forgets_one_key(storage: Stores) -> None:
    storage.rate_limits.increment("a", MINUTE, NOW)
    storage.rate_limits.increment("b", MINUTE, NOW)
    storage.rate_limits.clear("a")
    assert storage.rate_limits.current("a", NOW) is None
    assert storage.rate_limits.current("b", NOW) == RateWindow(1, NOW + MINUTE)


def test_purge_deletes_exactly_the_ended_windows(storage: Stores) -> None:
    storage.rate_limits.increment("short", 10, NOW)
    storage.rate_limits.increment("long", MINUTE, NOW)
    assert storage.rate_limits.purge_expired(NOW + 9) == 0
    assert storage.rate_limits.purge_expired(NOW + 10) == 1
    assert storage.rate_limits.current("long", NOW + 10) == RateWindow(1, NOW + MINUTE)
    assert storage.rate_limits.purge_expired(NOW + 10) == 0


def test_any_text_is_a_key(storage: Stores) -> None:
    odd = ["", "é/\u2028", "x" * 100_000, "\ud800 lone surrogate"]
    for number, key in enumerate(odd, start=1):
        for _ in range(number):
            storage.rate_limits.increment(key, MINUTE, NOW)
    assert [storage.rate_limits.current(key, NOW) for key in odd] == [RateWindow(n, NOW + MINUTE) for n in range(1, 5)]
