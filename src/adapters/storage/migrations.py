"""Schema migrations: versioned, numbered steps per backend, applied by one runner.

Each backend lists its steps (``Migration``) and opens a ``MigrationSession``: one transaction
that holds the backend's exclusive migration lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
advisory lock), so that instances starting at once against the same database never race. The
runner reads the versions applied inside that session and applies the missing ones in order.

A released step is never edited; a change is a new step. A step keeps the previous release's
code working for one version (a rolling deploy runs old and new instances on one database for a
while): it adds tables, columns with defaults and indexes, and drops only what the previous
release no longer reads.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, NamedTuple, Protocol, Sequence


class Migration(NamedTuple):
    version: int
    # Single statements, run in order inside the session's transaction.
    statements: tuple[str, ...]


class MigrationSession(Protocol):
    def applied_versions(self) -> set[int]:
        """The versions recorded in the database (creating the record table if needed)."""
        ...

    def apply(self, migration: Migration) -> None:
        """Run the step's statements and record its version."""
        ...


def check_steps(migrations: Sequence[Migration]) -> Sequence[Migration]:
    """The steps, checked to be numbered 1, 2, 3 … without gaps (a programming error otherwise)."""
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {versions}")
    return migrations


def pending(migrations: Sequence[Migration], applied: set[int]) -> list[int]:
    """The versions not applied yet, in order."""
    return [migration.version for migration in migrations if migration.version not in applied]


def run(migrations: Sequence[Migration], session: Callable[[], AbstractContextManager[MigrationSession]]) -> list[int]:
    """Apply the missing steps inside one locked session; return the versions applied now."""
    applied_now: list[int] = []
    with session() as locked:
        done = locked.applied_versions()
        for migration in migrations:
            if migration.version not in done:
                locked.apply(migration)
                applied_now.append(migration.version)
    return applied_now
