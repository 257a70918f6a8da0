"""`mcp-oauth-bridge copy-storage`: moving an installation from SQLite to PostgreSQL (and back, or
between two SQLite files) without anyone signing in again (issue 9, part 5)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox
from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import access_token_key
from mcp_oauth_bridge.domain.ports import RECORD_KINDS
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.cli import main as cli_main
from mcp_oauth_bridge.entrypoints.config import load_settings
from tests.contract.samples import h, make_access_token, make_client, make_grant, make_refresh_token
from tests.contract.stores import Stores, postgres_stores, sqlite_stores

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient
from .postgres_server import fresh_database, postgres_server, postgres_url  # noqa: F401  (fixtures)
from .storage_fixtures import database_at_version

HOUR = 3600


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment every command of the installation runs with (the same keys for both
    storages), set for in-process runs of the CLI; the working directory has no .env."""
    values = environment_for(tmp_path / "data", AUTHORIZATION_CODE_TTL="600", STORAGE_CONNECT_TIMEOUT="1")
    for name in ("STORAGE_URL", "STORAGE_POOL_SIZE", "STORAGE_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


def copy_storage(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process; its exit status, standard output and standard error."""
    status = cli_main(["copy-storage", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def printed_counts(output: str) -> dict[str, int]:
    """The number copied of each kind, as the command prints it ("  grants: 3 (...)")."""
    return {kind: int(count) for kind, count in re.findall(r"^  ([a-z_]+): (\d+)", output, re.MULTILINE)}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_storage(env: dict[str, str]) -> Iterator[Any]:
    """Opens SQLite files under the installation's keys; closes them afterwards."""
    opened: list[SqliteDatabase] = []

    def open_(path: Path) -> Stores:
        database = SqliteDatabase(str(path), SecretBox([env["ENCRYPTION_KEYS"]]))
        database.migrate()
        opened.append(database)
        return sqlite_stores(database)

    yield open_
    for database in opened:
        database.close()


@pytest.fixture
def postgres_storage(env: dict[str, str]) -> Iterator[Any]:
    opened: list[PostgresDatabase] = []

    def open_(url: str) -> Stores:
        database = PostgresDatabase(url, SecretBox([env["ENCRYPTION_KEYS"]]))
        database.migrate()
        opened.append(database)
        return postgres_stores(database)

    yield open_
    for database in opened:
        database.close()


def fill_live_and_expired(storage: Stores, now: int) -> None:
    """A client with a live grant: two live access tokens and a refresh token, and one access
    token and one refresh token that expired a minute ago."""
    storage.clients.add(make_client("client-1", issued_at=now))
    storage.grants.add_grant(make_grant("grant-1", created_at=now), None)
    for label, expires_at in (("at-live-1", now + HOUR), ("at-live-2", now + HOUR), ("at-expired", now - 60)):
        storage.access_tokens.add_access_token(make_access_token(h(label), issued_at=now - HOUR, expires_at=expires_at))
    for label, expires_at in (("rt-live", now + HOUR), ("rt-expired", now - 60)):
        storage.refresh_tokens.add_refresh_token(make_refresh_token(h(label), issued_at=now - HOUR, expires_at=expires_at))


def mcp_whoami(client: FlaskClient, token: str) -> Any:
    """tools/call whoami on /mcp with a bearer token; the response."""
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    return client.post("/mcp", data=json.dumps(message), headers=headers)


def close(app: Flask) -> None:
    app.extensions["container"].storage_admin().close()


# -- the check -------------------------------------------------------------------------


def test_a_client_connected_before_the_copy_keeps_working_on_postgresql(
    tmp_path: Path, env: dict[str, str], postgres_url: str  # noqa: F811
) -> None:
    # Connected on the SQLite installation (the embedded default under DATA_DIR).
    old = create_app(load_settings(env, dotenv_path=None))
    oauth = OAuthClient(FlaskTransport(old.test_client()))
    assert oauth.register().status == 201
    code, verifier = oauth.login()
    issued = oauth.exchange(code, verifier).json()
    assert mcp_whoami(old.test_client(), issued["access_token"]).status_code == 200
    container = old.extensions["container"]
    (grant,) = container.grants().list_grants()
    upstream = container.upstream_token_store().get_upstream_tokens(grant.grant_id)
    before = container.storage_admin().counts()
    close(old)

    # The command as an operator runs it, in its own process.
    source = sqlite_url(Path(env["DATA_DIR"]) / "mcp-oauth-bridge.db")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "copy-storage", "--from", source, "--to", postgres_url],
        env={**os.environ, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    counts = printed_counts(done.stdout)
    assert counts == {kind: before[kind] for kind in RECORD_KINDS}
    assert (counts["clients"], counts["grants"], counts["access_tokens"], counts["refresh_tokens"]) == (1, 1, 1, 1)

    # The new installation: the same keys, PostgreSQL.
    new = create_app(load_settings({**env, "STORAGE_URL": postgres_url, "DATA_DIR": str(tmp_path / "new")}, dotenv_path=None))
    try:
        client = new.test_client()
        assert new.extensions["container"].upstream_token_store().get_upstream_tokens(grant.grant_id) == upstream
        called = mcp_whoami(client, issued["access_token"])
        assert called.status_code == 200, called.get_data(as_text=True)
        assert called.get_json()["result"]["structuredContent"]["username"] == "alice"
        assert mcp_whoami(client, "mob_at_" + "x" * 43).status_code == 401

        # The refresh token rotates there, and again; the first one is then a replay, which
        # revokes the grant (so the newest tokens stop working too).
        moved = OAuthClient(FlaskTransport(client), client_id=oauth.client_id, client_secret=oauth.client_secret)
        second = moved.refresh(issued["refresh_token"])
        assert second.status == 200, second.text
        assert mcp_whoami(client, second.json()["access_token"]).status_code == 200
        third = moved.refresh(second.json()["refresh_token"])
        assert third.status == 200, third.text
        replayed = moved.refresh(issued["refresh_token"])
        assert replayed.status == 400 and replayed.json()["error"] == "invalid_grant"
        assert mcp_whoami(client, third.json()["access_token"]).status_code == 401
    finally:
        close(new)


# -- what is copied, and what is printed --------------------------------------------------------


def test_the_copy_prints_its_counts_and_leaves_expired_records_behind(
    tmp_path: Path,
    env: dict[str, str],
    postgres_url: str,  # noqa: F811
    sqlite_storage: Any,
    postgres_storage: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = int(time.time())
    fill_live_and_expired(sqlite_storage(tmp_path / "old.db"), now)

    status, out, err = copy_storage(capsys, "--from", sqlite_url(tmp_path / "old.db"), "--to", postgres_url)

    assert status == 0, err
    assert printed_counts(out) == {
        "clients": 1, "pending_authorizations": 0, "grants": 1, "authorization_codes": 0, "access_tokens": 2, "refresh_tokens": 1,
    }
    assert "applied schema versions 1, 2, 3 to the target" in out
    assert "rate-limit counters, upstream-refresh leases and cached client metadata documents are not copied" in out
    target = postgres_storage(postgres_url)
    assert target.access_tokens.get_access_token(h("at-live-1")) is not None
    assert target.access_tokens.get_access_token(h("at-expired")) is None
    assert target.refresh_tokens.get_refresh_token(h("rt-live")) is not None
    assert target.refresh_tokens.get_refresh_token(h("rt-expired")) is None


def test_a_target_that_holds_records_is_refused_unless_forced(
    tmp_path: Path, env: dict[str, str], sqlite_storage: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    now = int(time.time())
    source = sqlite_storage(tmp_path / "old.db")
    fill_live_and_expired(source, now)
    urls = ("--from", sqlite_url(tmp_path / "old.db"), "--to", sqlite_url(tmp_path / "new.db"))
    assert copy_storage(capsys, *urls)[0] == 0
    # Issued on the old installation after the first copy.
    source.access_tokens.add_access_token(make_access_token(h("at-later"), issued_at=now, expires_at=now + HOUR))

    status, out, err = copy_storage(capsys, *urls)

    assert status == 1
    assert "copy refused: the target already holds 1 clients, 1 grants, 2 access_tokens, 1 refresh_tokens" in err
    assert "pass --force" in err
    target = sqlite_storage(tmp_path / "new.db")
    assert target.access_tokens.get_access_token(h("at-later")) is None

    # --force: what the target has is left as it is (a token revoked there stays revoked), the rest is copied.
    target.access_tokens.revoke_access_token(h("at-live-1"), now)
    status, out, err = copy_storage(capsys, *urls, "--force")

    assert status == 0, err
    assert "  access_tokens: 1 (2 already in the target, left as they were)" in out
    assert "  clients: 0 (1 already in the target, left as they were)" in out
    assert target.access_tokens.get_access_token(h("at-later")) is not None
    revoked = target.access_tokens.get_access_token(h("at-live-1"))
    assert revoked is not None and revoked[0].revoked_at == now


def test_a_target_with_only_rate_limit_counters_counts_as_empty(
    tmp_path: Path, env: dict[str, str], sqlite_storage: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fill_live_and_expired(sqlite_storage(tmp_path / "old.db"), int(time.time()))
    # A server that was started on the new database and hit once, before the copy.
    sqlite_storage(tmp_path / "new.db").rate_limits.increment("register:203.0.113.7", 60, int(time.time()))

    status, out, err = copy_storage(capsys, "--from", sqlite_url(tmp_path / "old.db"), "--to", sqlite_url(tmp_path / "new.db"))

    assert status == 0, err
    assert printed_counts(out)["access_tokens"] == 2


def test_access_tokens_copied_into_sqlite_sit_at_the_key_their_hash_gives(
    tmp_path: Path,
    env: dict[str, str],
    postgres_url: str,  # noqa: F811
    sqlite_storage: Any,
    postgres_storage: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill_live_and_expired(postgres_storage(postgres_url), int(time.time()))

    status, out, err = copy_storage(capsys, "--from", postgres_url, "--to", sqlite_url(tmp_path / "new.db"))

    assert status == 0, err
    assert printed_counts(out)["access_tokens"] == 2
    with sqlite3.connect(tmp_path / "new.db") as connection:
        rows = connection.execute("SELECT token_key, token_hash FROM access_tokens").fetchall()
    assert sorted(rows) == sorted((access_token_key(bytes.fromhex(h(label))), bytes.fromhex(h(label))) for label in ("at-live-1", "at-live-2"))
    target = sqlite_storage(tmp_path / "new.db")
    found = target.access_tokens.get_access_token(h("at-live-2"))
    assert found is not None and found[1].grant_id == "grant-1"


def test_a_hash_postgresql_cannot_hold_is_skipped_and_counted(
    tmp_path: Path,
    env: dict[str, str],
    postgres_url: str,  # noqa: F811
    sqlite_storage: Any,
    postgres_storage: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = int(time.time())
    source = sqlite_storage(tmp_path / "old.db")
    fill_live_and_expired(source, now)
    # SQLite keeps a value that is not a keyed hash as text; PostgreSQL's columns hold 32 bytes.
    source.access_tokens.add_access_token(make_access_token("not-a-keyed-hash", issued_at=now, expires_at=now + HOUR))

    status, out, err = copy_storage(capsys, "--from", sqlite_url(tmp_path / "old.db"), "--to", postgres_url)

    assert status == 0, err
    assert "  access_tokens: 2 (1 skipped: a keyed hash stored as text, which the target cannot hold)" in out
    assert postgres_storage(postgres_url).access_tokens.get_access_token(h("at-live-1")) is not None


def test_a_source_whose_schema_is_behind_is_refused_and_left_as_it_is(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    database_at_version(3, tmp_path / "old.db", [], [])

    status, out, err = copy_storage(capsys, "--from", sqlite_url(tmp_path / "old.db"), "--to", sqlite_url(tmp_path / "new.db"))

    assert status == 1
    assert "copy refused: the source's schema lacks versions 4, 5, 6" in err
    assert "mcp-oauth-bridge migrate" in err
    with sqlite3.connect(tmp_path / "old.db") as connection:
        assert connection.execute("SELECT max(version) FROM schema_migrations").fetchone() == (3,)


# -- URLs and passwords -------------------------------------------------------------------------


def test_passwords_in_the_urls_are_never_printed(
    tmp_path: Path,
    env: dict[str, str],
    postgres_url: str,  # noqa: F811
    sqlite_storage: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = urlsplit(postgres_url).password
    assert password
    fill_live_and_expired(sqlite_storage(tmp_path / "old.db"), int(time.time()))

    status, out, err = copy_storage(capsys, "--from", sqlite_url(tmp_path / "old.db"), "--to", postgres_url)
    assert status == 0, err
    assert password not in out + err
    assert f"to {postgres_url.replace(password, '***')}" in out

    # Nor when the copy fails, e.g. on a wrong password (STORAGE_CONNECT_TIMEOUT=1 here).
    wrong = postgres_url.replace(password, "wrong-" + password[::-1])
    status, out, err = copy_storage(capsys, "--from", wrong, "--to", sqlite_url(tmp_path / "new.db"))
    assert status == 1
    assert "copy failed: PostgreSQL storage failed" in err
    assert password[::-1] not in out + err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--from", "sqlite:///{tmp}/old.db", "--to", "mysql://bridge:s3cret@db/bridge"),
         "--to must be sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname, got 'mysql://bridge:***@db/bridge'"),
        (("--from", "sqlite:///{tmp}/old.db", "--to", "postgresql://bridge:s3cret@db:5432"),
         "--to for PostgreSQL must name the database (…/dbname), got 'postgresql://bridge:***@db:5432'"),
        (("--from", "sqlite:old.db", "--to", "sqlite:///{tmp}/new.db"),
         "--from for SQLite must look like sqlite:///path/to/file.db"),
        (("--from", "sqlite:///{tmp}/missing.db", "--to", "sqlite:///{tmp}/new.db"),
         "--from: there is no SQLite database at {tmp}/missing.db"),
        (("--from", "sqlite:///{tmp}/old.db", "--to", "sqlite:///{tmp}/../{name}/old.db"),
         "--from and --to name the same database"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(
    tmp_path: Path,
    env: dict[str, str],
    sqlite_storage: Any,
    capsys: pytest.CaptureFixture[str],
    arguments: tuple[str, ...],
    message: str,
) -> None:
    sqlite_storage(tmp_path / "old.db")
    values = {"tmp": str(tmp_path), "name": tmp_path.name}

    status, out, err = copy_storage(capsys, *(argument.format(**values) for argument in arguments))

    assert status == 2
    assert message.format(**values) in err
    assert "s3cret" not in out + err
    # Nothing was created for a source that does not exist.
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "new.db").exists()
