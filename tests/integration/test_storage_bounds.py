"""What strangers and long-lived connections can make the database hold is bounded:

- a grant refreshed every hour for 30 days occupies the same space as after its first days;
- a flood of registrations and pending authorizations at the rate limits' ceiling, with the
  opportunistic purge, leaves the file no larger than, for each kind of row,
  rate × (lifetime + purge interval) × the on-disk size of the largest such row.

Time is a fixed clock moved by the test; the database is the real SQLite adapter behind the app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import pytest
from dependency_injector import providers
from flask import Flask

from mcp_oauth_bridge.adapters.http.registration import MAX_REGISTRATION_BYTES
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase
from mcp_oauth_bridge.domain.services.authorization import MAX_STATE_LENGTH
from mcp_oauth_bridge.domain.services.registration import MAX_REDIRECT_URIS
from mcp_oauth_bridge.domain.uris import MAX_REDIRECT_URI_LENGTH
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import build_container
from tests.fakes import FixedClock

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair

MINUTE = 60
HOUR = 3600
# The rate limits' default ceilings (issue: /register 30 a minute, /authorize 60 a minute per address).
REGISTRATIONS_PER_MINUTE = 30
AUTHORIZATIONS_PER_MINUTE = 60
# Lifetimes shortened so that the simulation reaches its steady state in a few simulated hours.
UNUSED_CLIENT_TTL = 30 * MINUTE
PURGE_INTERVAL = 10 * MINUTE
PENDING_AUTHORIZATION_TTL = 10 * MINUTE  # ServerPolicy.pending_authorization_ttl


def _app(tmp_path: Path, clock: FixedClock, **env: str) -> Flask:
    settings = load_settings(environment_for(tmp_path, **env), dotenv_path=None)
    container = build_container(settings)
    container.clock.override(providers.Object(clock))
    return create_app(settings, container=container)


def _file_size(database: SqliteDatabase) -> int:
    connection = database.connection()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int(connection.execute("PRAGMA page_count").fetchone()[0] * page_size)


def _count(database: SqliteDatabase, table: str) -> int:
    return int(database.connection().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_700_000_000)


@pytest.fixture
def flood_app(tmp_path: Path, clock: FixedClock) -> Iterator[Flask]:
    app = _app(
        tmp_path,
        clock,
        UNUSED_CLIENT_TTL=str(UNUSED_CLIENT_TTL),
        PURGE_INTERVAL=str(PURGE_INTERVAL),
    )
    yield app
    app.extensions["container"].storage_admin().close()


# -- one connection, refreshed hourly -------------------------------------------------------------


def test_a_grant_refreshed_every_hour_for_thirty_days_keeps_a_constant_size(tmp_path: Path, clock: FixedClock) -> None:
    # A grant lives at most GRANT_MAX_LIFETIME (30 days by default): a day more, to refresh for 30.
    app = _app(tmp_path, clock, GRANT_MAX_LIFETIME=str(31 * 24 * 3600))
    database: SqliteDatabase = app.extensions["container"].storage.database()
    try:
        oauth = OAuthClient(FlaskTransport(app.test_client()))
        assert oauth.register().status == 201
        code, verifier = oauth.login()
        tokens = oauth.exchange(code, verifier).json()
        sizes: list[int] = []
        for hour in range(30 * 24):
            clock.advance(HOUR)
            reply = oauth.refresh(tokens["refresh_token"])
            assert reply.status == 200, reply.text
            tokens = reply.json()
            # The current refresh token and the one it replaced; the access tokens of the last
            # hour or two (expired ones go with the hourly purge).
            assert _count(database, "refresh_tokens") == 2
            assert _count(database, "access_tokens") <= 3
            if hour % 24 == 23:
                sizes.append(_file_size(database))
        assert oauth.introspect(tokens["access_token"])["active"] is True
        # From the second day on, not one page more (rows freed are reused).
        assert max(sizes[1:]) <= sizes[1], sizes
    finally:
        database.close()


# -- a flood at the rate limits' ceiling ----------------------------------------------------------


def _largest_registration() -> dict[str, Any]:
    """A registration body as large as every cap allows: the most and longest redirect URIs that
    fit in the body."""
    body: dict[str, Any] = {"client_name": "x", "token_endpoint_auth_method": "none", "redirect_uris": []}
    base = "https://flood.example/"
    while len(body["redirect_uris"]) < MAX_REDIRECT_URIS:
        room = MAX_REGISTRATION_BYTES - len(json.dumps(body).encode()) - 4
        length = min(MAX_REDIRECT_URI_LENGTH, room)
        if length <= len(base) + 10:
            break
        body["redirect_uris"].append(base + f"{len(body['redirect_uris']):02d}" + "a" * (length - len(base) - 2))
    assert len(json.dumps(body).encode()) <= MAX_REGISTRATION_BYTES
    return body


def _authorize_query(client_id: str, redirect_uri: str, state: str) -> str:
    _, challenge = pkce_pair()
    return "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
        }
    )


def _row_cost(tmp_path: Path, clock: FixedClock, kind: str, count: int = 200) -> float:
    """Bytes one more of the largest row of ``kind`` adds to a database file (rows, indexes,
    page overhead), measured on a fresh file."""
    app = _app(tmp_path / f"cost-{kind}", clock, UNUSED_CLIENT_TTL=str(10 * 365 * 24 * HOUR))
    database: SqliteDatabase = app.extensions["container"].storage.database()
    client = app.test_client()
    try:
        body = _largest_registration()
        registered = client.post("/oauth/register", json=body).get_json()
        before = _file_size(database)
        for _ in range(count):
            if kind == "client":
                assert client.post("/oauth/register", json=body).status_code == 201
            else:
                query = _authorize_query(registered["client_id"], body["redirect_uris"][0], "s" * MAX_STATE_LENGTH)
                assert client.get(query).status_code == 200
        return (_file_size(database) - before) / count
    finally:
        database.close()


@pytest.mark.slow
@pytest.mark.serial
def test_a_flood_at_the_rate_limits_leaves_the_database_within_its_bound(
    tmp_path: Path, clock: FixedClock, flood_app: Flask
) -> None:
    database: SqliteDatabase = flood_app.extensions["container"].storage.database()
    client = flood_app.test_client()
    body = _largest_registration()
    state = "s" * MAX_STATE_LENGTH
    empty = _file_size(database)
    # Past the steady state: the first clients have been deleted for a while.
    simulated = 2 * UNUSED_CLIENT_TTL + PURGE_INTERVAL
    peak_clients = 0
    for minute in range(simulated // MINUTE):
        newest = None
        for _ in range(REGISTRATIONS_PER_MINUTE):
            reply = client.post("/oauth/register", json=body)
            assert reply.status_code == 201, reply.get_data(as_text=True)
            newest = reply.get_json()
        assert newest is not None
        for second in range(AUTHORIZATIONS_PER_MINUTE):
            assert client.get(_authorize_query(newest["client_id"], body["redirect_uris"][0], state)).status_code == 200
            if second % 2:
                clock.advance(2)  # the minute passes as the requests come
        peak_clients = max(peak_clients, _count(database, "clients"))

    size = _file_size(database)
    client_cost = _row_cost(tmp_path, clock, "client")
    pending_cost = _row_cost(tmp_path, clock, "pending")
    bound = (
        empty
        + REGISTRATIONS_PER_MINUTE * (UNUSED_CLIENT_TTL + PURGE_INTERVAL) / MINUTE * client_cost
        + AUTHORIZATIONS_PER_MINUTE * (PENDING_AUTHORIZATION_TTL + PURGE_INTERVAL) / MINUTE * pending_cost
    )
    flooded = REGISTRATIONS_PER_MINUTE * simulated / MINUTE
    print(f"flood: {flooded:.0f} registrations, peak {peak_clients} clients kept; file {size} B, bound {bound:.0f} B")
    assert peak_clients <= REGISTRATIONS_PER_MINUTE * (UNUSED_CLIENT_TTL + PURGE_INTERVAL) / MINUTE
    assert size <= bound, (size, bound)
    # Without the deletions the file would hold every row: the bound is a real limit.
    assert flooded * client_cost > bound
