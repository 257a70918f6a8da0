"""The PostgreSQL database going away and coming back (issue 9, part 2): requests meanwhile get
503 with Retry-After (RFC 9110 §15.6.4, §10.2.3), the OAuth error ``temporarily_unavailable``
(RFC 6749 §5.2) on the API endpoints and the error page on the browser steps; the log names the
cause and nothing secret; a transaction cut off midway leaves nothing behind; a server started
while the database is down starts, and the same app serves again once the database is back.

These tests stop and start a server of their own (``start_postgres()``, one per module and
test process), never the shared one of the other PostgreSQL tests.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import pytest
import requests
from flask import Flask

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase
from mcp_oauth_bridge.adapters.storage.postgres.database import UNREACHABLE_SECONDS
from mcp_oauth_bridge.adapters.storage.postgres.migrations import MIGRATIONS
from mcp_oauth_bridge.domain.ports import StorageError
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from tests.contract.samples import make_client, make_code, make_grant, make_upstream_tokens
from tests.contract.stores import postgres_stores

from .conftest import environment_for
from .oauth_flow import REDIRECT_URI, FlaskTransport, OAuthClient, Reply, pkce_pair
from .postgres_server import PostgresServer, fresh_database, start_postgres
from .servers import running_server
from .test_storage_failures import assert_error_page, assert_oauth_error

LATEST = [migration.version for migration in MIGRATIONS]
# Short, so that requests while the database is down do not wait long (the default is 5 s).
CONNECT_TIMEOUT = "1"
# Bounds a test that waits for the server to serve again; the app retries its schema check every
# 2 s (readiness.py) and the pool connects on demand.
RECOVERY_SECONDS = 30.0
# How long the mid-request outage lasts.
OUTAGE_SECONDS = 8.0
REGISTRATION = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}


class Outage:
    """This module's PostgreSQL server, taken down and brought back by the test (same port, same
    data); always running again when the test ends."""

    def __init__(self, server: PostgresServer, url: str) -> None:
        self.server = server
        self.url = url
        self.down_now = False

    def down(self) -> None:
        self.server.stop()
        self.down_now = True

    def up(self) -> None:
        if self.down_now:
            self.server.start()
            self.down_now = False


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with start_postgres() as started:
        yield started


@pytest.fixture
def outage(server: PostgresServer) -> Iterator[Outage]:
    with fresh_database(server.admin_url) as url:
        database = Outage(server, url)
        try:
            yield database
        finally:
            database.up()


def app_on(outage: Outage, tmp_path: Path) -> Flask:
    env = environment_for(tmp_path, STORAGE_URL=outage.url, STORAGE_CONNECT_TIMEOUT=CONNECT_TIMEOUT)
    return create_app(load_settings(env, dotenv_path=None))


@pytest.fixture
def app(outage: Outage, tmp_path: Path) -> Iterator[Flask]:
    app = app_on(outage, tmp_path)
    yield app
    app.extensions["container"].storage_admin().close()


def eventually(request: Callable[[], Reply], status: int) -> Reply:
    """``request`` repeated until it answers ``status`` (the app retries by itself meanwhile)."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while (reply := request()).status != status:
        assert time.monotonic() < deadline, f"still {reply.status} after {RECOVERY_SECONDS:.0f}s: {reply.text}"
        time.sleep(0.2)
    return reply


def storage_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "storage failure" in record.getMessage()]


def applied_versions(url: str) -> list[int]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]


# -- down mid-request ------------------------------------------------------------------------------


def test_requests_while_the_database_is_down_get_503_and_the_same_app_serves_once_it_is_back(
    app: Flask, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    http = FlaskTransport(app.test_client())
    oauth = OAuthClient(http)
    assert oauth.register().status == 201
    code, verifier = oauth.login()
    tokens = oauth.exchange(code, verifier).json()

    outage.down()
    assert_oauth_error(OAuthClient(http).register())
    assert_oauth_error(oauth.refresh(tokens["refresh_token"]))
    assert_error_page(oauth.authorize(pkce_pair()[1]))
    # Down for some seconds more, asked all along: long enough for a pool that retries after a
    # doubling back-off (1, 2, 4, 8 s …: psycopg_pool's default) to make its next attempt only
    # seconds after the database is back.
    until = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < until:
        assert_oauth_error(OAuthClient(http).register())
        time.sleep(0.25)

    failures = storage_failures(caplog)
    assert failures, caplog.text
    for failure in failures:
        # The cause, with host and port; never the password of STORAGE_URL.
        assert "PostgreSQL storage failed: " in failure
        assert "the database is unreachable" in failure and f'"127.0.0.1", port {outage.server.port}' in failure
    for secret in (outage.server.password, tokens["refresh_token"], tokens["access_token"], code, verifier):
        assert secret not in caplog.text

    outage.up()
    # Past the moment failures are remembered, the first request is served: the pool connects
    # when asked, not after a back-off grown during the outage.
    time.sleep(UNREACHABLE_SECONDS + 0.5)
    assert OAuthClient(http).register().status == 201
    refreshed = oauth.refresh(tokens["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    assert oauth.authorize(pkce_pair()[1]).status == 200


def test_a_rate_limited_page_while_the_database_is_down_waits_for_the_pool_once(
    outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/oauth/authorize with the rate limits on makes two storage calls: the limiter's counter
    (which fails open) and the page's own. The first waits for the pool and finds the database
    unreachable; the second fails at once instead of waiting as long again."""
    env = environment_for(tmp_path, STORAGE_URL=outage.url, STORAGE_CONNECT_TIMEOUT=CONNECT_TIMEOUT, RATE_LIMITS="on")
    app = create_app(load_settings(env, dotenv_path=None))
    try:
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        assert oauth.register().status == 201
        outage.down()
        caplog.clear()
        assert_error_page(oauth.authorize(pkce_pair()[1]))
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert [record.name for record in errors] == ["flask-limiter", "mcp_oauth_bridge.adapters.http.errors"], caplog.text
        limiter, page = errors
        # Flask-Limiter swallows the counter's failure (logged with it): the wait for the pool.
        assert limiter.exc_info is not None
        waited = str(limiter.exc_info[1])
        assert waited.startswith("PostgreSQL storage failed: PoolTimeout")
        assert "(the database is unreachable: OperationalError: connection failed: " in waited
        # The page's own call, at once.
        assert page.getMessage().startswith(
            "storage failure in authorization.authorize: PostgreSQL storage failed: the database is unreachable ("
        )
    finally:
        app.extensions["container"].storage_admin().close()


# -- nothing half-written --------------------------------------------------------------------------


def terminate_backend(outage: Outage, pid: int) -> None:
    with psycopg.connect(outage.server.admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def stop_server(outage: Outage, pid: int) -> None:
    outage.down()


@pytest.mark.parametrize("cut", [terminate_backend, stop_server], ids=["backend-terminated", "server-stopped"])
def test_a_transaction_cut_off_midway_leaves_nothing_behind(outage: Outage, cut: Callable[[Outage, int], None]) -> None:
    database = PostgresDatabase(outage.url, SecretBox([generate_key()]), connect_timeout=int(CONNECT_TIMEOUT))
    stores = postgres_stores(database)
    try:
        stores.admin.migrate()
        stores.clients.add(make_client())
        with pytest.raises(StorageError, match="PostgreSQL storage failed"):
            # A code exchange's writes to two stores: the grant (with its upstream tokens), then the code.
            with stores.unit_of_work.atomic():
                stores.grants.add_grant(make_grant(), make_upstream_tokens())
                row = database.fetchone("SELECT pg_backend_pid()")
                assert row is not None
                cut(outage, row[0])
                stores.authorizations.add_code(make_code())
        outage.up()
        with psycopg.connect(outage.url) as connection:
            for table in ("grants", "grant_upstream_tokens", "authorization_codes"):
                assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        # The same database object works again, and the same transaction now commits whole.
        time.sleep(UNREACHABLE_SECONDS)
        with stores.unit_of_work.atomic():
            stores.grants.add_grant(make_grant(), make_upstream_tokens())
            stores.authorizations.add_code(make_code())
        assert stores.authorizations.get_code(make_code().code_hash) is not None
    finally:
        database.close()


# -- failing fast while the database is down -------------------------------------------------------


def test_while_the_database_is_unreachable_calls_fail_at_once_naming_the_cause(outage: Outage) -> None:
    database = PostgresDatabase(outage.url, SecretBox([generate_key()]), connect_timeout=int(CONNECT_TIMEOUT))
    stores = postgres_stores(database)
    try:
        stores.admin.migrate()
        outage.down()
        # The first call waits for the pool (connect_timeout), which meanwhile fails to connect.
        with pytest.raises(StorageError) as first:
            stores.clients.get("client-1")
        assert "PoolTimeout" in str(first.value)
        assert f'the database is unreachable: OperationalError: connection failed: connection to server at "127.0.0.1", port {outage.server.port}' in str(first.value)
        # The next ones, right after, do not wait: the failure is remembered.
        for _ in range(3):
            with pytest.raises(StorageError) as next_call:
                stores.clients.get("client-1")
            assert "PoolTimeout" not in str(next_call.value)
            assert str(next_call.value).startswith("PostgreSQL storage failed: the database is unreachable (OperationalError: ")
        with pytest.raises(StorageError, match="the database is unreachable"):
            with stores.unit_of_work.atomic():
                pass
        outage.up()
        time.sleep(UNREACHABLE_SECONDS)
        assert stores.clients.get("client-1") is None
    finally:
        database.close()


def test_an_exhausted_pool_is_not_taken_for_an_unreachable_database(outage: Outage) -> None:
    database = PostgresDatabase(outage.url, SecretBox([generate_key()]), pool_size=1, connect_timeout=int(CONNECT_TIMEOUT))
    stores = postgres_stores(database)
    held, release = threading.Event(), threading.Event()

    def hold_the_only_connection() -> None:
        with stores.unit_of_work.atomic():
            stores.clients.get("client-1")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_only_connection)
    try:
        stores.admin.migrate()
        holder.start()
        assert held.wait(30)
        # Each call waits for the pool and says why it got nothing; none fails at once.
        for _ in range(2):
            with pytest.raises(StorageError) as failure:
                stores.clients.get("client-1")
            assert "PoolTimeout" in str(failure.value)
            assert "(the pool is exhausted: 1 of 1 connections in use)" in str(failure.value)
            assert "unreachable" not in str(failure.value)
        release.set()
        holder.join(30)
        assert stores.clients.get("client-1") is None
    finally:
        release.set()
        holder.join(30)
        database.close()


# -- down at start-up ------------------------------------------------------------------------------


def test_an_app_created_while_the_database_is_down_answers_503_then_migrates_and_serves(
    outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outage.down()
    with caplog.at_level(logging.WARNING):
        app = app_on(outage, tmp_path)  # must not raise
    try:
        assert "the database schema is not ready yet (retrying): PostgreSQL storage failed" in caplog.text
        http = FlaskTransport(app.test_client())
        reply = OAuthClient(http).register()
        assert_oauth_error(reply)
        page = http.get("/oauth/authorize?client_id=x")
        assert page.status == 503 and page.headers["Content-Type"].startswith("text/html")
        assert page.headers["Retry-After"] == reply.headers["Retry-After"]
        # Liveness is not storage.
        assert http.get("/healthz").status == 200
        assert outage.server.password not in caplog.text

        outage.up()
        eventually(lambda: OAuthClient(http).register(), 201)
        assert applied_versions(outage.url) == LATEST
        oauth = OAuthClient(http)
        assert oauth.register().status == 201
        code, verifier = oauth.login()
        assert oauth.exchange(code, verifier).status == 200
    finally:
        app.extensions["container"].storage_admin().close()


@pytest.mark.slow
def test_the_served_command_stays_up_while_the_database_is_down_and_serves_when_it_is_back(
    outage: Outage, tmp_path: Path
) -> None:
    """`mcp-oauth-bridge serve` (gunicorn, 2 workers) started while the database is down."""
    command = [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "serve", "--bind", "127.0.0.1:{port}"]
    outage.down()
    with running_server(tmp_path, command=command, STORAGE_URL=outage.url, STORAGE_CONNECT_TIMEOUT=CONNECT_TIMEOUT) as served:

        def register() -> Reply:
            response = requests.post(served.base_url + "/oauth/register", json=REGISTRATION, timeout=30)
            return Reply(response.status_code, response.headers, response.text)

        reply = register()
        assert reply.status == 503 and int(reply.headers["Retry-After"]) > 0
        assert reply.json()["error"] == "temporarily_unavailable"
        outage.up()
        eventually(register, 201)
        assert applied_versions(outage.url) == LATEST
        # Down again under the running server, then back: the workers were never restarted.
        outage.down()
        assert register().status == 503
        outage.up()
        eventually(register, 201)
        assert served.process.poll() is None
        log = served.log_text()
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", log))) == 2
    assert "PostgreSQL storage failed" in log
    assert outage.server.password not in log
