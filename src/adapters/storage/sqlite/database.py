"""SQLite connections and transactions: one file, WAL, a lazily opened connection per thread,
``BEGIN IMMEDIATE`` transactions (the UnitOfWork port), and the migration session."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, ParamSpec, TypeVar

from ....domain.ports import StorageError
from .. import migrations
from ..crypto import SecretBox
from .migrations import MIGRATIONS, access_token_key

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 10.0
# Negative means KiB: 8 MiB of page cache per connection (the default is 2 MiB). This is
# private memory of each connection (each thread of each worker), so it stays modest; reads of
# the file itself go through the memory map below.
CACHE_SIZE_KIB = 8192
# Up to this much of the database file is memory-mapped by each connection (PRAGMA mmap_size;
# SQLite caps it at its compile-time SQLITE_MAX_MMAP_SIZE, 0x7fff0000 in the usual builds; the
# part of a larger file past it is read as without a map). Reads then use the file's pages in
# the operating system's page cache in place instead of copying each into the connection's
# page cache with a read() call: with 1,000,000 live access tokens, what a lookup costs more
# than with 1,000 drops from about 22 to about 9 us (bench/bench_lookup.py). It is address
# space, not allocated memory: the mapped pages are the kernel's page cache of the file, shared
# by every thread and worker process that maps it (they show as shared, file-backed memory in
# RSS) and reclaimed under memory pressure like any cached file data; page tables grow with
# the part of the file a connection has touched (about 2 MiB per GiB). Writes still go through
# the WAL. An I/O error on the mapped file would surface as SIGBUS instead of an error code.
MMAP_SIZE_BYTES = 2 * 1024**3
P = ParamSpec("P")
R = TypeVar("R")


def storage_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn sqlite3 failures into the port's StorageError at the adapter boundary."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite storage failed: {exc}") from exc

    return wrapper


# -- connections and transactions ----------------------------------------------------------------


@dataclass
class _ThreadState:
    connection: sqlite3.Connection
    pid: int
    generation: int
    depth: int = 0


class SqliteDatabase:
    """One SQLite file: a lazily opened connection per thread, transactions and migrations."""

    def __init__(self, path: str, box: SecretBox) -> None:
        if path == ":memory:" or path.startswith("file:"):
            # Every thread has its own connection, so an in-memory database would not be shared.
            raise ValueError("SqliteDatabase needs a file path")
        self.path = path
        self.box = box
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        # Connections inherited through fork() are never used nor closed by the child.
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        # Bumped by close(): other threads then reopen instead of using a closed connection.
        self._generation = 0
        self._migrated = False

    # connections

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema migrated) on first use."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is not None and state.generation == self._generation and state.pid == os.getpid():
            return state.connection
        connection = self._thread_connection()
        if not self._migrated:
            self.migrate()
        return connection

    def _thread_connection(self) -> sqlite3.Connection:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is not None and state.generation == self._generation and state.pid == os.getpid():
            return state.connection
        return self._open_for_thread(state).connection

    def _open_for_thread(self, stale: _ThreadState | None) -> _ThreadState:
        pid = os.getpid()
        with self._lock:
            if pid != self._pid:
                # After fork(): the parent's connections belong to the parent.
                self._inherited.extend(conn for _, conn in self._connections)
                self._connections = []
                self._pid = pid
            if stale is not None and stale.pid != pid:
                self._inherited.append(stale.connection)
            self._close_connections_of_finished_threads()
            connection = self._open()
            self._connections.append((weakref.ref(threading.current_thread()), connection))
            state = _ThreadState(connection=connection, pid=pid, generation=self._generation)
        self._local.state = state
        return state

    def _close_connections_of_finished_threads(self) -> None:
        alive = []
        for thread, connection in self._connections:
            owner = thread()
            if owner is None or not owner.is_alive():
                connection.close()
            else:
                alive.append((thread, connection))
        self._connections = alive

    @storage_errors
    def _open(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        created = not os.path.exists(self.path)
        # isolation_level=None: no implicit BEGIN; transactions are explicit (BEGIN IMMEDIATE).
        # check_same_thread=False only so close() can close every thread's connection; each
        # connection is otherwise used by the thread that opened it.
        connection = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            if created:
                # Hashes and ciphertexts only, but still nobody else's business (SQLite gives
                # the -wal and -shm files the same mode).
                os.chmod(self.path, 0o600)
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._enable_wal(connection)
            connection.execute("PRAGMA foreign_keys = ON")
            # Safe with WAL: a power loss may lose the last commits, never corrupt the file.
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
            connection.execute(f"PRAGMA mmap_size = {MMAP_SIZE_BYTES}")
        except BaseException:
            connection.close()
            raise
        return connection

    @staticmethod
    def _enable_wal(connection: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock that the busy handler does not always wait
        # for when several processes open a new file at once: retry for the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            if str(mode).lower() != "wal":
                raise StorageError(f"cannot switch {connection!r} to WAL journal mode (got {mode})")
            return

    def close(self) -> None:
        """Close every connection this process opened; the next use opens new ones."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._generation += 1
            for _, connection in connections:
                connection.close()
        self._local.state = None

    # transactions (the UnitOfWork port: every store of this database uses this thread's connection)

    def atomic(self) -> AbstractContextManager[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception; a nested use joins the open
        transaction (as a savepoint, so a failing inner block undoes only its own writes)."""
        return self._transaction(self.connection())

    @contextmanager
    def _transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        state: _ThreadState = self._local.state
        depth = state.depth
        savepoint = f"nested_{depth}"
        try:
            # IMMEDIATE takes the write lock up front: a read-then-write cannot fail halfway
            # with SQLITE_BUSY, and concurrent writers wait (busy_timeout) instead.
            connection.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {savepoint}")
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite storage failed to begin a transaction: {exc}") from exc
        state.depth = depth + 1
        try:
            yield
        except BaseException as exc:
            state.depth = depth
            self._undo(connection, depth, savepoint)
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"SQLite storage failed: {exc}") from exc
            raise
        state.depth = depth
        try:
            connection.execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
        except sqlite3.Error as exc:
            self._undo(connection, depth, savepoint)
            raise StorageError(f"SQLite storage failed to commit: {exc}") from exc

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction (deferred: it takes no write lock, so writers go on): every query
        inside sees the file as it was at the first one (WAL keeps that snapshot). Nothing is
        written, not even a pending migration."""
        connection = self._thread_connection()
        state: _ThreadState = self._local.state
        if state.depth:
            raise StorageError("SQLite storage: a snapshot cannot be taken inside a transaction")
        try:
            connection.execute("BEGIN DEFERRED")
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite storage failed to begin a transaction: {exc}") from exc
        state.depth = 1
        try:
            yield connection
        finally:
            state.depth = 0
            self._undo(connection, 0, "")

    @staticmethod
    def _undo(connection: sqlite3.Connection, depth: int, savepoint: str) -> None:
        try:
            if depth == 0:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            else:
                connection.execute(f"ROLLBACK TO {savepoint}")
                connection.execute(f"RELEASE {savepoint}")
        except sqlite3.Error:
            # The original error matters more; SQLite may already have rolled back itself.
            pass

    # schema

    def migrate(self) -> list[int]:
        """Apply the migrations this file lacks, in order; return the versions applied now.

        Safe when several processes start at once: BEGIN IMMEDIATE serialises them and each
        reads the applied versions inside its own transaction.
        """
        try:
            applied = migrations.run(MIGRATIONS, self._migration_session)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite migration failed: {exc}") from exc
        self._migrated = True
        return applied

    @contextmanager
    def _migration_session(self) -> Iterator[migrations.MigrationSession]:
        connection = self._thread_connection()
        # Used by migration 3 to place existing access tokens (the same key as new ones get).
        connection.create_function("access_token_key", 1, access_token_key, deterministic=True)
        with self._transaction(connection):
            connection.execute(_CREATE_MIGRATIONS_TABLE)
            yield _SqliteMigrationSession(connection)

    def pending_migrations(self) -> list[int]:
        """The schema versions this file lacks, read without taking the write lock (a worker
        checks this at start-up while another process may hold the lock for a long write)."""
        connection = self._thread_connection()
        try:
            rows = connection.execute("SELECT version FROM schema_migrations").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise StorageError(f"SQLite storage failed: {exc}") from exc
            rows = []
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite storage failed: {exc}") from exc
        return migrations.pending(MIGRATIONS, {row[0] for row in rows})

    def ensure_schema(self, *, busy_wait: float) -> bool:
        """True when the schema is current, migrating it first if needed, waiting at most
        ``busy_wait`` seconds for the write lock; False (logged, never raised) while the file is
        busy or unreadable, so that a server can start and retry instead of failing."""
        try:
            if self.pending_migrations():
                connection = self._thread_connection()
                connection.execute(f"PRAGMA busy_timeout = {int(busy_wait * 1000)}")
                try:
                    self.migrate()
                finally:
                    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._migrated = True
            return True
        except (StorageError, sqlite3.Error) as exc:
            log.warning("the database schema is not ready yet (retrying): %s", exc)
            return False

    @storage_errors
    def applied_migrations(self) -> list[int]:
        """The schema versions recorded in this file, oldest first."""
        rows = self.connection().execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [row[0] for row in rows]


_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
)


class _SqliteMigrationSession:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def applied_versions(self) -> set[int]:
        return {row[0] for row in self._connection.execute("SELECT version FROM schema_migrations")}

    def apply(self, migration: migrations.Migration) -> None:
        # One statement at a time: executescript() would commit the open transaction.
        for statement in migration.statements:
            self._connection.execute(statement)
        self._connection.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (migration.version, int(time.time()))
        )
