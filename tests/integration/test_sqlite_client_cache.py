"""SqliteClientRepository keeps decoded clients by their stored row: a change or a deletion made
through another connection (another worker) is seen at the next get()."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcp_oauth_bridge.adapters.storage import records
from mcp_oauth_bridge.adapters.storage.crypto import SecretBox
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteClientRepository, SqliteDatabase

from tests.contract.samples import make_client
from .storage_fixtures import sqlite_database, sqlite_key, sqlite_path  # noqa: F401  (fixtures)


@pytest.fixture
def other_worker(sqlite_database: SqliteDatabase, sqlite_key: str) -> SqliteClientRepository:  # noqa: F811
    """A second database object on the same file: as another gunicorn worker sees it."""
    other = SqliteDatabase(sqlite_database.path, SecretBox([sqlite_key]))
    return SqliteClientRepository(other)


def test_an_unchanged_client_is_decoded_once(sqlite_database: SqliteDatabase) -> None:  # noqa: F811
    repo = SqliteClientRepository(sqlite_database)
    repo.add(make_client())
    first = repo.get("client-1")
    assert first == make_client()
    assert repo.get("client-1") is first


def test_a_client_changed_elsewhere_is_seen_at_once(sqlite_database: SqliteDatabase, other_worker: SqliteClientRepository) -> None:  # noqa: F811
    repo = SqliteClientRepository(sqlite_database)
    repo.add(make_client())
    assert repo.get("client-1") == make_client()
    rotated = make_client(secret_hash="d" * 64, redirect_uris=("https://app.example/new",))
    other_worker.add(rotated)
    assert repo.get("client-1") == rotated
    other_worker.touch("client-1", 1234)
    assert repo.get("client-1") == replace(rotated, last_used_at=1234)


def test_a_client_deleted_elsewhere_is_gone_at_once(sqlite_database: SqliteDatabase, other_worker: SqliteClientRepository) -> None:  # noqa: F811
    repo = SqliteClientRepository(sqlite_database)
    repo.add(make_client())
    assert repo.get("client-1") is not None
    assert other_worker.delete("client-1")
    assert repo.get("client-1") is None


def test_decoded_clients_are_bounded_and_read_only(sqlite_database: SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(records, "DECODED_CLIENTS", 3)
    repo = SqliteClientRepository(sqlite_database)
    for n in range(10):
        repo.add(make_client(f"client-{n}"))
        assert repo.get(f"client-{n}") == make_client(f"client-{n}")
        assert len(repo._decoded) <= 3
    client = repo.get("client-9")
    assert client is not None
    with pytest.raises(TypeError):
        client.extra_metadata["logo_uri"] = "https://evil.example/logo.png"  # type: ignore[index]
    assert repo.get("client-9") == make_client("client-9")
