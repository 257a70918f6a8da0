"""Storage backends as swappable sub-containers of the DI container, chosen by STORAGE_URL's
scheme. Each provides every storage port; the main container takes whichever one is built."""

from __future__ import annotations

from dependency_injector import containers, providers

from ..adapters.storage.crypto import SecretBox
from ..adapters.storage.postgres import (
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
from ..adapters.storage.sqlite import (
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
from ..domain.ports import (
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
from .config import Settings


class StorageContainer(containers.DeclarativeContainer):
    """What every backend provides (the providers a backend leaves out fail when used)."""

    settings = providers.Dependency(instance_of=Settings)
    # Upstream secrets are sealed by the storage backend (records.seal_upstream).
    secret_box = providers.Singleton(SecretBox, settings.provided.encryption_keys)

    # Typed as the ports: a backend's providers must give objects that satisfy them.
    unit_of_work: providers.Provider[UnitOfWork] = providers.Dependency()
    clients: providers.Provider[ClientRepository] = providers.Dependency()
    authorizations: providers.Provider[AuthorizationStore] = providers.Dependency()
    grants: providers.Provider[GrantStore] = providers.Dependency()
    upstream_tokens: providers.Provider[UpstreamTokenStore] = providers.Dependency()
    access_tokens: providers.Provider[AccessTokenStore] = providers.Dependency()
    refresh_tokens: providers.Provider[RefreshTokenStore] = providers.Dependency()
    rate_limit_store: providers.Provider[RateLimitStore] = providers.Dependency()
    # The cache of client ID metadata documents, in the same database (shared by every worker
    # and instance).
    metadata_documents: providers.Provider[MetadataDocumentStore] = providers.Dependency()
    admin: providers.Provider[StorageAdministration] = providers.Dependency()


class SqliteStorage(StorageContainer):
    # One database object per process: the stores share its per-thread connection, so it is
    # also the unit of work.
    database = providers.Singleton(
        SqliteDatabase, StorageContainer.settings.provided.sqlite_path, StorageContainer.secret_box
    )
    unit_of_work = providers.Callable(lambda database: database, database)
    clients = providers.Singleton(SqliteClientRepository, database)
    authorizations = providers.Singleton(SqliteAuthorizationStore, database)
    grants = providers.Singleton(SqliteGrantStore, database)
    upstream_tokens = providers.Singleton(SqliteUpstreamTokenStore, database)
    access_tokens = providers.Singleton(SqliteAccessTokenStore, database)
    refresh_tokens = providers.Singleton(SqliteRefreshTokenStore, database)
    # Rate-limit counters in the same database (unless RATE_LIMIT_STORAGE_URL names a Redis).
    rate_limit_store = providers.Singleton(SqliteRateLimitStore, database)
    metadata_documents = providers.Singleton(SqliteMetadataDocumentStore, database)
    admin = providers.Singleton(
        SqliteAdministration, database, grant_retention=StorageContainer.settings.provided.refresh_token_ttl
    )


class PostgresStorage(StorageContainer):
    # One database object per process; its connection pool opens on first use, so a pool is
    # never inherited across gunicorn's fork (the master closes its own before forking).
    database = providers.Singleton(
        PostgresDatabase,
        StorageContainer.settings.provided.storage_url,
        StorageContainer.secret_box,
        pool_size=StorageContainer.settings.provided.storage_pool_size,
        statement_timeout=StorageContainer.settings.provided.storage_statement_timeout,
        connect_timeout=StorageContainer.settings.provided.storage_connect_timeout,
    )
    unit_of_work = providers.Callable(lambda database: database, database)
    clients = providers.Singleton(PostgresClientRepository, database)
    authorizations = providers.Singleton(PostgresAuthorizationStore, database)
    grants = providers.Singleton(PostgresGrantStore, database)
    upstream_tokens = providers.Singleton(PostgresUpstreamTokenStore, database)
    access_tokens = providers.Singleton(PostgresAccessTokenStore, database)
    refresh_tokens = providers.Singleton(PostgresRefreshTokenStore, database)
    rate_limit_store = providers.Singleton(PostgresRateLimitStore, database)
    metadata_documents = providers.Singleton(PostgresMetadataDocumentStore, database)
    admin = providers.Singleton(
        PostgresAdministration, database, grant_retention=StorageContainer.settings.provided.refresh_token_ttl
    )


# By Settings.storage_backend (STORAGE_URL's scheme).
STORAGE_BACKENDS: dict[str, type[StorageContainer]] = {"sqlite": SqliteStorage, "postgresql": PostgresStorage}


def build_storage(settings: Settings) -> StorageContainer:
    return STORAGE_BACKENDS[settings.storage_backend](settings=settings)
