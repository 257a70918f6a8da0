"""The rate limits' counters are shared by gunicorn's workers: against the real server with two
workers, registrations from one address over many connections (both workers serving some) let
exactly the limit through, with the counters in SQLite and in a real Redis."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .redis_server import redis_url  # noqa: F401
from .servers import REPO_ROOT, RunningServer, running_server

LIMIT = 10
# At least twice the limit: were each worker counting on its own, the two together would let
# more than LIMIT through as soon as each had served one request.
REQUESTS = 3 * LIMIT
CONCURRENCY = 6
REGISTRATION = {"redirect_uris": ["http://127.0.0.1:9999/callback"], "token_endpoint_auth_method": "none"}
PID_LOG_FORMAT = 'pid=%(p)s "%(m)s %(U)s %(H)s" %(s)s'
GUNICORN_WITH_PIDS = [
    sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}",
    "--workers", "2", "--access-logformat", PID_LOG_FORMAT, "wsgi:app",
]  # fmt: skip
REGISTER_LINE = re.compile(r'pid=<(\d+)> "POST /register HTTP/1\.1" (\d+)')
HEALTH_LINE = re.compile(r'pid=<(\d+)> "GET /healthz HTTP/1\.1" 200')
WORKERS_READY_TIMEOUT = 30.0


def wait_for_both_workers(server: RunningServer) -> None:
    """Until each worker has answered a probe: the server is ready as soon as one has booted."""
    deadline = time.monotonic() + WORKERS_READY_TIMEOUT
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        while len(set(HEALTH_LINE.findall(server.log_text()))) < 2:
            assert time.monotonic() < deadline, "the second worker did not answer"
            list(pool.map(lambda _: requests.get(server.base_url + "/healthz", timeout=10), range(CONCURRENCY)))


def register_concurrently(base_url: str) -> list[requests.Response]:
    def one(_: int) -> requests.Response:
        # requests.post opens a connection of its own each time: the workers share them out.
        return requests.post(base_url + "/register", json=REGISTRATION, timeout=30)

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, range(REQUESTS)))


def logged_registrations(server: RunningServer, count: int) -> list[tuple[str, str]]:
    """(pid, status) of the logged registrations, once ``count`` are in the log."""
    deadline = time.monotonic() + 10
    while True:
        found: list[tuple[str, str]] = REGISTER_LINE.findall(server.log_text())
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def assert_exactly_the_limit_across_workers(server: RunningServer) -> None:
    wait_for_both_workers(server)
    replies = register_concurrently(server.base_url)
    statuses = Counter(reply.status_code for reply in replies)
    assert statuses == {201: LIMIT, 429: REQUESTS - LIMIT}, statuses
    limited = [reply for reply in replies if reply.status_code == 429]
    assert all(reply.json()["error"] == "temporarily_unavailable" for reply in limited)
    assert all(1 <= int(reply.headers["Retry-After"]) <= 60 for reply in limited)
    logged = logged_registrations(server, REQUESTS)
    assert len(logged) == REQUESTS
    served = Counter(pid for pid, _ in logged)
    # Both workers answered some, and together they let exactly LIMIT through.
    assert len(served) == 2, served
    assert Counter(status for _, status in logged) == {"201": LIMIT, "429": REQUESTS - LIMIT}


@pytest.mark.slow
def test_registrations_are_counted_across_workers_in_sqlite(tmp_path: Path) -> None:
    with running_server(
        tmp_path, command=GUNICORN_WITH_PIDS, cwd=REPO_ROOT, RATE_LIMITS="on", RATE_LIMIT_REGISTER=f"{LIMIT}/minute"
    ) as server:
        assert_exactly_the_limit_across_workers(server)


@pytest.mark.slow
def test_registrations_are_counted_across_workers_in_redis(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    with running_server(
        tmp_path,
        command=GUNICORN_WITH_PIDS,
        cwd=REPO_ROOT,
        RATE_LIMITS="on",
        RATE_LIMIT_REGISTER=f"{LIMIT}/minute",
        RATE_LIMIT_STORAGE_URL=redis_url,
    ) as server:
        assert_exactly_the_limit_across_workers(server)
    # The database holds no counter: they were all in Redis.
    import sqlite3

    connection = sqlite3.connect(tmp_path / "data" / "mcp-oauth-bridge.db")
    try:
        assert connection.execute("SELECT COUNT(*) FROM rate_limit_counters").fetchone()[0] == 0
    finally:
        connection.close()
