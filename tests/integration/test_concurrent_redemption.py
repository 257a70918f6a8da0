"""A one-time code redeemed by 8 processes at once is redeemed exactly once (RFC 6749 §4.1.2,
OAuth 2.1 §4.1.3), both at the store and through the token endpoint's service."""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteAuthorizationStore, SqliteDatabase
from mcp_oauth_bridge.adapters.system import SecretsTokenGenerator
from mcp_oauth_bridge.domain.errors import InvalidGrant
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.security import TokenHasher, s256_challenge
from mcp_oauth_bridge.domain.services.housekeeping import Housekeeping
from mcp_oauth_bridge.domain.services.tokens import TokenService
from tests.contract.stores import sqlite_stores
from tests.fakes import FixedClock

from tests.contract.samples import NOW, RESOURCE, make_client, make_code, make_grant, make_upstream_tokens
from .storage_fixtures import sqlite_database, sqlite_key, sqlite_path  # noqa: F401  (fixtures)

PROCESSES = 8
HASH_KEY = b"concurrency-test-token-hash-key-32b"
CODE = "mob_ac_" + "c" * 43
VERIFIER = "v" * 43
POLICY = ServerPolicy(issuer="https://auth.example.com", resource=RESOURCE, scopes_supported=("mcp:read",))
# fork is fast and is how gunicorn makes its workers; elsewhere, spawn.
CONTEXT = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _redeem_at_the_store(path: str, key: str, barrier: Barrier, results: Any) -> None:
    database = SqliteDatabase(path, SecretBox([key]))
    try:
        store = SqliteAuthorizationStore(database)
        database.connection()
        barrier.wait()
        results.put("first" if store.redeem_code(TokenHasher(HASH_KEY).hash(CODE), NOW + 1) else "replay")
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on it
        results.put(f"error: {exc!r}")
    finally:
        database.close()


def _exchange_through_the_token_service(path: str, key: str, barrier: Barrier, results: Any) -> None:
    database = SqliteDatabase(path, SecretBox([key]))
    try:
        stores = sqlite_stores(database)
        clock = FixedClock(NOW + 1)
        service = TokenService(
            clients=stores.clients,
            authorizations=stores.authorizations,
            grants=stores.grants,
            access_tokens=stores.access_tokens,
            refresh_tokens=stores.refresh_tokens,
            unit_of_work=stores.unit_of_work,
            clock=clock,
            tokens=SecretsTokenGenerator(),
            hasher=TokenHasher(HASH_KEY),
            policy=POLICY,
            housekeeping=Housekeeping(clients=stores.clients, storage=stores.admin, clock=clock, policy=POLICY),
        )
        client = stores.clients.get("client-1")
        assert client is not None
        barrier.wait()
        try:
            issued = service.exchange_code(
                client, code=CODE, redirect_uri=None, code_verifier=VERIFIER, resource=RESOURCE
            )
            results.put("tokens" if issued.access_token and issued.refresh_token else "empty")
        except InvalidGrant:
            results.put("invalid_grant")
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on it
        results.put(f"error: {exc!r}")
    finally:
        database.close()


def _seed(database: SqliteDatabase) -> None:
    stores = sqlite_stores(database)
    stores.clients.add(make_client(token_endpoint_auth_method="none", secret_hash=None, scope="mcp:read"))
    stores.grants.add_grant(make_grant(scopes=("mcp:read",)), make_upstream_tokens())
    stores.authorizations.add_code(
        make_code(TokenHasher(HASH_KEY).hash(CODE), code_challenge=s256_challenge(VERIFIER), expires_at=NOW + 60)
    )


def _race(target: Any, path: Path, key: str) -> list[str]:
    barrier = CONTEXT.Barrier(PROCESSES)
    results = CONTEXT.Queue()
    processes = [CONTEXT.Process(target=target, args=(str(path), key, barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return sorted(outcomes)


@pytest.mark.parametrize("round_", range(2))
def test_eight_processes_redeem_one_code_exactly_once(
    sqlite_database: SqliteDatabase, sqlite_path: Path, sqlite_key: str, round_: int  # noqa: F811
) -> None:
    _seed(sqlite_database)
    sqlite_database.close()
    outcomes = _race(_redeem_at_the_store, sqlite_path, sqlite_key)
    assert outcomes == ["first"] + ["replay"] * (PROCESSES - 1)


def test_eight_processes_exchange_one_code_and_exactly_one_gets_tokens(
    sqlite_database: SqliteDatabase, sqlite_path: Path, sqlite_key: str  # noqa: F811
) -> None:
    _seed(sqlite_database)
    sqlite_database.close()
    outcomes = _race(_exchange_through_the_token_service, sqlite_path, sqlite_key)
    assert outcomes == ["invalid_grant"] * (PROCESSES - 1) + ["tokens"]
    # The replays revoked the grant, so even the winner's tokens are now unusable.
    grant = sqlite_stores(sqlite_database).grants.get_grant("grant-1")
    assert grant is not None and grant.is_revoked
