"""Storage fixtures: a SQLite file in tmp_path under a fresh Fernet key (import them explicitly)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS
from mcp_oauth_bridge.domain.model import Grant

NOW = 1_700_000_000


@pytest.fixture
def sqlite_key() -> str:
    return generate_key()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "storage" / "bridge.db"


@pytest.fixture
def sqlite_database(sqlite_path: Path, sqlite_key: str) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(str(sqlite_path), SecretBox([sqlite_key]))
    database.migrate()
    yield database
    database.close()


def database_at_version(
    version: int,
    path: Path,
    grants: list[Grant],
    tokens: list[tuple[Any, ...]],
    refresh_tokens: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
) -> None:
    """A file as the adapter left it at schema ``version`` (2 or 3), holding ``grants`` (of
    client-1) and access- and refresh-token rows in that version's layout."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        # As the adapter leaves every file it opens.
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("BEGIN")
        connection.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        for applied, statements in MIGRATIONS:
            if applied > version:
                break
            connection.create_function("access_token_key", 1, lambda key: None)
            for statement in statements:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (applied, NOW))
        connection.execute(
            "INSERT INTO clients (client_id, secret_hash, metadata, kind, issued_at) "
            "VALUES ('client-1', NULL, '{}', 'registered', ?)",
            (NOW,),
        )
        for grant in grants:
            connection.execute(
                "INSERT INTO grants (grant_id, client_id, subject, claims, scopes, resource, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.grant_id,
                    grant.client_id,
                    grant.subject,
                    json.dumps(dict(grant.claims)),
                    " ".join(grant.scopes),
                    grant.resource,
                    grant.created_at,
                    grant.revoked_at,
                ),
            )
        connection.executemany(
            "INSERT INTO access_tokens "
            "(token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, revoked_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tokens,
        )
        connection.executemany(
            "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, "
            "rotated_at, successor_hash, replayed_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            refresh_tokens,
        )
        connection.execute("COMMIT")
    finally:
        connection.close()
