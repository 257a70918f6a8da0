"""PostgreSQL storage: one database shared by every worker of every instance.

Every store takes the same ``PostgresDatabase`` (a connection pool per process), which is also
the UnitOfWork: inside ``atomic()`` the stores use that thread's transaction's connection.
"""

from .admin import PostgresAdministration
from .authorizations import PostgresAuthorizationStore
from .clients import PostgresClientRepository
from .database import PostgresDatabase
from .documents import PostgresMetadataDocumentStore
from .grants import PostgresGrantStore, PostgresUpstreamTokenStore
from .ratelimit import PostgresRateLimitStore
from .tokens import PostgresAccessTokenStore, PostgresRefreshTokenStore

__all__ = [
    "PostgresAccessTokenStore",
    "PostgresAdministration",
    "PostgresAuthorizationStore",
    "PostgresClientRepository",
    "PostgresDatabase",
    "PostgresGrantStore",
    "PostgresMetadataDocumentStore",
    "PostgresRateLimitStore",
    "PostgresRefreshTokenStore",
    "PostgresUpstreamTokenStore",
]
