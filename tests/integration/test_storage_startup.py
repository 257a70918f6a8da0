"""A busy or not yet migrated database never stops the server: workers start, answer 503 with
Retry-After while the schema is not ready, retry, and serve once it is; a worker restarted while
another process holds the write lock boots without waiting for it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import requests
from flask import Flask

from mcp_oauth_bridge.adapters.http.readiness import StorageReadiness
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .oauth_flow import REDIRECT_URI
from .servers import running_server
from .storage_fixtures import database_at_version

LATEST = MIGRATIONS[-1].version


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's long write: the database's write lock held until the block ends."""
    connection = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def versions(path: Path) -> set[int]:
    connection = sqlite3.connect(str(path))
    try:
        return {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
    finally:
        connection.close()


REGISTRATION = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}


def register(base_url: str) -> requests.Response:
    return requests.post(base_url + "/oauth/register", json=REGISTRATION, timeout=30)


# -- the readiness gate, in process ---------------------------------------------------------------


def test_readiness_retries_the_check_at_most_every_interval() -> None:
    answers = [False, False, True]
    calls: list[float] = []
    now = [100.0]

    def check() -> bool:
        calls.append(now[0])
        return answers[len(calls) - 1]

    readiness = StorageReadiness(check, retry_every=2.0, monotonic=lambda: now[0])
    assert readiness.ready() is False
    now[0] = 101.9
    assert readiness.ready() is False
    assert calls == [100.0]
    now[0] = 102.0
    assert readiness.ready() is False
    now[0] = 104.0
    assert readiness.ready() is True
    now[0] = 200.0
    assert readiness.ready() is True
    assert calls == [100.0, 102.0, 104.0]


def _app_on(path: Path, tmp_path: Path) -> Flask:
    env = environment_for(tmp_path, STORAGE_URL=f"sqlite:///{path}")
    return create_app(load_settings(env, dotenv_path=None))


def test_an_app_started_while_the_database_is_locked_answers_503_then_serves(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    database_at_version(3, path, [], [])
    with write_lock(path):
        started = time.monotonic()
        app = _app_on(path, tmp_path)  # must not raise, nor wait for the lock for long
        assert time.monotonic() - started < 8
        client = app.test_client()
        reply = client.post("/oauth/register", json=REGISTRATION)
        assert reply.status_code == 503
        assert reply.headers["Retry-After"] == "2"
        assert reply.get_json()["error"] == "temporarily_unavailable"
        assert reply.headers["Cache-Control"] == "no-store"
        page = client.get("/oauth/authorize?client_id=x")
        assert page.status_code == 503 and page.mimetype == "text/html"
        assert page.headers["Retry-After"] == "2"
        # Liveness is not storage.
        assert client.get("/healthz").status_code == 200
        assert versions(path) == {1, 2, 3}
    # Once the lock is gone, the next check (at most 2 s later) migrates and the app serves.
    deadline = time.monotonic() + 10
    while (reply := client.post("/oauth/register", json=REGISTRATION)).status_code == 503:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert reply.status_code == 201
    assert versions(path) == {version for version, _ in MIGRATIONS}
    app.extensions["container"].storage_admin().close()


def test_an_app_on_a_current_schema_starts_while_the_database_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "current.db"
    first = _app_on(path, tmp_path)
    first.extensions["container"].storage_admin().close()
    with write_lock(path):
        started = time.monotonic()
        app = _app_on(path, tmp_path)
        assert time.monotonic() - started < 2  # the schema check reads; it takes no lock
        client = app.test_client()
        metadata = client.get("/.well-known/oauth-authorization-server")
        assert metadata.status_code == 200
    assert client.post("/oauth/register", json=REGISTRATION).status_code == 201
    app.extensions["container"].storage_admin().close()


# -- gunicorn -------------------------------------------------------------------------------------


def _worker_pids(log: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", log)]


@pytest.mark.slow
@pytest.mark.serial
def test_a_worker_restarted_while_the_write_lock_is_held_long_boots_and_the_server_stays_up(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, workers=2) as server:
        path = tmp_path / "data" / "mcp-oauth-bridge.db"
        assert register(server.base_url).status_code == 201
        booted = _worker_pids(server.log_text())
        assert len(booted) == 2
        with write_lock(path):
            # A worker dies (crash, OOM, max_requests) and is replaced while the lock is held
            # longer than the busy timeout (10 s).
            os.kill(booted[0], signal.SIGKILL)
            deadline = time.monotonic() + 15
            while len(_worker_pids(server.log_text())) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(11)
            assert server.process.poll() is None, server.log_text()
            assert "Worker failed to boot" not in server.log_text()
            for _ in range(6):  # both workers answer what needs no write
                reply = requests.get(server.base_url + "/.well-known/oauth-authorization-server", timeout=10)
                assert reply.status_code == 200
        assert len(_worker_pids(server.log_text())) == 3
        for _ in range(4):
            assert register(server.base_url).status_code == 201
        assert server.process.poll() is None


@pytest.mark.slow
@pytest.mark.serial
def test_gunicorn_started_on_an_old_locked_database_answers_503_then_migrates(tmp_path: Path) -> None:
    path = tmp_path / "data" / "mcp-oauth-bridge.db"
    database_at_version(3, path, [], [])
    lock = write_lock(path)
    lock.__enter__()
    try:
        with running_server(tmp_path, workers=2) as server:
            reply = register(server.base_url)
            assert reply.status_code == 503
            assert reply.headers["Retry-After"] == "2"
            lock.__exit__(None, None, None)
            lock = None  # type: ignore[assignment]
            deadline = time.monotonic() + 20
            statuses = []
            while time.monotonic() < deadline:
                statuses.append(register(server.base_url).status_code)
                if statuses[-3:] == [201, 201, 201]:
                    break
                time.sleep(0.2)
            assert statuses[-3:] == [201, 201, 201], statuses
            assert server.process.poll() is None
        assert versions(path) == {version for version, _ in MIGRATIONS}
        assert LATEST in versions(path)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
