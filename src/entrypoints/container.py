"""The dependency-injection container: the only place that knows every adapter."""

from __future__ import annotations

from dependency_injector import containers, providers

from ..adapters.identity.fake import FakeIdentityProvider
from ..adapters.storage.crypto import SecretBox
from ..adapters.storage.sqlite import (
    SqliteAuthorizationStore,
    SqliteClientRepository,
    SqliteDatabase,
    SqliteGrantStore,
)
from ..adapters.system import SecretsTokenGenerator, SystemClock
from ..domain.policy import ServerPolicy
from ..domain.security import TokenHasher
from ..domain.services.authorization import AuthorizationService
from ..domain.services.bearer import BearerAuthenticator
from ..domain.services.registration import RegistrationService
from ..domain.services.tokens import ClientAuthenticator, TokenService
from .config import Settings


def server_policy(settings: Settings) -> ServerPolicy:
    return ServerPolicy(
        issuer=settings.issuer,
        resource=settings.mcp_resource,
        scopes_supported=settings.scopes,
        access_token_ttl=settings.access_token_ttl,
        refresh_token_ttl=settings.refresh_token_ttl,
        authorization_code_ttl=settings.authorization_code_ttl,
        refresh_grace_period=settings.refresh_grace_period,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    config = providers.Configuration()

    policy = providers.Singleton(server_policy, settings)
    clock = providers.Singleton(SystemClock)
    token_generator = providers.Singleton(SecretsTokenGenerator)
    hasher = providers.Singleton(TokenHasher, key=settings.provided.token_hash_key)
    secret_box = providers.Singleton(SecretBox, settings.provided.encryption_keys)

    # Storage is chosen by the STORAGE_URL scheme.
    database = providers.Selector(
        config.storage,
        sqlite=providers.Singleton(SqliteDatabase, settings.provided.sqlite_path, secret_box),
    )
    clients = providers.Selector(config.storage, sqlite=providers.Singleton(SqliteClientRepository, database))
    authorizations = providers.Selector(config.storage, sqlite=providers.Singleton(SqliteAuthorizationStore, database))
    grants = providers.Selector(
        config.storage,
        sqlite=providers.Singleton(SqliteGrantStore, database, grant_retention=settings.provided.refresh_token_ttl),
    )

    # The upstream identity provider is chosen by IDP_PROVIDER.
    identity_provider = providers.Selector(
        config.idp,
        fake=providers.Singleton(
            FakeIdentityProvider,
            public_url=settings.provided.public_url,
            signing_key=settings.provided.token_hash_key,
            clock=clock,
            tokens=token_generator,
        ),
    )

    registration_service = providers.Singleton(
        RegistrationService, clients=clients, clock=clock, tokens=token_generator, hasher=hasher, policy=policy
    )
    authorization_service = providers.Singleton(
        AuthorizationService,
        clients=clients,
        authorizations=authorizations,
        grants=grants,
        identity_provider=identity_provider,
        clock=clock,
        tokens=token_generator,
        hasher=hasher,
        policy=policy,
    )
    client_authenticator = providers.Singleton(ClientAuthenticator, clients=clients, hasher=hasher)
    token_service = providers.Singleton(
        TokenService,
        clients=clients,
        authorizations=authorizations,
        grants=grants,
        clock=clock,
        tokens=token_generator,
        hasher=hasher,
        policy=policy,
    )
    bearer_authenticator = providers.Singleton(
        BearerAuthenticator, grants=grants, clock=clock, hasher=hasher, policy=policy
    )


def build_container(settings: Settings) -> Container:
    container = Container(settings=settings)
    container.config.from_dict({"storage": settings.storage_scheme, "idp": settings.idp_provider})
    return container
