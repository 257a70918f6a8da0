"""SQLite storage: one file (WAL) shared by every worker of one instance.

Every store takes the same ``SqliteDatabase``, which is also the UnitOfWork: the stores use the
calling thread's connection, so a transaction opened by ``atomic()`` spans all of them.
"""

from .admin import SqliteAdministration
from .authorizations import SqliteAuthorizationStore
from .clients import SqliteClientRepository
from .database import SqliteDatabase
from .documents import SqliteMetadataDocumentStore
from .grants import SqliteGrantStore, SqliteUpstreamTokenStore
from .ratelimit import SqliteRateLimitStore
from .tokens import SqliteAccessTokenStore, SqliteRefreshTokenStore

__all__ = [
    "SqliteAccessTokenStore",
    "SqliteAdministration",
    "SqliteAuthorizationStore",
    "SqliteClientRepository",
    "SqliteDatabase",
    "SqliteGrantStore",
    "SqliteMetadataDocumentStore",
    "SqliteRateLimitStore",
    "SqliteRefreshTokenStore",
    "SqliteUpstreamTokenStore",
]
