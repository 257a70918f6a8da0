"""The client ID metadata document cache and the RFC 7592 registration token hash on the SQL
backends beyond their contract (tests/contract): the migrations that add them (SQLite 6,
PostgreSQL 2) upgrade a database that already holds clients, the cache has no foreign key to
the clients, and a corrupt cached document is a StorageError that does not echo it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from mcp_oauth_bridge.adapters.storage import records
from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase, PostgresMetadataDocumentStore
from mcp_oauth_bridge.adapters.storage.postgres.migrations import MIGRATIONS as POSTGRES_MIGRATIONS
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase, SqliteMetadataDocumentStore
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS as SQLITE_MIGRATIONS, access_token_key
from mcp_oauth_bridge.domain.ports import MetadataDocumentStore, StorageError
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.storage import build_storage
from tests.contract.samples import CIMD_URL, NOW, make_client, make_document
from tests.contract.stores import Stores, postgres_stores, sqlite_stores

from .conftest import environment_for
from .postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures)

# A client as the release before stored it: its six columns, no registration_token_hash.
OLD_CLIENT = make_client("client-1", last_used_at=NOW + 5)
_OLD_CLIENT_INSERT = (
    "INSERT INTO clients (client_id, secret_hash, metadata, kind, issued_at, last_used_at) VALUES ({})"
)
_OLD_CLIENT_ROW = records.client_row(OLD_CLIENT)[:6]


# -- upgrades -----------------------------------------------------------------------------------


def _sqlite_at_version_5(path: Path) -> None:
    """A file as the release before left it: migrations 1 to 5 and a client."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.create_function("access_token_key", 1, access_token_key)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN")
        connection.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        for migration in SQLITE_MIGRATIONS[:5]:
            for statement in migration.statements:
                connection.execute(statement)
            connection.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (migration.version, NOW))
        connection.execute(_OLD_CLIENT_INSERT.format(", ".join("?" * 6)), _OLD_CLIENT_ROW)
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_sqlite_migration_6_upgrades_a_database_with_clients(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    _sqlite_at_version_5(path)

    database = SqliteDatabase(str(path), SecretBox([generate_key()]))
    try:
        assert database.migrate() == [6, 7]  # 7: clients.disabled_at
        assert database.applied_migrations() == [migration.version for migration in SQLITE_MIGRATIONS]
        stores = sqlite_stores(database)
        _assert_upgraded(stores)
        connection = database.connection()
        # Apart from the clients: no foreign key, so no cascade either way.
        assert connection.execute("PRAGMA foreign_key_list(client_metadata_documents)").fetchall() == []
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(client_metadata_documents)")}
        assert "client_metadata_documents_stale_until" in indexes
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        database.close()


def _postgres_at_version_1(url: str) -> None:
    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        for statement in POSTGRES_MIGRATIONS[0].statements:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (1, %s)", (int(time.time()),))
        connection.execute(_OLD_CLIENT_INSERT.format(", ".join(["%s"] * 6)), _OLD_CLIENT_ROW)


def test_postgresql_migration_2_upgrades_a_database_with_clients(postgres_url: str) -> None:  # noqa: F811
    _postgres_at_version_1(postgres_url)

    database = PostgresDatabase(postgres_url, SecretBox([generate_key()]))
    try:
        assert database.pending_migrations() == [2, 3]
        assert database.migrate() == [2, 3]  # 3: clients.disabled_at
        assert database.applied_migrations() == [migration.version for migration in POSTGRES_MIGRATIONS]
        _assert_upgraded(postgres_stores(database))
        foreign_keys = database.fetchall(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'client_metadata_documents'::regclass AND contype = 'f'"
        )
        assert foreign_keys == []
        indexes = {row[0] for row in database.fetchall(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'client_metadata_documents'"
        )}
        assert "client_metadata_documents_stale_until" in indexes
    finally:
        database.close()


def _assert_upgraded(stores: Stores) -> None:
    """The client stored before reads back as it was, with no registration token hash; it takes
    one, and documents can be cached."""
    assert stores.clients.get("client-1") == OLD_CLIENT
    assert OLD_CLIENT.registration_token_hash is None
    with_token = make_client("client-1", last_used_at=NOW + 5, registration_token_hash="a" * 64)
    stores.clients.add(with_token)
    assert stores.clients.get("client-1") == with_token
    stores.documents.put_document(make_document())
    assert stores.documents.get_document(CIMD_URL) == make_document()


# -- corrupt cached documents -------------------------------------------------------------------

SECRET_LOOKING = "do-not-echo-this-value"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stores, str]]:
    """A backend's stores and the placeholder of its SQL dialect."""
    box = SecretBox([generate_key()])
    if request.param == "sqlite":
        sqlite = SqliteDatabase(str(tmp_path / "bridge.db"), box)
        sqlite.migrate()
        yield sqlite_stores(sqlite), "?"
        sqlite.close()
        return
    postgres = PostgresDatabase(request.getfixturevalue("postgres_url"), box)
    postgres.migrate()
    yield postgres_stores(postgres), "%s"
    postgres.close()


def _write_raw(stores: Stores, placeholder: str, document_text: str) -> None:
    sql = (
        "INSERT INTO client_metadata_documents (client_id, document, fetched_at, fresh_until, stale_until) "
        f"VALUES ({', '.join([placeholder] * 5)})"
    )
    parameters = (CIMD_URL, document_text, NOW, NOW + 60, NOW + 120)
    database = stores.unit_of_work
    if isinstance(database, SqliteDatabase):
        database.connection().execute(sql, parameters)
    else:
        assert isinstance(database, PostgresDatabase)
        database.execute(sql, parameters)


@pytest.mark.parametrize(
    "stored", ['{"client_id": "' + SECRET_LOOKING, '["' + SECRET_LOOKING + '"]'], ids=["not JSON", "not an object"]
)
def test_a_corrupt_cached_document_is_a_storage_error_that_does_not_echo_it(
    backend: tuple[Stores, str], stored: str
) -> None:
    stores, placeholder = backend
    _write_raw(stores, placeholder, stored)

    with pytest.raises(StorageError) as raised:
        stores.documents.get_document(CIMD_URL)

    assert SECRET_LOOKING not in str(raised.value)
    # Replacing it heals the cache.
    stores.documents.put_document(make_document())
    assert stores.documents.get_document(CIMD_URL) == make_document()


# -- composition --------------------------------------------------------------------------------


def test_each_storage_backend_provides_the_document_cache_on_its_database(
    tmp_path: Path, postgres_url: str  # noqa: F811
) -> None:
    for url, store_type in (
        (postgres_url, PostgresMetadataDocumentStore),
        (f"sqlite:///{tmp_path / 'bridge.db'}", SqliteMetadataDocumentStore),
    ):
        storage = build_storage(load_settings(environment_for(tmp_path, STORAGE_URL=url), dotenv_path=None))
        documents = storage.metadata_documents()
        assert isinstance(documents, store_type) and isinstance(documents, MetadataDocumentStore)
        assert storage.admin().ensure_schema(busy_wait=5) is True
        documents.put_document(make_document())
        # The same database as the other stores: purge (the admin's) sees the document.
        assert storage.admin().purge_expired(make_document().stale_until) == 1
        assert documents.get_document(CIMD_URL) is None
        storage.admin().close()
