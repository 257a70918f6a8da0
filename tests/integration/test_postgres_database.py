"""The PostgreSQL adapter's connections beyond the storage contract: a pool per process (never
one inherited across fork), the statement timeout, errors that carry no stored values, and the
backend chosen by STORAGE_URL's scheme."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.postgres import PostgresAccessTokenStore, PostgresDatabase
from mcp_oauth_bridge.adapters.storage.postgres.database import Reachability
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteAccessTokenStore
from mcp_oauth_bridge.domain.ports import StorageError
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import build_container
from tests.contract.samples import h, make_access_token, make_client, make_grant
from tests.contract.stores import postgres_stores

from .conftest import environment_for
from .postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures)

FORK = multiprocessing.get_context("fork")
_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"


@pytest.fixture
def database(postgres_url: str) -> Iterator[PostgresDatabase]:  # noqa: F811
    database = PostgresDatabase(postgres_url, SecretBox([generate_key()]), statement_timeout=1)
    database.migrate()
    yield database
    database.close()


def _backend_pid(database: PostgresDatabase) -> int:
    row = database.fetchone("SELECT pg_backend_pid()")
    assert row is not None
    return int(row[0])


def _child(database: PostgresDatabase, results: Any) -> None:
    try:
        results.put(("pid", _backend_pid(database)))
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on it
        results.put(("error", repr(exc)))


def test_a_forked_process_opens_its_own_pool_and_leaves_the_parents_alone(database: PostgresDatabase) -> None:
    parent_backend = _backend_pid(database)
    # Every connection the parent's pool holds (this test's only ones to this database).
    parent_backends = {row[0] for row in database.fetchall(_BACKENDS)}
    assert parent_backend in parent_backends
    results = FORK.Queue()
    child = FORK.Process(target=_child, args=(database, results))
    child.start()
    kind, child_backend = results.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert kind == "pid"
    # The child talked to the server over a connection of its own ...
    assert child_backend not in parent_backends
    # ... and the parent's connection survived the child's exit (closing an inherited one would
    # have sent Terminate on the parent's socket and ended its backend).
    assert parent_backends <= {row[0] for row in database.fetchall(_BACKENDS)}


def test_a_statement_past_the_timeout_is_cancelled(database: PostgresDatabase) -> None:
    with pytest.raises(StorageError, match="57014"):  # query_canceled
        database.fetchone("SELECT pg_sleep(3)")
    # The connection is usable afterwards.
    assert database.fetchone("SELECT 1") == (1,)


def test_errors_name_the_failure_but_never_a_stored_value(database: PostgresDatabase) -> None:
    stores = postgres_stores(database)
    stores.clients.add(make_client())
    stores.grants.add_grant(make_grant(), None)
    token = make_access_token(h("at-duplicate"))
    stores.access_tokens.add_access_token(token)
    with pytest.raises(StorageError) as failed:
        stores.access_tokens.add_access_token(token)
    message = str(failed.value)
    assert "23505" in message  # unique_violation
    # libpq's DETAIL line would echo the key: "Key (token_hash)=(\\x…) already exists".
    assert h("at-duplicate")[:16] not in message and "Key (" not in message


def test_a_transaction_cut_short_leaves_nothing_behind(database: PostgresDatabase) -> None:
    stores = postgres_stores(database)
    stores.clients.add(make_client())
    with pytest.raises(StorageError):
        with database.atomic():
            stores.grants.add_grant(make_grant(), None)
            # The server ends the connection in the middle of the transaction.
            with psycopg.connect(database.url, autocommit=True) as admin:
                backend = database.fetchone("SELECT pg_backend_pid()")
                assert backend is not None
                admin.execute("SELECT pg_terminate_backend(%s)", (backend[0],))
            stores.access_tokens.add_access_token(make_access_token())
    assert stores.grants.get_grant("grant-1") is None
    assert stores.clients.get("client-1") is not None


def test_the_storage_url_scheme_chooses_the_backend(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    for url, store_type in (
        (postgres_url, PostgresAccessTokenStore),
        (postgres_url.replace("postgresql://", "postgres://", 1), PostgresAccessTokenStore),
        (f"sqlite:///{tmp_path / 'bridge.db'}", SqliteAccessTokenStore),
    ):
        container = build_container(load_settings(environment_for(tmp_path, STORAGE_URL=url), dotenv_path=None))
        assert isinstance(container.access_tokens(), store_type)
        assert container.storage_admin().ensure_schema(busy_wait=5) is True
        container.storage_admin().close()
    assert os.path.exists(tmp_path / "bridge.db")


def test_a_vain_wait_for_the_pool_restarts_the_fail_fast_window() -> None:
    now = [0.0]
    reachability = Reachability(window=1.0, monotonic=lambda: now[0])
    reachability.failed(psycopg.OperationalError("connection failed: refused"))
    with pytest.raises(StorageError, match="the database is unreachable"):
        reachability.check()
    # A wait for the pool as long as the window: without a restart the next call would wait again.
    now[0] = 1.5
    reachability.check()
    reachability.waited_in_vain()
    now[0] = 2.0
    with pytest.raises(StorageError, match="the database is unreachable"):
        reachability.check()
    # Once a connection succeeds, a vain wait (an exhausted pool) opens no window.
    reachability.connected()
    reachability.waited_in_vain()
    reachability.check()
