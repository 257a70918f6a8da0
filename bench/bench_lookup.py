"""Access-token lookup cost with few and with many live tokens, on SQLite or PostgreSQL.

    .venv-test/bin/python bench/bench_lookup.py [--sizes 1000 1000000] [--batches 9] [--lookups 10000]
    .venv-test/bin/python bench/bench_lookup.py --reuse /tmp/mob-lookup   # build once, then reuse
    .venv-test/bin/python bench/bench_lookup.py --storage postgresql      # a throw-away PostgreSQL server

SQLite (the default): builds one database per size in a temporary directory (or, with --reuse
DIR, in DIR, kept and reused by later runs while the schema and settings match) through the
project's own code (container, SqliteDatabase, SqliteGrantStore.add_grant /
SqliteAccessTokenStore.add_access_token inside one transaction).

PostgreSQL (--storage postgresql): starts a throw-away server from the machine's binaries
(tests/integration/postgres_server.py) and builds one database per size on it, schema by the
adapter's migrations, rows in the adapter's encoding (storage/records.py: grant_row,
seal_upstream, access_token_row, the grant's copy in each token row) loaded with COPY, with the
indexes in place (grown by random inserts, as in production), then VACUUM ANALYZE.

Then it times, batch by batch and alternating between the databases:

  sql           the adapter's own SELECT (SQLite: the token row, with its copy of the grant, by
                the rowid its hash gives; PostgreSQL: by the primary key) on one connection
                held for the whole batch: the storage engine plus, on PostgreSQL, one round trip
                (a diagnostic, not a port call)
  engine        PostgreSQL only: the same SELECT for the whole batch in one PL/pgSQL loop inside
                the server: the storage engine alone, no round trips (a diagnostic)
  get_access_token   <Backend>AccessTokenStore.get_access_token(hash): SQL + row mapping (the port)
  authenticate  BearerAuthenticator.authenticate(token): HMAC + get_access_token + checks

for random existing tokens, reporting the median microseconds per lookup of each size and the
ratio largest / smallest. Target: get_access_token within 1.1x between 1,000 and 1,000,000 tokens.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psycopg

from benchlib import (
    Seeder,
    bench_postgres,
    create_postgres_database,
    load_average,
    open_container,
    parse_settings,
    postgres_description,
    print_header,
    print_table,
    server_environment,
)

from mcp_oauth_bridge.adapters.storage import records
from mcp_oauth_bridge.adapters.storage.postgres import PostgresAccessTokenStore, PostgresDatabase
from mcp_oauth_bridge.adapters.storage.postgres import tokens as postgres_tokens
from mcp_oauth_bridge.adapters.storage.records import hash_key
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteAccessTokenStore, SqliteDatabase, SqliteGrantStore
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import MIGRATIONS, access_token_key
from mcp_oauth_bridge.adapters.storage.sqlite.tokens import _SELECT_ACCESS_TOKEN
from mcp_oauth_bridge.domain.model import Grant
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.domain.services.bearer import BearerAuthenticator
from mcp_oauth_bridge.entrypoints.container import Container

LOOKUP_TARGET = 1.1
# Grants with their upstream tokens are inserted in chunks of this many, each chunk sharing one
# fake upstream sign-in (each grant still encrypts its own copy, as in production).
CHUNK = 10_000
# Page cache of the building connection only (KiB): random-key inserts into four B-trees spill an
# 8 MiB cache constantly. The database is closed afterwards, so lookups run on connections the
# adapter opens with its own settings.
BUILD_CACHE_KIB = 2 * 1024 * 1024
# Written next to a database built under --reuse: what is needed to use it again (its keys, the
# sampled tokens) and what it was built with (a different schema or parameters mean a rebuild).
MANIFEST = "bench-lookup.json"
# Access-token lifetime of databases built for --reuse, so that their tokens are still live (and
# authenticate) in later runs; a database within a day of its tokens' expiry is rebuilt. The
# value is a 4-byte integer either way, as with the default hour: rows are the same size.
REUSE_ACCESS_TOKEN_TTL = 30 * 24 * 3600


def schema_fingerprint() -> str:
    """Changes whenever the adapter's migrations or the stored form of a token hash do: a reused
    database must have today's schema, and hashes the bearer check finds at its first read."""
    stored_form = TokenHasher(b"\0" * 32).hash("fingerprint")
    return hashlib.sha256((repr(MIGRATIONS) + stored_form).encode()).hexdigest()[:16]


@dataclass
class TokenDatabase:
    size: int
    # SQLite: the database file; PostgreSQL: the database's name (its data directory holds only
    # the settings).
    path: Path
    container: Container
    # The settings the database was built with (its keys): --reuse stores them.
    env: dict[str, str]
    # Token values (and their hashes) of a random sample of the stored tokens.
    sample_values: list[str]
    sample_hashes: list[str]
    build_seconds: float
    file_bytes: int
    # The sample in the order it was taken, as --reuse stores it (empty once reused).
    unshuffled: tuple[list[str], list[str]] = ([], [])
    # Built by an earlier --reuse run.
    reused: bool = False
    # Operation name -> microseconds per lookup of each batch.
    timings: dict[str, list[float]] = field(default_factory=dict)
    storage: str = "sqlite"
    # PostgreSQL: the database's URL, and the sizes of the table and its primary key's index.
    url: str = ""
    relation_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def db(self) -> SqliteDatabase:
        database: SqliteDatabase = self.container.storage.database()
        return database

    @property
    def pg(self) -> PostgresDatabase:
        database: PostgresDatabase = self.container.storage.database()
        return database

    @property
    def access_tokens(self) -> SqliteAccessTokenStore | PostgresAccessTokenStore:
        store: SqliteAccessTokenStore | PostgresAccessTokenStore = self.container.access_tokens()
        return store

    def count(self, table: str) -> int:
        if self.storage == "sqlite":
            row = self.db.connection().execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        else:
            row = self.pg.fetchone(f"SELECT COUNT(*) FROM {table}")
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        if self.storage == "sqlite":
            self.db.close()
        else:
            self.pg.close()

    @property
    def bearer(self) -> BearerAuthenticator:
        authenticator: BearerAuthenticator = self.container.bearer_authenticator()
        return authenticator


def prepare(
    size: int,
    root: Path,
    *,
    tokens_per_grant: int,
    sample_size: int,
    rng: random.Random,
    reuse: bool,
    rebuild: bool = False,
) -> TokenDatabase:
    """The database of ``size`` tokens under ``root``: reused if ``reuse`` and a database built
    with the same schema and parameters is there, otherwise (re)built."""
    data_dir = root / f"db-{size}"
    wanted = {"schema": schema_fingerprint(), "size": size, "tokens_per_grant": tokens_per_grant, "sample": sample_size}
    manifest_path = data_dir / MANIFEST
    if reuse and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        fresh = manifest.get("built_at", 0) + REUSE_ACCESS_TOKEN_TTL - 24 * 3600 > time.time()
        if not rebuild and fresh and all(manifest.get(key) == value for key, value in wanted.items()):
            return load(size, data_dir, manifest, rng=rng)
        print(f"  {data_dir}: rebuilding (asked to, or built with another schema or settings)", file=sys.stderr)
        shutil.rmtree(data_dir)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise SystemExit(f"{data_dir} exists and is not a database this benchmark built: remove it or choose another DIR")
    built_at = int(time.time())
    overrides = {"ACCESS_TOKEN_TTL": str(REUSE_ACCESS_TOKEN_TTL)} if reuse else {}
    database = build(
        size, data_dir, tokens_per_grant=tokens_per_grant, sample_size=sample_size, rng=rng, overrides=overrides
    )
    if reuse:
        manifest_path.write_text(
            json.dumps(
                {
                    **wanted,
                    "built_at": built_at,
                    "env": database.env,
                    "build_seconds": database.build_seconds,
                    # In sampling order (load shuffles them the way build does).
                    "sample_values": database.unshuffled[0],
                    "sample_hashes": database.unshuffled[1],
                }
            )
        )
        manifest_path.chmod(0o600)
    return database


def check_count(database: SqliteDatabase, size: int) -> None:
    count = database.connection().execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0]
    if count != size:
        raise RuntimeError(f"{database.path}: expected {size} access tokens, found {count}")


def shuffled(values: list[str], hashes: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """The sampled token values and their hashes, in one random order."""
    order = list(range(len(values)))
    rng.shuffle(order)
    return [values[i] for i in order], [hashes[i] for i in order]


def load(size: int, data_dir: Path, manifest: dict[str, Any], *, rng: random.Random) -> TokenDatabase:
    """A database an earlier --reuse run built. Its file is read through once, so it sits in the
    operating system's page cache as it does right after a build."""
    env: dict[str, str] = manifest["env"]
    container = open_container(env)
    database: SqliteDatabase = container.storage.database()
    path = Path(database.path)
    with open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass
    check_count(database, size)
    database.close()
    sample_values, sample_hashes = shuffled(manifest["sample_values"], manifest["sample_hashes"], rng)
    print(f"  reusing {path} ({size:,} tokens)", file=sys.stderr)
    return TokenDatabase(
        size=size,
        path=path,
        container=container,
        env=env,
        sample_values=sample_values,
        sample_hashes=sample_hashes,
        build_seconds=float(manifest["build_seconds"]),
        file_bytes=path.stat().st_size,
        reused=True,
    )


def build(
    size: int,
    data_dir: Path,
    *,
    tokens_per_grant: int,
    sample_size: int,
    rng: random.Random,
    overrides: dict[str, str] | None = None,
) -> TokenDatabase:
    """A database with ``size`` live access tokens over ``size / tokens_per_grant`` grants."""
    env = server_environment(data_dir, "http://127.0.0.1:8000", **(overrides or {}))
    container = open_container(env)
    seeder = Seeder(container)
    client = seeder.register_client()
    grants: SqliteGrantStore = container.grants()
    access_tokens: SqliteAccessTokenStore = container.access_tokens()
    database: SqliteDatabase = container.storage.database()
    # Keep every k-th token (tokens are random, so this is a random sample of the key space).
    keep_every = max(1, size // sample_size)
    values: list[str] = []
    hashes: list[str] = []
    started = time.perf_counter()
    now = int(time.time())
    made = 0
    database.connection().execute(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
    with database.atomic():
        while made < size:
            login = seeder.upstream_login()
            grant: Grant | None = None
            for _ in range(min(CHUNK, size - made)):
                if grant is None or made % tokens_per_grant == 0:
                    grant = seeder.new_grant(client.client_id, login, now)
                    grants.add_grant(grant, login.tokens)
                value, row = seeder.access_token(grant, now)
                access_tokens.add_access_token(row)
                if made % keep_every == 0:
                    values.append(value)
                    hashes.append(row.token_hash)
                made += 1
            print(f"\r  building {size:,} tokens: {made:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    # Fold the WAL into the database file, as a long-running server's checkpoints would have.
    database.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    build_seconds = time.perf_counter() - started
    check_count(database, size)
    database.close()
    path = Path(database.path)
    sample_values, sample_hashes = shuffled(values, hashes, rng)
    return TokenDatabase(
        size=size,
        path=path,
        container=container,
        env=env,
        sample_values=sample_values,
        sample_hashes=sample_hashes,
        build_seconds=build_seconds,
        file_bytes=path.stat().st_size,
        unshuffled=(values, hashes),
    )


# -- PostgreSQL ---------------------------------------------------------------------------------

# The columns of each table as the adapter inserts them (records.py's order).
GRANT_COPY_COLUMNS = records.GRANT_COLUMNS.replace("g.", "")
UPSTREAM_COPY_COLUMNS = "grant_id, tokens_enc, expires_at"
ACCESS_COPY_COLUMNS = f"{records.ACCESS_COLUMNS}, {records.ACCESS_GRANT_COLUMNS}".replace("a.", "")


def copy_rows(cursor: psycopg.Cursor[Any], table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def build_postgres(
    size: int,
    server: Any,
    data_dir: Path,
    *,
    tokens_per_grant: int,
    sample_size: int,
    rng: random.Random,
) -> TokenDatabase:
    """A database ``lookup_<size>`` on ``server`` with ``size`` live access tokens over
    ``size / tokens_per_grant`` grants: the schema by the adapter's migrations, the rows as the
    adapter encodes them (grant_row; seal_upstream, one ciphertext per grant; access_token_row
    followed by the grant's copy, as _INSERT_ACCESS_TOKEN copies it), loaded with COPY in one
    transaction into the indexed tables (the primary key's B-tree grown by random inserts, as a
    server's is), then VACUUM ANALYZE (what autovacuum would have done) and a checkpoint."""
    name = f"lookup_{size}"
    url = create_postgres_database(server, name)
    env = server_environment(data_dir, "http://127.0.0.1:8000", STORAGE_URL=url)
    container = open_container(env)
    seeder = Seeder(container)
    client = seeder.register_client()
    box = container.storage.database().box
    keep_every = max(1, size // sample_size)
    values: list[str] = []
    hashes: list[str] = []
    started = time.perf_counter()
    now = int(time.time())
    made = 0
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        while made < size:
            login = seeder.upstream_login()
            sealed_rows: list[tuple[Any, ...]] = []
            grant_rows: list[tuple[Any, ...]] = []
            token_rows: list[tuple[Any, ...]] = []
            grant: Grant | None = None
            grant_row: tuple[Any, ...] = ()
            for _ in range(min(CHUNK, size - made)):
                if grant is None or made % tokens_per_grant == 0:
                    grant = seeder.new_grant(client.client_id, login, now)
                    grant_row = records.grant_row(grant)
                    grant_rows.append(grant_row)
                    assert login.tokens is not None
                    sealed_rows.append((grant.grant_id, records.seal_upstream(login.tokens, box), login.tokens.expires_at))
                value, row = seeder.access_token(grant, now)
                # The token's columns, then its grant's (grant_row without grant_id).
                token_rows.append((*records.access_token_row(row, encode=records.stored_hash), *grant_row[1:]))
                if made % keep_every == 0:
                    values.append(value)
                    hashes.append(row.token_hash)
                made += 1
            copy_rows(cursor, "grants", GRANT_COPY_COLUMNS, grant_rows)
            copy_rows(cursor, "grant_upstream_tokens", UPSTREAM_COPY_COLUMNS, sealed_rows)
            copy_rows(cursor, "access_tokens", ACCESS_COPY_COLUMNS, token_rows)
            print(f"\r  building {size:,} tokens: {made:,}", end="", file=sys.stderr, flush=True)
        connection.commit()
    print(file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
        connection.execute("CHECKPOINT")
        relation_bytes = {
            relation: int(connection.execute("SELECT pg_relation_size(%s)", (relation,)).fetchone()[0])  # type: ignore[index]
            for relation in ("access_tokens", "access_tokens_pkey", "grants")
        }
        database_bytes = int(connection.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
    build_seconds = time.perf_counter() - started
    database = TokenDatabase(
        size=size,
        path=Path(name),
        container=container,
        env=env,
        sample_values=[],
        sample_hashes=[],
        build_seconds=build_seconds,
        file_bytes=database_bytes,
        storage="postgresql",
        url=url,
        relation_bytes=relation_bytes,
    )
    if database.count("access_tokens") != size:
        raise RuntimeError(f"{name}: expected {size} access tokens, found {database.count('access_tokens')}")
    database.sample_values, database.sample_hashes = shuffled(values, hashes, rng)
    return database


# The adapter's SELECT, run by the server for a whole batch of keys: the storage engine alone.
# Times itself (clock_timestamp) and counts the rows found (FOUND is PL/pgSQL's own flag).
_ENGINE_FUNCTION = f"""
CREATE FUNCTION pg_temp.bench_lookups(keys bytea[], OUT hits integer, OUT micros double precision)
LANGUAGE plpgsql AS $$
DECLARE
    key bytea;
    hit record;
    started timestamptz := clock_timestamp();
BEGIN
    hits := 0;
    FOREACH key IN ARRAY keys LOOP
        {postgres_tokens._SELECT_ACCESS_TOKEN.replace("FROM", "INTO hit FROM", 1).replace("%s", "key").strip()};
        IF FOUND THEN
            hits := hits + 1;
        END IF;
    END LOOP;
    micros := extract(epoch FROM clock_timestamp() - started) * 1e6;
END
$$
"""


def time_batch(call: Callable[[Any], object], keys: Sequence[Any]) -> float:
    """Microseconds per call over ``keys``; every call must find its token."""
    gc.collect()
    missing = 0
    started = time.perf_counter_ns()
    for key in keys:
        if call(key) is None:
            missing += 1
    elapsed = time.perf_counter_ns() - started
    if missing:
        raise RuntimeError(f"{missing} of {len(keys)} lookups found nothing")
    return elapsed / len(keys) / 1000


OPERATIONS = ("sql", "get_access_token", "authenticate")
POSTGRES_OPERATIONS = ("sql", "engine", "get_access_token", "authenticate")


def sql_keys(hashes: Sequence[str]) -> list[tuple[int | None, bytes | str]]:
    """The parameters the adapter binds for each token hash (the rowid derived from the hash and
    the 32-byte hash), for the ``sql`` diagnostic: converted before the timed loop, which then
    times the statement alone."""
    keys = [hash_key(token_hash) for token_hash in hashes]
    return [(access_token_key(key), key) for key in keys]


Timer = Callable[[list[str], list[str]], float]


def operations(database: TokenDatabase, stack: ExitStack) -> dict[str, Timer]:
    """Each timed operation, as a function of the batch's token hashes and values that returns
    the microseconds per lookup; ``authenticate`` looks up the values, the others the hashes
    (``sql`` and ``engine`` converted to the parameters the adapter binds before timing)."""
    if database.storage == "postgresql":
        return postgres_operations(database, stack)
    connection: sqlite3.Connection = database.db.connection()

    def sql(params: tuple[int | None, bytes | str]) -> object:
        return connection.execute(_SELECT_ACCESS_TOKEN, params).fetchone()

    return {
        "sql": lambda hashes, values: time_batch(sql, sql_keys(hashes)),
        "get_access_token": lambda hashes, values: time_batch(database.access_tokens.get_access_token, hashes),
        "authenticate": lambda hashes, values: time_batch(database.bearer.authenticate, values),
    }


def postgres_operations(database: TokenDatabase, stack: ExitStack) -> dict[str, Timer]:
    # ``sql``: a connection of the adapter's own pool (its settings, psycopg's automatic
    # prepared statements), held for the whole run; ``engine``: a session of its own, for the
    # temporary function.
    held = stack.enter_context(database.pg.pool().connection())
    session = stack.enter_context(psycopg.connect(database.url, autocommit=True))
    session.execute(_ENGINE_FUNCTION)

    def sql(params: tuple[bytes]) -> object:
        return held.execute(postgres_tokens._SELECT_ACCESS_TOKEN, params).fetchone()

    def engine(hashes: list[str], values: list[str]) -> float:
        keys = [records.stored_hash(token_hash) for token_hash in hashes]
        row = session.execute("SELECT hits, micros FROM pg_temp.bench_lookups(%s)", (keys,)).fetchone()
        assert row is not None
        if row[0] != len(keys):
            raise RuntimeError(f"{len(keys) - row[0]} of {len(keys)} lookups found nothing")
        return float(row[1]) / len(keys)

    return {
        "sql": lambda hashes, values: time_batch(sql, [(records.stored_hash(h),) for h in hashes]),
        "engine": engine,
        "get_access_token": lambda hashes, values: time_batch(database.access_tokens.get_access_token, hashes),
        "authenticate": lambda hashes, values: time_batch(database.bearer.authenticate, values),
    }


def measure(databases: Sequence[TokenDatabase], *, batches: int, lookups: int, rng: random.Random, warmup: int) -> None:
    with ExitStack() as stack:
        calls = {database.size: operations(database, stack) for database in databases}
        for database in databases:
            database.timings = {name: [] for name in calls[database.size]}
            # Untimed warm-up: loads the schema and the upper levels of the B-trees into the
            # cache (PostgreSQL: and shared_buffers towards its steady state for random keys).
            warm = database.sample_hashes[:warmup]
            calls[database.size]["get_access_token"](warm, [])
        measure_batches(databases, calls, batches=batches, lookups=lookups, rng=rng)


def measure_batches(
    databases: Sequence[TokenDatabase],
    calls: dict[int, dict[str, Timer]],
    *,
    batches: int,
    lookups: int,
    rng: random.Random,
) -> None:

    for batch in range(batches):
        # Alternate which database goes first, so neither always runs on a warmer machine.
        order = list(databases) if batch % 2 == 0 else list(reversed(databases))
        for database in order:
            picks = [rng.randrange(len(database.sample_hashes)) for _ in range(lookups)]
            hashes = [database.sample_hashes[i] for i in picks]
            values = [database.sample_values[i] for i in picks]
            for name, timer in calls[database.size].items():
                database.timings[name].append(timer(hashes, values))
        print(f"\r  batch {batch + 1}/{batches}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def report(databases: Sequence[TokenDatabase], batches: int, lookups: int) -> bool:
    print("Databases:")
    postgres = databases[0].storage == "postgresql"
    print_table(
        [
            "live access tokens", "grants", "database size" if postgres else "file size",
            *(["access_tokens heap", "its primary key"] if postgres else []), "build time", "sampled tokens",
        ],
        [
            [
                f"{d.size:,}",
                f"{d.count('grants'):,}",
                f"{d.file_bytes / 2**20:,.1f} MiB",
                *([f"{d.relation_bytes[r] / 2**20:,.1f} MiB" for r in ("access_tokens", "access_tokens_pkey")] if postgres else []),
                f"{d.build_seconds:,.1f} s" + (" (reused)" if d.reused else ""),
                f"{len(d.sample_hashes):,}",
            ]
            for d in databases
        ],
    )  # fmt: skip
    print()
    smallest, largest = databases[0], databases[-1]
    print(f"Microseconds per lookup (median of {batches} batches of {lookups:,} random existing tokens; min-max):")
    rows = []
    for name in smallest.timings:
        row = [name]
        for database in databases:
            values = database.timings[name]
            row.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        ratio = statistics.median(largest.timings[name]) / statistics.median(smallest.timings[name])
        row.append(f"{ratio:.3f}")
        row.append(f"{paired_ratio(smallest, largest, name):.3f}")
        rows.append(row)
    print_table(
        [
            "operation",
            *[f"{d.size:,} tokens" for d in databases],
            f"ratio {largest.size:,}/{smallest.size:,}",
            "paired ratio",
        ],
        rows,
    )
    print()
    ratio = statistics.median(largest.timings["get_access_token"]) / statistics.median(smallest.timings["get_access_token"])
    met = ratio <= LOOKUP_TARGET
    print(
        f"Target: get_access_token with {largest.size:,} tokens within {LOOKUP_TARGET:.1f} x of {smallest.size:,}: "
        f"{ratio:.3f} -> {'MET' if met else 'MISSED'} "
        f"(paired ratio {paired_ratio(smallest, largest, 'get_access_token'):.3f})"
    )
    return met


def paired_ratio(smallest: TokenDatabase, largest: TokenDatabase, name: str) -> float:
    """The median over the batches of the ratio of the two databases' batch of the same round
    (timed back to back): a drift of the machine's speed over several batches cancels out in
    each pair, where it stays in a ratio of two medians."""
    return statistics.median(big / small for small, big in zip(smallest.timings[name], largest.timings[name]))


# Buffer statistics of the lookups (reset before the timed batches): hits in shared_buffers
# against reads from the operating system (its page cache, or the disk).
_STATIO = """
    SELECT 'heap', heap_blks_hit, heap_blks_read FROM pg_statio_user_tables WHERE relname = 'access_tokens'
    UNION ALL
    SELECT 'primary key', idx_blks_hit, idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = 'access_tokens_pkey'
"""


def reset_statistics(databases: Sequence[TokenDatabase]) -> None:
    for database in databases:
        with psycopg.connect(database.url, autocommit=True) as connection:
            connection.execute("SELECT pg_stat_reset()")


def report_postgres(databases: Sequence[TokenDatabase], lookups_per_database: int, explain: bool) -> None:
    """Where the pages of the lookups came from (call once the pools are closed: a backend's
    statistics reach the shared counters when it exits at the latest), and with ``explain`` the
    plan of one lookup per database with its buffers."""
    print()
    print(f"Pages per lookup during the timed batches ({lookups_per_database:,} lookups per database and operation "
          "set; hit: in shared_buffers, read: from the operating system):")  # fmt: skip
    rows = []
    for database in databases:
        with psycopg.connect(database.url, autocommit=True) as connection:
            for relation, hit, read in connection.execute(_STATIO).fetchall():
                total = (hit or 0) + (read or 0)
                rows.append([
                    f"{database.size:,}", relation, f"{total / lookups_per_database:.2f}",
                    f"{(hit or 0) / lookups_per_database:.2f}", f"{(read or 0) / lookups_per_database:.2f}",
                    f"{(hit or 0) / total:.1%}" if total else "-",
                ])  # fmt: skip
    print_table(["live access tokens", "relation", "pages", "hit", "read", "hit ratio"], rows)
    if not explain:
        return
    for database in databases:
        key = records.stored_hash(database.sample_hashes[0])
        with psycopg.connect(database.url, autocommit=True) as connection:
            plan = connection.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + postgres_tokens._SELECT_ACCESS_TOKEN, (key,)
            ).fetchall()
        print()
        print(f"EXPLAIN (ANALYZE, BUFFERS) of one lookup, {database.size:,} tokens:")
        for (line,) in plan:
            print(f"  {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000], help="live access tokens per database")
    parser.add_argument("--tokens-per-grant", type=int, default=2, help="live access tokens per grant (default 2)")
    parser.add_argument("--batches", type=int, default=9, help="timed batches per database (default 9)")
    parser.add_argument("--lookups", type=int, default=10_000, help="lookups per batch (default 10000)")
    parser.add_argument("--sample", type=int, default=100_000, help="tokens remembered per database to look up")
    parser.add_argument(
        "--warmup", type=int, default=1000, help="untimed lookups per database before the batches (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the choice of tokens")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory with the databases")
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="DIR",
        help="SQLite: build the databases in DIR (kept) and reuse them on later runs when the schema, size, "
        "--tokens-per-grant and --sample match; otherwise a temporary directory, removed unless --keep",
    )
    parser.add_argument("--rebuild", action="store_true", help="with --reuse: rebuild the databases even if they match")
    parser.add_argument(
        "--storage",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="sqlite (default): database files; postgresql: databases on a throw-away PostgreSQL server",
    )
    parser.add_argument(
        "--pg-dir",
        type=Path,
        help="PostgreSQL: directory for the throw-away cluster (default: the system's temporary directory); "
        "it must be reachable by the postgres account when run as root",
    )
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="PostgreSQL: a server setting over the benchmark's (fsync=on, full_page_writes=on, "
        "synchronous_commit=off); repeatable, e.g. --pg-setting shared_buffers=1GB",
    )
    parser.add_argument(
        "--explain", action="store_true", help="PostgreSQL: print EXPLAIN (ANALYZE, BUFFERS) of one lookup per database"
    )
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes))
    if len(sizes) < 2 or sizes[0] < 1 or args.tokens_per_grant < 1 or args.batches < 1 or args.lookups < 1:
        parser.error("give at least two positive --sizes; --tokens-per-grant, --batches and --lookups must be positive")
    postgres = args.storage == "postgresql"
    if postgres and args.reuse is not None:
        parser.error("--reuse keeps SQLite files; a PostgreSQL run builds its databases on a throw-away server")

    if args.reuse is not None:
        root = args.reuse.resolve()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="mob-bench-lookup-"))
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        try:
            server = stack.enter_context(bench_postgres(args.pg_dir, parse_settings(args.pg_setting))) if postgres else None
            print_header(
                "mcp-oauth-bridge token lookup benchmark",
                [
                    ("storage", f"postgresql {postgres_description(server)}" if server is not None else "sqlite"),
                    ("databases", f"{', '.join(f'{s:,}' for s in sizes)} live access tokens, "
                                  f"{args.tokens_per_grant} per grant, under {root}"),
                    ("timing", f"{args.batches} batches x {args.lookups:,} lookups per database, interleaved, "
                               f"after {args.warmup:,} untimed lookups each"),
                ],
            )  # fmt: skip
            if server is not None:
                databases = [
                    build_postgres(
                        size, server, root / f"db-{size}", tokens_per_grant=args.tokens_per_grant, sample_size=args.sample, rng=rng
                    )
                    for size in sizes
                ]
                reset_statistics(databases)
            else:
                databases = [
                    prepare(
                        size,
                        root,
                        tokens_per_grant=args.tokens_per_grant,
                        sample_size=args.sample,
                        rng=rng,
                        reuse=args.reuse is not None,
                        rebuild=args.rebuild,
                    )
                    for size in sizes
                ]
            measure(databases, batches=args.batches, lookups=args.lookups, rng=rng, warmup=args.warmup)
            report(databases, args.batches, args.lookups)
            for database in databases:
                database.close()
            if server is not None:
                # Every operation but engine goes through the buffers once per lookup (engine too).
                operations_timed = len(databases[0].timings)
                report_postgres(databases, args.warmup + args.batches * args.lookups * operations_timed, args.explain)
            print(f"load average at the end: {load_average()}")
            return 0
        finally:
            if args.reuse is not None:
                print(f"databases kept for --reuse in {root}")
            elif args.keep:
                print(f"kept {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
