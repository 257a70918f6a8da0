"""SQLite storage (one file, WAL, BEGIN IMMEDIATE) behind the ClientRepository, AuthorizationStore
and GrantStore ports."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, ParamSpec, TypeVar

from ...domain.model import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    Client,
    Grant,
    PendingAuthorization,
    RefreshToken,
    UpstreamTokens,
    UpstreamTransaction,
)
from ...domain.ports import StorageError
from .crypto import SecretBox

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
# Revoked grants stay a day so a late replay still meets "revoked", not "unknown".
REVOKED_GRANT_RETENTION = 24 * 3600
# A grant with no code or token left is kept this long (default: ServerPolicy.refresh_token_ttl).
DEFAULT_GRANT_RETENTION = 30 * 24 * 3600

# -- schema -------------------------------------------------------------------------------------

# Append-only: a released migration is never edited, a change is a new numbered entry.
# Each entry is a list of single statements (executescript() would commit the open transaction).
#
# Layout for the hot path (an access token joined to its grant on every request): the keyed
# hashes of tokens, codes and upstream states are 32-byte BLOBs (``_hash_key``), not 64 hex
# characters; grants and the token tables are WITHOUT ROWID, one B-tree each keyed by its id or
# hash (no primary-key index to walk before the row); and the encrypted upstream tokens (about
# 1.4 KB a grant) live in grant_upstream_tokens, read only when a tool needs them, so that the
# grant rows every lookup reads stay small. Access tokens have since moved to one probe per
# lookup (migration 3).
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE clients (
                client_id TEXT PRIMARY KEY,
                secret_hash TEXT,
                metadata TEXT NOT NULL,
                kind TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                last_used_at INTEGER
            )""",
            """CREATE TABLE pending_authorizations (
                pending_id TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                redirect_uri TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                code_challenge_method TEXT NOT NULL,
                state TEXT,
                csrf_token_hash TEXT NOT NULL,
                browser_binding_hash TEXT NOT NULL,
                upstream_state_hash BLOB UNIQUE,
                upstream_code_verifier_enc TEXT,
                upstream_nonce_enc TEXT,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                consumed_at INTEGER
            )""",
            "CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at)",
            "CREATE INDEX pending_authorizations_client_id ON pending_authorizations (client_id)",
            """CREATE TABLE grants (
                grant_id TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                subject TEXT NOT NULL,
                claims TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX grants_client_id ON grants (client_id)",
            "CREATE INDEX grants_created_at ON grants (created_at)",
            "CREATE INDEX grants_revoked_at ON grants (revoked_at) WHERE revoked_at IS NOT NULL",
            """CREATE TABLE grant_upstream_tokens (
                grant_id TEXT PRIMARY KEY REFERENCES grants (grant_id) ON DELETE CASCADE,
                tokens_enc TEXT NOT NULL,
                expires_at INTEGER NOT NULL
            )""",
            """CREATE TABLE authorization_codes (
                code_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                redirect_uri TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                code_challenge_method TEXT NOT NULL,
                resource TEXT NOT NULL,
                scopes TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                redeemed_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX authorization_codes_grant_id ON authorization_codes (grant_id)",
            "CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at)",
            """CREATE TABLE access_tokens (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id)",
            "CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at)",
            """CREATE TABLE refresh_tokens (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                rotated_at INTEGER,
                successor_hash BLOB,
                replayed_at INTEGER,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id)",
            "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
        ),
    ),
    (
        2,
        (
            # The per-grant lease for upstream refreshes: a row-level compare-and-set, so it
            # holds across threads, gunicorn workers and instances sharing the database.
            "ALTER TABLE grant_upstream_tokens ADD COLUMN refresh_holder TEXT",
            "ALTER TABLE grant_upstream_tokens ADD COLUMN refresh_until INTEGER",
        ),
    ),
    (
        3,
        (
            # Access tokens in one B-tree probe (the lookup of every MCP request). Until now a
            # lookup walked two B-trees: access_tokens by its 32-byte hash, then grants by
            # grant_id. With 1,000,000 live tokens each cold page costs a TLB miss and several
            # cache misses (a random read over 1 GiB is ~600 ns on the reference VM against
            # ~20 ns within 1 MiB), and get_access_token cost 1.3x what it cost with 1,000.
            # Now:
            # - the grant's fields are copied into the token row: grants never change after
            #   creation except revoked_at, which revoke_grant sets on the copies in the same
            #   transaction (grant_revoked_at, apart from the token's own revoked_at);
            # - the row lives in a rowid table whose INTEGER PRIMARY KEY (token_key) is the
            #   first 8 bytes of the hash as a signed big-endian integer (access_token_key):
            #   interior cells are 13 bytes against ~40 with the hash as the key, so the
            #   levels above the leaves stay in the CPU caches and only the leaf is cold.
            # The full hash is stored and compared, UNIQUE as before. Two hashes sharing their
            # first 8 bytes (one chance in ~2^44 per new token with 1,000,000 live ones) are
            # both kept: the later one gets a free rowid instead, and a lookup that misses its
            # rowid falls back to the hash's own index (as do unknown hashes and hashes stored
            # as text, which have no derived key).
            # Measured on that VM (whole get_access_token, 1,000,000 tokens against 1,000, median
            # of per-round ratios): two B-trees 1.28-1.31, the grant copied into a table keyed
            # by the hash 1.20, this layout 1.13-1.15 (about 4 us more instead of 8-9). The
            # UNIQUE index costs one more page written per issuance and ~3% of the file.
            """CREATE TABLE access_tokens_v3 (
                token_key INTEGER PRIMARY KEY,
                token_hash BLOB NOT NULL UNIQUE,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                revoked_at INTEGER,
                grant_client_id TEXT NOT NULL,
                grant_subject TEXT NOT NULL,
                grant_claims TEXT NOT NULL,
                grant_scopes TEXT NOT NULL,
                grant_resource TEXT NOT NULL,
                grant_created_at INTEGER NOT NULL,
                grant_revoked_at INTEGER
            )""",
            # Every existing token at its derived key (access_token_key() is registered by
            # migrate(); NULL for a hash stored as text, which takes the next free rowid) ...
            """INSERT OR IGNORE INTO access_tokens_v3 (
                token_key, token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, revoked_at,
                grant_client_id, grant_subject, grant_claims, grant_scopes, grant_resource, grant_created_at,
                grant_revoked_at
            )
            SELECT access_token_key(a.token_hash), a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource,
                a.issued_at, a.expires_at, a.revoked_at,
                g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
            FROM access_tokens a JOIN grants g ON g.grant_id = a.grant_id""",
            # ... and those whose key another token already had, at a free rowid.
            """INSERT INTO access_tokens_v3 (
                token_key, token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, revoked_at,
                grant_client_id, grant_subject, grant_claims, grant_scopes, grant_resource, grant_created_at,
                grant_revoked_at
            )
            SELECT NULL, a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource,
                a.issued_at, a.expires_at, a.revoked_at,
                g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
            FROM access_tokens a JOIN grants g ON g.grant_id = a.grant_id
            WHERE a.token_hash NOT IN (SELECT token_hash FROM access_tokens_v3)""",
            "DROP TABLE access_tokens",
            "ALTER TABLE access_tokens_v3 RENAME TO access_tokens",
            "CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id)",
            "CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at)",
        ),
    ),
    (
        4,
        (
            # Refresh tokens name their grant and generation (domain/refresh_tokens.py): a grant
            # keeps only its current generation and the token that generation replaced, instead
            # of every rotated token until its own expiry (a row per refresh, ~1.15 KB, for 30
            # days). Current tokens carry over at generation 0; rotated ones are dropped (an
            # old-format token presented after the upgrade is then unknown, not a replay).
            """CREATE TABLE refresh_tokens_v4 (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                generation INTEGER NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                rotated_at INTEGER,
                retried_at INTEGER,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            """INSERT INTO refresh_tokens_v4 (
                token_hash, grant_id, client_id, generation, scopes, resource, issued_at, expires_at, revoked_at
            )
            SELECT token_hash, grant_id, client_id, 0, scopes, resource, issued_at, expires_at, revoked_at
            FROM refresh_tokens WHERE rotated_at IS NULL""",
            "DROP TABLE refresh_tokens",
            "ALTER TABLE refresh_tokens_v4 RENAME TO refresh_tokens",
            "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id, generation)",
            "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
            # Finding dynamically registered clients that were never used, or are idle.
            "CREATE INDEX clients_kind_last_use ON clients (kind, coalesce(last_used_at, issued_at))",
        ),
    ),
    (
        5,
        (
            # Rate-limit counters (sqlite_ratelimit.SqliteRateLimitStore), apart from every other
            # table (it was written beside migration 4, in either order). counter_key is the SHA-256 of
            # the limit's key (32 bytes whatever a stranger put in it); one row per live key,
            # rewritten in place by each hit; rows whose window ended are deleted by purge. No
            # index on ends_at: it would be one more B-tree written by every new window on the
            # hot path, and the purge's scan reads only live keys plus a minute's expired ones.
            """CREATE TABLE rate_limit_counters (
                counter_key BLOB PRIMARY KEY,
                hits INTEGER NOT NULL,
                ends_at INTEGER NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
)

_CREATE_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
)

# Every column that holds ciphertext, by table and primary key (for key rotation).
ENCRYPTED_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pending_authorizations", "pending_id", ("upstream_code_verifier_enc", "upstream_nonce_enc")),
    ("grant_upstream_tokens", "grant_id", ("tokens_enc",)),
)

P = ParamSpec("P")
R = TypeVar("R")


def _storage_errors(method: Callable[P, R]) -> Callable[P, R]:
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

    @_storage_errors
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

    # transactions

    def transaction(self) -> AbstractContextManager[None]:
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
        connection = self._thread_connection()
        # Used by migration 3 to place existing access tokens (the same key as new ones get).
        connection.create_function("access_token_key", 1, _access_token_key, deterministic=True)
        applied_now: list[int] = []
        with self._transaction(connection):
            try:
                connection.execute(_CREATE_MIGRATIONS_TABLE)
                done = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
                for version, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in statements:
                        connection.execute(statement)
                    connection.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, int(time.time())),
                    )
                    applied_now.append(version)
            except sqlite3.Error as exc:
                raise StorageError(f"SQLite migration failed: {exc}") from exc
        self._migrated = True
        return applied_now

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
        done = {row[0] for row in rows}
        return [version for version, _ in MIGRATIONS if version not in done]

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

    @_storage_errors
    def applied_migrations(self) -> list[int]:
        """The schema versions recorded in this file, oldest first."""
        rows = self.connection().execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        return [row[0] for row in rows]

    # key rotation

    @_storage_errors
    def reencrypt(self) -> int:
        """Re-encrypt every encrypted column under the newest key in one transaction; return
        the number of rows rewritten."""
        rewritten = 0
        connection = self.connection()
        with self.transaction():
            for table, key, columns in ENCRYPTED_COLUMNS:
                selected = ", ".join(columns)
                present = " OR ".join(f"{column} IS NOT NULL" for column in columns)
                assignments = ", ".join(f"{column} = ?" for column in columns)
                rows = connection.execute(f"SELECT {key}, {selected} FROM {table} WHERE {present}").fetchall()
                for row in rows:
                    values = [None if value is None else self.box.rotate(value) for value in row[1:]]
                    connection.execute(f"UPDATE {table} SET {assignments} WHERE {key} = ?", (*values, row[0]))
                    rewritten += 1
        return rewritten


# -- row mapping --------------------------------------------------------------------------------


def _hash_key(value: str) -> bytes | str:
    """A keyed hash as stored: the 32 bytes of the domain's 64 lower-case hex digits (half the
    size in every key, index and page that holds it). Any other string is stored as the text
    it is, so every value round-trips; SQLite never finds a text equal to a blob."""
    if len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return value
        # fromhex() also accepts upper case and spaces: only the canonical form is packed.
        if raw.hex() == value:
            return raw
    return value


def _hash_text(value: bytes | str) -> str:
    """The domain's hex string for a stored hash (the inverse of ``_hash_key``)."""
    return value.hex() if isinstance(value, bytes) else value


def _access_token_key(key: bytes | str) -> int | None:
    """The rowid an access token is stored at (token_key): the first 8 bytes of its packed hash
    as a signed big-endian integer. None for a hash stored as text: such a row takes the next
    free rowid and is found through the hash's index."""
    return int.from_bytes(key[:8], "big", signed=True) if isinstance(key, bytes) else None


def _scopes(text: str) -> tuple[str, ...]:
    # RFC 6749 §3.3: scope tokens never contain a space, so the scope string is a safe encoding.
    return tuple(text.split())


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StorageError("a stored JSON value is corrupt") from exc


def _client_metadata(client: Client) -> str:
    return json.dumps(
        {
            "redirect_uris": list(client.redirect_uris),
            "grant_types": list(client.grant_types),
            "response_types": list(client.response_types),
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "client_name": client.client_name,
            "scope": client.scope,
            "extra_metadata": dict(client.extra_metadata),
        }
    )


_CLIENT_COLUMNS = "client_id, secret_hash, metadata, kind, issued_at, last_used_at"


def _client(row: tuple[Any, ...]) -> Client:
    metadata = _json(row[2])
    return Client(
        client_id=row[0],
        redirect_uris=tuple(metadata["redirect_uris"]),
        grant_types=tuple(metadata["grant_types"]),
        response_types=tuple(metadata["response_types"]),
        token_endpoint_auth_method=metadata["token_endpoint_auth_method"],
        issued_at=row[4],
        client_name=metadata.get("client_name"),
        scope=metadata.get("scope"),
        # Read-only: the same Client may be handed out again (SqliteClientRepository.get).
        extra_metadata=MappingProxyType(metadata.get("extra_metadata") or {}),
        secret_hash=row[1],
        kind=row[3],
        last_used_at=row[5],
    )


_PENDING_COLUMNS = (
    "pending_id, client_id, redirect_uri, scopes, resource, code_challenge, code_challenge_method, state, "
    "csrf_token_hash, browser_binding_hash, upstream_state_hash, upstream_code_verifier_enc, "
    "upstream_nonce_enc, created_at, expires_at, consumed_at"
)


def _pending(row: tuple[Any, ...], box: SecretBox) -> PendingAuthorization:
    upstream = None
    if row[10] is not None:
        upstream = UpstreamTransaction(
            state_hash=_hash_text(row[10]), code_verifier=box.decrypt(row[11]), nonce=box.decrypt(row[12])
        )
    return PendingAuthorization(
        pending_id=row[0],
        request=AuthorizationRequest(
            client_id=row[1],
            redirect_uri=row[2],
            scopes=_scopes(row[3]),
            resource=row[4],
            code_challenge=row[5],
            code_challenge_method=row[6],
            state=row[7],
        ),
        csrf_token_hash=row[8],
        browser_binding_hash=row[9],
        upstream=upstream,
        created_at=row[13],
        expires_at=row[14],
        consumed_at=row[15],
    )


def _seal_upstream(tokens: UpstreamTokens, box: SecretBox) -> str:
    return box.encrypt(
        json.dumps(
            {
                "access_token": tokens.access_token,
                "expires_at": tokens.expires_at,
                "refresh_token": tokens.refresh_token,
                "scope": tokens.scope,
                "id_token": tokens.id_token,
            }
        )
    )


def _open_upstream(ciphertext: str | None, box: SecretBox) -> UpstreamTokens | None:
    if ciphertext is None:
        return None
    fields = _json(box.decrypt(ciphertext))
    return UpstreamTokens(
        access_token=fields["access_token"],
        expires_at=fields["expires_at"],
        refresh_token=fields.get("refresh_token"),
        scope=fields.get("scope"),
        id_token=fields.get("id_token"),
    )


# The encrypted upstream tokens live in grant_upstream_tokens: only get_upstream_tokens reads
# (and decrypts) them, and grant rows stay small for the token lookups that join them.
_GRANT_COLUMNS = "g.grant_id, g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at"


def _grant(row: tuple[Any, ...]) -> Grant:
    return Grant(
        grant_id=row[0],
        client_id=row[1],
        subject=row[2],
        claims=_json(row[3]),
        scopes=_scopes(row[4]),
        resource=row[5],
        created_at=row[6],
        revoked_at=row[7],
    )


_CODE_COLUMNS = (
    "c.code_hash, c.grant_id, c.client_id, c.redirect_uri, c.code_challenge, c.code_challenge_method, "
    "c.resource, c.scopes, c.issued_at, c.expires_at, c.redeemed_at"
)
_CODE_WIDTH = 11


def _code(row: tuple[Any, ...]) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=_hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        redirect_uri=row[3],
        code_challenge=row[4],
        code_challenge_method=row[5],
        resource=row[6],
        scopes=_scopes(row[7]),
        issued_at=row[8],
        expires_at=row[9],
        redeemed_at=row[10],
    )


_ACCESS_COLUMNS = "a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource, a.issued_at, a.expires_at, a.revoked_at"
_ACCESS_WIDTH = 8
# The copy of its grant each access-token row holds (migration 3): selected after a.grant_id
# (the token's own column), they are in the order of _GRANT_COLUMNS, which _grant() maps.
_ACCESS_GRANT_COLUMNS = (
    "a.grant_client_id, a.grant_subject, a.grant_claims, a.grant_scopes, a.grant_resource, a.grant_created_at, "
    "a.grant_revoked_at"
)


def _access_token(row: tuple[Any, ...]) -> AccessToken:
    return AccessToken(
        token_hash=_hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        scopes=_scopes(row[3]),
        resource=row[4],
        issued_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
    )


_REFRESH_COLUMNS = (
    "r.token_hash, r.grant_id, r.client_id, r.generation, r.scopes, r.resource, r.issued_at, r.expires_at, "
    "r.rotated_at, r.retried_at, r.revoked_at"
)
_REFRESH_WIDTH = 11


def _refresh_token(row: tuple[Any, ...]) -> RefreshToken:
    return RefreshToken(
        token_hash=_hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        generation=row[3],
        scopes=_scopes(row[4]),
        resource=row[5],
        issued_at=row[6],
        expires_at=row[7],
        rotated_at=row[8],
        retried_at=row[9],
        revoked_at=row[10],
    )


# -- clients ------------------------------------------------------------------------------------

_UPSERT_CLIENT = f"""
    INSERT INTO clients ({_CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (client_id) DO UPDATE SET
        secret_hash = excluded.secret_hash, metadata = excluded.metadata, kind = excluded.kind,
        issued_at = excluded.issued_at, last_used_at = excluded.last_used_at
"""
_SELECT_CLIENT = f"SELECT {_CLIENT_COLUMNS} FROM clients WHERE client_id = ?"
_SELECT_CLIENTS = f"SELECT {_CLIENT_COLUMNS} FROM clients ORDER BY issued_at, client_id"
_DELETE_CLIENT = "DELETE FROM clients WHERE client_id = ?"
_TOUCH_CLIENT = "UPDATE clients SET last_used_at = ? WHERE client_id = ?"
# ON DELETE CASCADE takes the clients' pending authorizations, grants and tokens with them.
_DELETE_UNUSED_CLIENTS = """
    DELETE FROM clients WHERE kind = :kind AND (
        (last_used_at IS NULL AND issued_at <= :never_used_before)
        OR (coalesce(last_used_at, issued_at) <= :idle_before AND NOT EXISTS (
            SELECT 1 FROM grants g WHERE g.client_id = clients.client_id AND g.revoked_at IS NULL AND (
                EXISTS (SELECT 1 FROM refresh_tokens r
                        WHERE r.grant_id = g.grant_id AND r.revoked_at IS NULL AND r.expires_at > :now)
                OR EXISTS (SELECT 1 FROM access_tokens a
                           WHERE a.grant_id = g.grant_id AND a.revoked_at IS NULL AND a.expires_at > :now))))
    )
"""


# How many decoded clients SqliteClientRepository keeps (per worker process); past it, it starts over.
DECODED_CLIENTS = 1024


class SqliteClientRepository:
    """Registered and CIMD clients (RFC 7591); deleting one deletes its grants and tokens."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        # The Client decoded from each stored row, keyed by the whole row: get() reads the row
        # every time (a deleted or changed client is seen at once), but an unchanged row is not
        # decoded again. Decoding (the JSON metadata and the dataclass) costs more than the read,
        # on every token, revocation and introspection request.
        self._decoded: dict[tuple[Any, ...], Client] = {}

    @_storage_errors
    def add(self, client: Client) -> None:
        # An upsert, not INSERT OR REPLACE: REPLACE deletes the row first, cascading to grants.
        self._db.connection().execute(
            _UPSERT_CLIENT,
            (
                client.client_id,
                client.secret_hash,
                _client_metadata(client),
                client.kind,
                client.issued_at,
                client.last_used_at,
            ),
        )

    @_storage_errors
    def get(self, client_id: str) -> Client | None:
        row = self._db.connection().execute(_SELECT_CLIENT, (client_id,)).fetchone()
        if row is None:
            return None
        client = self._decoded.get(row)
        if client is None:
            client = _client(row)
            if len(self._decoded) >= DECODED_CLIENTS:
                self._decoded.clear()
            self._decoded[row] = client
        return client

    @_storage_errors
    def delete(self, client_id: str) -> bool:
        return self._db.connection().execute(_DELETE_CLIENT, (client_id,)).rowcount > 0

    @_storage_errors
    def touch(self, client_id: str, now: int) -> None:
        self._db.connection().execute(_TOUCH_CLIENT, (now, client_id))

    @_storage_errors
    def delete_unused(self, kind: str, *, never_used_before: int, idle_before: int, now: int) -> int:
        parameters = {"kind": kind, "never_used_before": never_used_before, "idle_before": idle_before, "now": now}
        with self._db.transaction():
            return self._db.connection().execute(_DELETE_UNUSED_CLIENTS, parameters).rowcount

    # Last, so that the name `list` in the annotations above still means the builtin.
    @_storage_errors
    def list(self) -> list[Client]:
        return [_client(row) for row in self._db.connection().execute(_SELECT_CLIENTS).fetchall()]


# -- pending authorizations and codes -----------------------------------------------------------

_INSERT_PENDING = f"INSERT INTO pending_authorizations ({_PENDING_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_SELECT_PENDING = f"SELECT {_PENDING_COLUMNS} FROM pending_authorizations WHERE pending_id = ?"
_ATTACH_UPSTREAM = """
    UPDATE pending_authorizations
    SET upstream_state_hash = ?, upstream_code_verifier_enc = ?, upstream_nonce_enc = ?
    WHERE pending_id = ? AND upstream_state_hash IS NULL
"""
# One statement is the whole single-use check: no second caller can match the row.
_CONSUME_UPSTREAM = f"""
    UPDATE pending_authorizations SET consumed_at = ?
    WHERE upstream_state_hash = ? AND consumed_at IS NULL AND expires_at > ?
    RETURNING {_PENDING_COLUMNS}
"""
_DELETE_PENDING = "DELETE FROM pending_authorizations WHERE pending_id = ?"
_INSERT_CODE = f"INSERT INTO authorization_codes ({_CODE_COLUMNS.replace('c.', '')}) VALUES ({', '.join('?' * 11)})"
_SELECT_CODE_AND_GRANT = f"""
    SELECT {_CODE_COLUMNS}, {_GRANT_COLUMNS}
    FROM authorization_codes c JOIN grants g ON g.grant_id = c.grant_id
    WHERE c.code_hash = ?
"""
_REDEEM_CODE = "UPDATE authorization_codes SET redeemed_at = ? WHERE code_hash = ? AND redeemed_at IS NULL"


class SqliteAuthorizationStore:
    """Pending authorizations (upstream verifier and nonce encrypted) and one-time codes."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @_storage_errors
    def add_pending(self, pending: PendingAuthorization) -> None:
        box = self._db.box
        request, upstream = pending.request, pending.upstream
        self._db.connection().execute(
            _INSERT_PENDING,
            (
                pending.pending_id,
                request.client_id,
                request.redirect_uri,
                " ".join(request.scopes),
                request.resource,
                request.code_challenge,
                request.code_challenge_method,
                request.state,
                pending.csrf_token_hash,
                pending.browser_binding_hash,
                None if upstream is None else _hash_key(upstream.state_hash),
                None if upstream is None else box.encrypt(upstream.code_verifier),
                None if upstream is None else box.encrypt(upstream.nonce),
                pending.created_at,
                pending.expires_at,
                pending.consumed_at,
            ),
        )

    @_storage_errors
    def get_pending(self, pending_id: str) -> PendingAuthorization | None:
        row = self._db.connection().execute(_SELECT_PENDING, (pending_id,)).fetchone()
        return None if row is None else _pending(row, self._db.box)

    @_storage_errors
    def attach_upstream(self, pending_id: str, upstream: UpstreamTransaction) -> bool:
        box = self._db.box
        cursor = self._db.connection().execute(
            _ATTACH_UPSTREAM,
            (_hash_key(upstream.state_hash), box.encrypt(upstream.code_verifier), box.encrypt(upstream.nonce), pending_id),
        )
        return cursor.rowcount == 1

    @_storage_errors
    def consume_upstream(self, state_hash: str, now: int) -> PendingAuthorization | None:
        # fetchall(): an autocommit statement with RETURNING commits only once fully stepped.
        rows = self._db.connection().execute(_CONSUME_UPSTREAM, (now, _hash_key(state_hash), now)).fetchall()
        return _pending(rows[0], self._db.box) if rows else None

    @_storage_errors
    def delete_pending(self, pending_id: str) -> None:
        self._db.connection().execute(_DELETE_PENDING, (pending_id,))

    @_storage_errors
    def add_code(self, code: AuthorizationCode) -> None:
        self._db.connection().execute(
            _INSERT_CODE,
            (
                _hash_key(code.code_hash),
                code.grant_id,
                code.client_id,
                code.redirect_uri,
                code.code_challenge,
                code.code_challenge_method,
                code.resource,
                " ".join(code.scopes),
                code.issued_at,
                code.expires_at,
                code.redeemed_at,
            ),
        )

    @_storage_errors
    def get_code(self, code_hash: str) -> tuple[AuthorizationCode, Grant] | None:
        row = self._db.connection().execute(_SELECT_CODE_AND_GRANT, (_hash_key(code_hash),)).fetchone()
        return None if row is None else (_code(row[:_CODE_WIDTH]), _grant(row[_CODE_WIDTH:]))

    @_storage_errors
    def redeem_code(self, code_hash: str, now: int) -> bool:
        # One conditional statement: exactly one concurrent caller changes the row.
        return self._db.connection().execute(_REDEEM_CODE, (now, _hash_key(code_hash))).rowcount == 1


# -- grants and tokens --------------------------------------------------------------------------

_INSERT_GRANT = f"INSERT INTO grants ({_GRANT_COLUMNS.replace('g.', '')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_UPSTREAM = "INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at) VALUES (?, ?, ?)"
_SELECT_GRANT = f"SELECT {_GRANT_COLUMNS} FROM grants g WHERE g.grant_id = ?"
_SELECT_GRANTS = f"SELECT {_GRANT_COLUMNS} FROM grants g ORDER BY g.created_at, g.grant_id"
_SELECT_CLIENT_GRANTS = f"SELECT {_GRANT_COLUMNS} FROM grants g WHERE g.client_id = ? ORDER BY g.created_at, g.grant_id"
_REVOKE_GRANT = "UPDATE grants SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL"
# After _REVOKE_GRANT: the token rows' copy of the grant takes the grant's revocation time (the
# first one, as the grant keeps it) and every token not revoked yet is revoked now.
_REVOKE_GRANT_ACCESS_TOKENS = """
    UPDATE access_tokens
    SET revoked_at = coalesce(revoked_at, ?1), grant_revoked_at = (SELECT revoked_at FROM grants WHERE grant_id = ?2)
    WHERE grant_id = ?2 AND (revoked_at IS NULL OR grant_revoked_at IS NULL)
"""
_REVOKE_GRANT_REFRESH_TOKENS = "UPDATE refresh_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL"
_SELECT_UPSTREAM = "SELECT tokens_enc FROM grant_upstream_tokens WHERE grant_id = ?"
_ACQUIRE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = ?, refresh_until = ?
    WHERE grant_id = ? AND (refresh_until IS NULL OR refresh_until <= ?)
"""
_RELEASE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = NULL, refresh_until = NULL
    WHERE grant_id = ? AND refresh_holder = ?
"""
# Insert or replace, but only for a grant that exists (an unknown grant is ignored, as before).
_UPDATE_UPSTREAM = """
    INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at)
    SELECT grant_id, ?, ? FROM grants WHERE grant_id = ?
    ON CONFLICT (grant_id) DO UPDATE SET tokens_enc = excluded.tokens_enc, expires_at = excluded.expires_at
"""
# The token with a copy of its grant's fields (migration 3), read from the grant in the same
# statement: nothing is inserted for an unknown grant, nor when another token already has the
# key (two hashes with the same first 8 bytes; add_access_token then inserts at the next free
# rowid, token_key NULL, as for a hash stored as text). A second row with the same hash still
# fails on the UNIQUE token_hash.
_INSERT_ACCESS_TOKEN = f"""
    INSERT INTO access_tokens (
        token_key, {_ACCESS_COLUMNS.replace('a.', '')}, {_ACCESS_GRANT_COLUMNS.replace('a.', '')}
    )
    SELECT ?1, ?2, g.grant_id, ?3, ?4, ?5, ?6, ?7, ?8,
        g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
    FROM grants g WHERE g.grant_id = ?9
    ON CONFLICT (token_key) DO NOTHING
"""
# The hot path of every MCP request and introspection: one rowid probe, the full hash compared.
_SELECT_ACCESS_TOKEN = f"""
    SELECT {_ACCESS_COLUMNS}, a.grant_id, {_ACCESS_GRANT_COLUMNS}
    FROM access_tokens a
    WHERE a.token_key = ? AND a.token_hash = ?
"""
# When that finds nothing: a token moved off its key by a collision, a hash stored as text, or
# an unknown hash (through the UNIQUE index on token_hash).
_SELECT_ACCESS_TOKEN_BY_HASH = f"""
    SELECT {_ACCESS_COLUMNS}, a.grant_id, {_ACCESS_GRANT_COLUMNS}
    FROM access_tokens a
    WHERE a.token_hash = ?
"""
_REVOKE_ACCESS_TOKEN = "UPDATE access_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL"
_INSERT_REFRESH_TOKEN = (
    f"INSERT INTO refresh_tokens ({_REFRESH_COLUMNS.replace('r.', '')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_REFRESH_TOKEN = f"""
    SELECT {_REFRESH_COLUMNS}, {_GRANT_COLUMNS}
    FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id
    WHERE r.token_hash = ?
"""
_CURRENT_REFRESH_GENERATION = "SELECT max(generation) FROM refresh_tokens WHERE grant_id = ?"
_ROTATE_REFRESH_TOKEN = """
    UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ? AND rotated_at IS NULL
    RETURNING grant_id, generation
"""
# After a rotation only the rotated token and its successor (inserted next) remain.
_FORGET_OLDER_REFRESH_TOKENS = "DELETE FROM refresh_tokens WHERE grant_id = ? AND generation <= ? AND token_hash != ?"
_MARK_REFRESH_RETRIED = "UPDATE refresh_tokens SET retried_at = ? WHERE token_hash = ? AND retried_at IS NULL"

# Purge, in order; each takes the cut-off time. Rows of grants about to go are deleted
# explicitly rather than by ON DELETE CASCADE so that they are counted.
_REVOKED_GRANTS = "SELECT grant_id FROM grants WHERE revoked_at <= ?"
_PURGE_EXPIRED = (
    "DELETE FROM pending_authorizations WHERE expires_at <= ?",
    "DELETE FROM authorization_codes WHERE expires_at <= ?",
    "DELETE FROM access_tokens WHERE expires_at <= ?",
    "DELETE FROM refresh_tokens WHERE expires_at <= ?",
)
_PURGE_REVOKED_GRANTS = (
    f"DELETE FROM authorization_codes WHERE grant_id IN ({_REVOKED_GRANTS})",
    f"DELETE FROM access_tokens WHERE grant_id IN ({_REVOKED_GRANTS})",
    f"DELETE FROM refresh_tokens WHERE grant_id IN ({_REVOKED_GRANTS})",
    "DELETE FROM grants WHERE revoked_at <= ?",
)
_PURGE_UNUSED_GRANTS = """
    DELETE FROM grants WHERE created_at <= ?
    AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.grant_id = grants.grant_id)
    AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = grants.grant_id)
    AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = grants.grant_id)
"""


class SqliteGrantStore:
    """Grants (upstream tokens encrypted) and the access and refresh tokens issued from them.

    ``purge_expired`` deletes expired pending authorizations, codes and tokens; grants revoked
    more than ``REVOKED_GRANT_RETENTION`` ago (with their rows); and grants older than
    ``grant_retention`` that have no code or token left, so nothing can use them any more.
    """

    def __init__(self, db: SqliteDatabase, *, grant_retention: int = DEFAULT_GRANT_RETENTION) -> None:
        self._db = db
        self._grant_retention = grant_retention

    def atomic(self) -> AbstractContextManager[None]:
        return self._db.transaction()

    @_storage_errors
    def add_grant(self, grant: Grant, upstream: UpstreamTokens | None) -> None:
        connection = self._db.connection()
        row = (
            grant.grant_id,
            grant.client_id,
            grant.subject,
            json.dumps(dict(grant.claims)),
            " ".join(grant.scopes),
            grant.resource,
            grant.created_at,
            grant.revoked_at,
        )
        if upstream is None:
            connection.execute(_INSERT_GRANT, row)
            return
        sealed = _seal_upstream(upstream, self._db.box)
        # Both rows or neither.
        with self._db.transaction():
            connection.execute(_INSERT_GRANT, row)
            connection.execute(_INSERT_UPSTREAM, (grant.grant_id, sealed, upstream.expires_at))

    @_storage_errors
    def get_grant(self, grant_id: str) -> Grant | None:
        row = self._db.connection().execute(_SELECT_GRANT, (grant_id,)).fetchone()
        return None if row is None else _grant(row)

    @_storage_errors
    def list_grants(self, client_id: str | None = None) -> list[Grant]:
        connection = self._db.connection()
        if client_id is None:
            rows = connection.execute(_SELECT_GRANTS).fetchall()
        else:
            rows = connection.execute(_SELECT_CLIENT_GRANTS, (client_id,)).fetchall()
        return [_grant(row) for row in rows]

    @_storage_errors
    def revoke_grant(self, grant_id: str, now: int) -> None:
        connection = self._db.connection()
        with self._db.transaction():
            connection.execute(_REVOKE_GRANT, (now, grant_id))
            connection.execute(_REVOKE_GRANT_ACCESS_TOKENS, (now, grant_id))
            connection.execute(_REVOKE_GRANT_REFRESH_TOKENS, (now, grant_id))

    @_storage_errors
    def get_upstream_tokens(self, grant_id: str) -> UpstreamTokens | None:
        row = self._db.connection().execute(_SELECT_UPSTREAM, (grant_id,)).fetchone()
        return None if row is None else _open_upstream(row[0], self._db.box)

    @_storage_errors
    def update_upstream_tokens(self, grant_id: str, tokens: UpstreamTokens) -> None:
        self._db.connection().execute(
            _UPDATE_UPSTREAM, (_seal_upstream(tokens, self._db.box), tokens.expires_at, grant_id)
        )

    @_storage_errors
    def acquire_upstream_refresh_lock(self, grant_id: str, holder: str, now: int, until: int) -> bool:
        cursor = self._db.connection().execute(_ACQUIRE_REFRESH_LOCK, (holder, until, grant_id, now))
        return cursor.rowcount == 1

    @_storage_errors
    def release_upstream_refresh_lock(self, grant_id: str, holder: str) -> None:
        self._db.connection().execute(_RELEASE_REFRESH_LOCK, (grant_id, holder))

    @_storage_errors
    def add_access_token(self, token: AccessToken) -> None:
        connection = self._db.connection()
        key = _hash_key(token.token_hash)
        row = [
            _access_token_key(key),
            key,
            token.client_id,
            " ".join(token.scopes),
            token.resource,
            token.issued_at,
            token.expires_at,
            token.revoked_at,
            token.grant_id,
        ]
        inserted = connection.execute(_INSERT_ACCESS_TOKEN, row).rowcount
        if inserted == 0 and row[0] is not None:
            # Another token's hash starts with the same 8 bytes (or the grant is unknown).
            row[0] = None
            inserted = connection.execute(_INSERT_ACCESS_TOKEN, row).rowcount
        if inserted != 1:
            raise StorageError(f"SQLite storage failed: no grant {token.grant_id!r} for the access token")

    @_storage_errors
    def get_access_token(self, token_hash: str) -> tuple[AccessToken, Grant] | None:
        connection = self._db.connection()
        key = _hash_key(token_hash)
        row = None
        if isinstance(key, bytes):
            row = connection.execute(_SELECT_ACCESS_TOKEN, (_access_token_key(key), key)).fetchone()
        if row is None:
            row = connection.execute(_SELECT_ACCESS_TOKEN_BY_HASH, (key,)).fetchone()
            if row is None:
                return None
        return _access_token(row[:_ACCESS_WIDTH]), _grant(row[_ACCESS_WIDTH:])

    @_storage_errors
    def revoke_access_token(self, token_hash: str, now: int) -> None:
        self._db.connection().execute(_REVOKE_ACCESS_TOKEN, (now, _hash_key(token_hash)))

    @_storage_errors
    def add_refresh_token(self, token: RefreshToken) -> None:
        self._db.connection().execute(
            _INSERT_REFRESH_TOKEN,
            (
                _hash_key(token.token_hash),
                token.grant_id,
                token.client_id,
                token.generation,
                " ".join(token.scopes),
                token.resource,
                token.issued_at,
                token.expires_at,
                token.rotated_at,
                token.retried_at,
                token.revoked_at,
            ),
        )

    @_storage_errors
    def get_refresh_token(self, token_hash: str) -> tuple[RefreshToken, Grant] | None:
        row = self._db.connection().execute(_SELECT_REFRESH_TOKEN, (_hash_key(token_hash),)).fetchone()
        if row is None:
            return None
        return _refresh_token(row[:_REFRESH_WIDTH]), _grant(row[_REFRESH_WIDTH:])

    @_storage_errors
    def current_refresh_generation(self, grant_id: str) -> int | None:
        row = self._db.connection().execute(_CURRENT_REFRESH_GENERATION, (grant_id,)).fetchone()
        return None if row is None else row[0]

    @_storage_errors
    def rotate_refresh_token(self, token_hash: str, now: int) -> bool:
        connection = self._db.connection()
        key = _hash_key(token_hash)
        with self._db.transaction():
            # fetchall(): a statement with RETURNING has done its write only once fully stepped.
            rows = connection.execute(_ROTATE_REFRESH_TOKEN, (now, key)).fetchall()
            if not rows:
                return False
            grant_id, generation = rows[0]
            connection.execute(_FORGET_OLDER_REFRESH_TOKENS, (grant_id, generation, key))
        return True

    @_storage_errors
    def mark_refresh_retried(self, token_hash: str, now: int) -> bool:
        cursor = self._db.connection().execute(_MARK_REFRESH_RETRIED, (now, _hash_key(token_hash)))
        return cursor.rowcount == 1

    @_storage_errors
    def purge_expired(self, now: int) -> int:
        connection = self._db.connection()
        removed = 0
        with self._db.transaction():
            for statement in _PURGE_EXPIRED:
                removed += connection.execute(statement, (now,)).rowcount
            revoked_before = now - REVOKED_GRANT_RETENTION
            for statement in _PURGE_REVOKED_GRANTS:
                removed += connection.execute(statement, (revoked_before,)).rowcount
            removed += connection.execute(_PURGE_UNUSED_GRANTS, (now - self._grant_retention,)).rowcount
        return removed
