"""Every storage port of one backend, bundled (``Stores``), for the contract and other storage tests."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_oauth_bridge.adapters.storage.postgres import (
    PostgresAccessTokenStore,
    PostgresAdministration,
    PostgresAuthorizationStore,
    PostgresClientRepository,
    PostgresDatabase,
    PostgresGrantStore,
    PostgresMetadataDocumentStore,
    PostgresRateLimitStore,
    PostgresRefreshTokenStore,
    PostgresUpstreamTokenStore,
)
from mcp_oauth_bridge.adapters.storage.records import DEFAULT_GRANT_RETENTION
from mcp_oauth_bridge.adapters.storage.sqlite import (
    SqliteAccessTokenStore,
    SqliteAdministration,
    SqliteAuthorizationStore,
    SqliteClientRepository,
    SqliteDatabase,
    SqliteGrantStore,
    SqliteMetadataDocumentStore,
    SqliteRateLimitStore,
    SqliteRefreshTokenStore,
    SqliteUpstreamTokenStore,
)
from mcp_oauth_bridge.domain.ports import (
    AccessTokenStore,
    AuthorizationStore,
    ClientRepository,
    GrantStore,
    MetadataDocumentStore,
    RateLimitStore,
    RefreshTokenStore,
    StorageAdministration,
    UnitOfWork,
    UpstreamTokenStore,
)
from tests.fakes import InMemoryClientRepository, InMemoryRateLimitStore, InMemoryStorage


@dataclass(frozen=True)
class Stores:
    """Every storage port of one backend, on one database."""

    unit_of_work: UnitOfWork
    clients: ClientRepository
    authorizations: AuthorizationStore
    grants: GrantStore
    upstream_tokens: UpstreamTokenStore
    access_tokens: AccessTokenStore
    refresh_tokens: RefreshTokenStore
    rate_limits: RateLimitStore
    admin: StorageAdministration
    documents: MetadataDocumentStore


def memory_stores() -> Stores:
    storage = InMemoryStorage()
    return Stores(
        unit_of_work=storage,
        clients=InMemoryClientRepository(storage),
        authorizations=storage,
        grants=storage,
        upstream_tokens=storage,
        access_tokens=storage,
        refresh_tokens=storage,
        rate_limits=InMemoryRateLimitStore(),
        admin=storage,
        documents=storage,
    )


def sqlite_stores(database: SqliteDatabase, *, grant_retention: int = DEFAULT_GRANT_RETENTION) -> Stores:
    return Stores(
        unit_of_work=database,
        clients=SqliteClientRepository(database),
        authorizations=SqliteAuthorizationStore(database),
        grants=SqliteGrantStore(database),
        upstream_tokens=SqliteUpstreamTokenStore(database),
        access_tokens=SqliteAccessTokenStore(database),
        refresh_tokens=SqliteRefreshTokenStore(database),
        rate_limits=SqliteRateLimitStore(database),
        admin=SqliteAdministration(database, grant_retention=grant_retention),
        documents=SqliteMetadataDocumentStore(database),
    )


def postgres_stores(database: PostgresDatabase, *, grant_retention: int = DEFAULT_GRANT_RETENTION) -> Stores:
    return Stores(
        unit_of_work=database,
        clients=PostgresClientRepository(database),
        authorizations=PostgresAuthorizationStore(database),
        grants=PostgresGrantStore(database),
        upstream_tokens=PostgresUpstreamTokenStore(database),
        access_tokens=PostgresAccessTokenStore(database),
        refresh_tokens=PostgresRefreshTokenStore(database),
        rate_limits=PostgresRateLimitStore(database),
        admin=PostgresAdministration(database, grant_retention=grant_retention),
        documents=PostgresMetadataDocumentStore(database),
    )
