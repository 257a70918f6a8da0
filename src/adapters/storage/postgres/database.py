"""PostgreSQL connections and transactions: psycopg 3 with one psycopg_pool per process, opened
on first use (after gunicorn forks, never inherited), READ COMMITTED transactions (the
UnitOfWork port), and the migration session under an advisory lock.

While the database is down, calls fail fast: after a failed attempt to connect, every call
for the next ``UNREACHABLE_SECONDS`` raises StorageError at once (naming the failure) instead
of each waiting ``connect_timeout`` for the pool, and the pool retries on demand rather than
after a growing back-off, so that it serves again as soon as the database is back.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Concatenate, Iterator, ParamSpec, Self, Sequence, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from ....domain.ports import StorageError
from .. import migrations
from ..crypto import SecretBox
from .migrations import MIGRATIONS

log = logging.getLogger(__name__)

# pg_advisory_xact_lock's key for migrations (any constant shared by every instance: "mcpoauth").
MIGRATION_LOCK_KEY = 0x6D63706F61757468
# How often ensure_schema tries the migration lock while another instance holds it.
LOCK_POLL_SECONDS = 0.05
# After a failed attempt to connect, calls fail at once for this long (the database is known to
# be unreachable); the first call after it waits for the pool again, which tries to connect.
UNREACHABLE_SECONDS = 1.0
# How long the pool keeps retrying a failed connection in the background (at 1 s, then 2 s …
# intervals) before giving up until a call asks for a connection again. psycopg_pool's default,
# 300 s, lets the intervals grow to minutes, so that a pool could sit idle for a minute after
# the database came back while every request got a 503; with this, a call that needs a
# connection makes the pool try at once.
RECONNECT_SECONDS = 2.0

P = ParamSpec("P")
R = TypeVar("R")
Params = Sequence[Any] | dict[str, Any]


def describe(exc: psycopg.Error) -> str:
    """What went wrong, without the values of the statement: libpq's full message may carry a
    DETAIL line echoing a row (``Key (token_hash)=(...) already exists``), so only the SQLSTATE
    and the primary message are kept; a connection failure (no SQLSTATE) names host and port,
    never the password."""
    name = type(exc).__name__
    if exc.sqlstate:
        return f"{name} ({exc.sqlstate}): {exc.diag.message_primary or 'no message'}"
    lines = str(exc).strip().splitlines()
    return f"{name}: {lines[0]}" if lines else name


def storage_errors(
    method: Callable[Concatenate[PostgresDatabase, P], R],
) -> Callable[Concatenate[PostgresDatabase, P], R]:
    """Turn psycopg failures (the pool's timeouts included) into the port's StorageError."""

    @functools.wraps(method)
    def wrapper(database: PostgresDatabase, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(database, *args, **kwargs)
        except psycopg.Error as exc:
            raise database.storage_error(exc) from exc

    return wrapper


class Reachability:
    """What the pool's last attempt to connect found: after a failure, and until an attempt
    succeeds, the database is unreachable; for ``window`` seconds after each failure, ``check``
    fails at once. A pool whose connections are merely all in use records nothing here."""

    def __init__(self, window: float = UNREACHABLE_SECONDS, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._until = 0.0

    def connected(self) -> None:
        with self._lock:
            self._failure = None

    def failed(self, exc: psycopg.Error) -> None:
        with self._lock:
            self._failure = describe(exc)
            self._until = self._monotonic() + self._window

    def waited_in_vain(self) -> None:
        """A wait for a pooled connection ended without one while the last attempt to connect had
        failed: the database is still unreachable as of now, so the window restarts now (a wait
        as long as the window would otherwise leave the next call to wait all over again)."""
        with self._lock:
            if self._failure is not None:
                self._until = self._monotonic() + self._window

    def failure(self) -> str | None:
        """Why the last attempt to connect failed, unless one succeeded since."""
        return self._failure

    def check(self) -> None:
        """StorageError at once if an attempt to connect failed less than ``window`` seconds ago."""
        with self._lock:
            failure, until = self._failure, self._until
        if failure is not None and self._monotonic() < until:
            raise StorageError(f"PostgreSQL storage failed: the database is unreachable ({failure})")


def observed_connections(reachability: Reachability) -> type[psycopg.Connection[TupleRow]]:
    """A connection class for the pool that reports each attempt to connect to ``reachability``
    (the pool itself only logs its failures)."""

    class ObservedConnection(psycopg.Connection[TupleRow]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                connection = super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                reachability.failed(exc)
                raise
            reachability.connected()
            return connection

    return ObservedConnection


class PostgresDatabase:
    """One PostgreSQL database: a connection pool per process and this thread's transaction."""

    def __init__(
        self,
        url: str,
        box: SecretBox,
        *,
        pool_size: int = 10,
        statement_timeout: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        self.url = url
        self.box = box
        self.pool_size = pool_size
        self.statement_timeout = statement_timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[TupleRow]] | None = None
        self._pool_pid = 0
        # This process's pool's view of the database (a new one with each pool).
        self._reachability = Reachability()
        # Pools inherited through fork(): never used, and never closed by the child (closing a
        # connection sends Terminate on the socket the parent still uses).
        self._inherited: list[ConnectionPool] = []
        # The connection of the transaction this thread has open, if any.
        self._local = threading.local()

    # connections

    def pool(self) -> ConnectionPool[psycopg.Connection[TupleRow]]:
        pool = self._pool
        if pool is not None and self._pool_pid == os.getpid():
            return pool
        with self._lock:
            if self._pool is not None and self._pool_pid != os.getpid():
                self._inherited.append(self._pool)
                self._pool = None
            if self._pool is None:
                self._reachability = Reachability()
                self._pool = ConnectionPool(
                    self.url,
                    connection_class=observed_connections(self._reachability),
                    min_size=1,
                    max_size=self.pool_size,
                    # autocommit: a lone statement is its own transaction (no BEGIN/COMMIT round
                    # trips); atomic() opens explicit ones.
                    kwargs={"autocommit": True, "connect_timeout": self.connect_timeout},
                    configure=self._configure,
                    # A connection the server dropped (restart, failover) is replaced before use
                    # instead of failing a request.
                    check=ConnectionPool.check_connection,
                    # How long a request waits for a connection (pool exhausted or database down).
                    timeout=self.connect_timeout,
                    reconnect_timeout=RECONNECT_SECONDS,
                    name="mcp-oauth-bridge",
                    open=True,
                )
                self._pool_pid = os.getpid()
            return self._pool

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        # A statement that runs longer is cancelled (the request then gets a 503), so that a
        # stuck query never holds a worker thread and its locks indefinitely.
        milliseconds = str(int(self.statement_timeout * 1000))
        connection.execute("SELECT set_config('statement_timeout', %s, false)", (milliseconds,))

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """This thread's transaction's connection, or one from the pool for a lone statement."""
        current: psycopg.Connection[Any] | None = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        with self._pooled() as connection:
            yield connection

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection from the pool, or StorageError at once while the database is known to be
        unreachable."""
        pool = self.pool()
        self._reachability.check()
        try:
            with pool.connection() as connection:
                yield connection
        except PoolTimeout:
            # Raised only while acquiring: the block's own statements never wait for the pool.
            self._reachability.waited_in_vain()
            raise

    def storage_error(self, exc: psycopg.Error) -> StorageError:
        """The port's error for a psycopg failure; a pool timeout says why no connection came."""
        message = f"PostgreSQL storage failed: {describe(exc)}"
        if isinstance(exc, PoolTimeout):
            failure = self._reachability.failure()
            stats = self._pool.get_stats() if self._pool is not None else {}
            if failure is not None:
                message += f" (the database is unreachable: {failure})"
            elif stats.get("pool_size", 0) >= self.pool_size and not stats.get("pool_available", 0):
                message += f" (the pool is exhausted: {self.pool_size} of {self.pool_size} connections in use)"
        return StorageError(message)

    def in_transaction(self) -> bool:
        """Whether this thread is inside ``atomic()`` (a lone statement's locks end with it)."""
        return getattr(self._local, "connection", None) is not None

    @storage_errors
    def fetchone(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        with self.connection() as connection:
            row: tuple[Any, ...] | None = connection.execute(sql, params).fetchone()
            return row

    @storage_errors
    def fetchall(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self.connection() as connection:
            return connection.execute(sql, params).fetchall()

    @storage_errors
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return how many rows it changed."""
        with self.connection() as connection:
            return connection.execute(sql, params).rowcount

    def close(self) -> None:
        """Close this process's pool; the next use opens a new one."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    # transactions

    def atomic(self) -> AbstractContextManager[None]:
        """BEGIN ... COMMIT (READ COMMITTED) on one pooled connection, or ROLLBACK on an exception;
        a nested use joins the open transaction as a savepoint, so a failing inner block undoes
        only its own writes. Races are decided by conditional statements and row locks."""
        return self._atomic()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        current: psycopg.Connection[Any] | None = getattr(self._local, "connection", None)
        try:
            if current is not None:
                with current.transaction():
                    yield
                return
            with self._pooled() as connection:
                self._local.connection = connection
                try:
                    with connection.transaction():
                        yield
                finally:
                    self._local.connection = None
        except psycopg.Error as exc:
            raise self.storage_error(exc) from exc

    @contextmanager
    def snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only REPEATABLE READ transaction on a pooled connection: every query inside
        sees the database as it was at the first one, however long the block takes. psycopg
        errors inside are the caller's to translate."""
        with self._pooled() as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield connection

    # schema

    @storage_errors
    def migrate(self, *, wait: float | None = None) -> list[int]:
        """Apply the migrations the database lacks, in order, under an advisory lock held for
        the transaction, so that instances starting at once never race: the second waits, then
        finds nothing to do. With ``wait``, give up (StorageError) after that many seconds."""
        return migrations.run(MIGRATIONS, lambda: self._migration_session(wait))

    @contextmanager
    def _migration_session(self, wait: float | None) -> Iterator[migrations.MigrationSession]:
        with self._pooled() as connection, connection.transaction():
            self._lock_migrations(connection, wait)
            connection.execute(_CREATE_MIGRATIONS_TABLE)
            yield _PostgresMigrationSession(connection)

    @staticmethod
    def _lock_migrations(connection: psycopg.Connection[Any], wait: float | None) -> None:
        if wait is None:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            return
        deadline = time.monotonic() + wait
        while True:
            row = connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() >= deadline:
                raise StorageError("another instance is migrating the PostgreSQL schema")
            time.sleep(LOCK_POLL_SECONDS)

    @storage_errors
    def applied_migrations(self) -> list[int]:
        """The schema versions recorded in the database, oldest first (none before the first)."""
        exists = self.fetchone("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if exists is None or not exists[0]:
            return []
        return [row[0] for row in self.fetchall("SELECT version FROM schema_migrations ORDER BY version")]

    def pending_migrations(self) -> list[int]:
        """The schema versions the database lacks (read without the migration lock)."""
        return migrations.pending(MIGRATIONS, set(self.applied_migrations()))

    def ensure_schema(self, *, busy_wait: float) -> bool:
        """True when the schema is current, migrating it first if needed; False (logged, never
        raised) while the database is unreachable or another instance holds the migration lock
        longer than ``busy_wait`` seconds, so that a server starts, answers 503 and retries."""
        try:
            if self.pending_migrations():
                self.migrate(wait=busy_wait)
            return True
        except StorageError as exc:
            log.warning("the database schema is not ready yet (retrying): %s", exc)
            return False


_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
)


class _PostgresMigrationSession:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def applied_versions(self) -> set[int]:
        return {row[0] for row in self._connection.execute("SELECT version FROM schema_migrations").fetchall()}

    def apply(self, migration: migrations.Migration) -> None:
        for statement in migration.statements:
            self._connection.execute(statement)
        self._connection.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)", (migration.version, int(time.time()))
        )
