"""Storage fixtures: a SQLite file in tmp_path under a fresh Fernet key (import them explicitly)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase


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
