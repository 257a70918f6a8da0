"""The storage backends the contract runs against (the in-memory fakes, SQLite, and PostgreSQL on
a throwaway server the tests start), each on an empty database per test."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase

from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase
from tests.integration.postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures)

from .stores import Stores, memory_stores, postgres_stores, sqlite_stores


def memory_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield memory_stores()


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    database = SqliteDatabase(str(tmp_path / "storage" / "bridge.db"), SecretBox([generate_key()]))
    database.migrate()
    yield sqlite_stores(database)
    database.close()


def postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    # Only tests on this backend start the throwaway server (tests/integration/postgres_server.py).
    database = PostgresDatabase(request.getfixturevalue("postgres_url"), SecretBox([generate_key()]))
    database.migrate()
    yield postgres_stores(database)
    database.close()


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[Stores]]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "postgresql": postgres_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield from BACKENDS[request.param](request, tmp_path)
