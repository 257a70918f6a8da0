"""The storage backends the contract runs against, each on an empty database per test."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase

from .stores import Stores, memory_stores, sqlite_stores


def memory_backend(tmp_path: Path) -> Iterator[Stores]:
    yield memory_stores()


def sqlite_backend(tmp_path: Path) -> Iterator[Stores]:
    database = SqliteDatabase(str(tmp_path / "storage" / "bridge.db"), SecretBox([generate_key()]))
    database.migrate()
    yield sqlite_stores(database)
    database.close()


BACKENDS: dict[str, Callable[[Path], Iterator[Stores]]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield from BACKENDS[request.param](tmp_path)
