"""The dependency-injection container: the only place that knows every adapter."""

from __future__ import annotations

from dependency_injector import containers, providers

from importlib import metadata as package_metadata

from ..adapters.audit_log import JsonAuditLog
from ..adapters.metrics import PrometheusTelemetry
from ..domain.telemetry import MeasuredIdentityProvider
from ..adapters.http.mcp import OriginPolicy
from ..adapters.http.mcp_protocol import McpServer, ServerInfo
from ..adapters.identity.entra import EntraIdentityProvider
from ..adapters.identity.fake import FakeIdentityProvider
from ..adapters.identity.oidc import OidcIdentityProvider
from ..adapters.metadata_fetcher import SafeMetadataFetcher
from ..adapters.pinned_client_documents import load_pinned_documents
from ..adapters.system import SecretsTokenGenerator, SystemClock
from ..adapters.tools.graph_mail import GraphMailToolset
from ..adapters.tools.identity import IdentityToolset
from ..adapters.web_url import AdaWebUrlParser
from ..domain.policy import ServerPolicy
from ..domain.security import TokenHasher
from ..domain.services.administration import AdministrationService
from ..domain.services.authorization import AuthorizationService
from ..domain.services.bearer import BearerAuthenticator
from ..domain.services.clients import ClientDirectory
from ..domain.services.connections import ConnectionsService
from ..domain.services.housekeeping import Housekeeping
from ..domain.services.registration import RegistrationService
from ..domain.ports import Telemetry, Toolset
from ..domain.services.tokens import ClientAuthenticator, TokenService
from ..domain.services.tools import ToolService
from ..domain.services.upstream import UpstreamTokenService
from .config import Settings
from .storage import StorageContainer, build_storage

SERVER_NAME = "mcp-oauth-bridge"
INSTRUCTIONS = "Tools of your organisation, used on behalf of the signed-in person."


def build_toolsets(settings: Settings, telemetry: Telemetry | None = None) -> list[Toolset]:
    toolsets: list[Toolset] = []
    for name in settings.toolsets:
        if name == "identity":
            toolsets.append(IdentityToolset())
        elif name == "mail":
            toolsets.append(GraphMailToolset(base_url=settings.graph_base_url, telemetry=telemetry))
    return toolsets


def entra_scopes(settings: Settings) -> tuple[str, ...]:
    """What to ask Entra ID for: AZURE_SCOPES plus what the enabled toolsets' APIs need."""
    assert settings.entra is not None
    needed = GraphMailToolset.upstream_scopes if "mail" in settings.toolsets else ()
    return tuple(dict.fromkeys(settings.entra.scopes + needed))


def server_info() -> ServerInfo:
    try:
        version = package_metadata.version(SERVER_NAME)
    except package_metadata.PackageNotFoundError:
        version = "0"
    return ServerInfo(name=SERVER_NAME, version=version, instructions=INSTRUCTIONS)


def server_policy(settings: Settings, tools: ToolService) -> ServerPolicy:
    return ServerPolicy(
        issuer=settings.issuer,
        resource=settings.mcp_resource,
        # What the enabled tools need, then any extra scopes configured.
        scopes_supported=tuple(dict.fromkeys(tools.scopes() + settings.extra_scopes)),
        access_token_ttl=settings.access_token_ttl,
        refresh_token_ttl=settings.refresh_token_ttl,
        authorization_code_ttl=settings.authorization_code_ttl,
        refresh_grace_period=settings.refresh_grace_period,
        unused_client_ttl=settings.unused_client_ttl,
        idle_client_ttl=settings.idle_client_ttl,
        purge_interval=settings.purge_interval,
        extra_redirect_schemes=settings.extra_redirect_schemes,
        client_registration=settings.client_registration,
        redirect_uri_allowlist=settings.redirect_uri_allowlist,
        metadata_documents=settings.metadata_documents,
        service_name=settings.service_name,
        access_policy=settings.access_policy,
        access_denied_contact=settings.access_denied_contact,
        grant_max_lifetime=settings.grant_max_lifetime,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    config = providers.Configuration()

    clock = providers.Singleton(SystemClock)
    token_generator = providers.Singleton(SecretsTokenGenerator)
    # The WHATWG parse browsers make, for redirect URIs and what the consent page shows.
    web_urls = providers.Singleton(AdaWebUrlParser)
    hasher = providers.Singleton(lambda keys: TokenHasher(*keys), settings.provided.token_hash_keys)
    # Security events (AUDIT_LOG_FILE, else stderr); client addresses as the rate limits see them.
    audit_log = providers.Singleton(
        JsonAuditLog,
        path=settings.provided.audit_log_file,
        forwarded_allow_ips=settings.provided.rate_limits.forwarded_allow_ips,
    )

    # Storage is a sub-container chosen by the STORAGE_URL scheme (entrypoints/storage.py).
    storage = providers.DependenciesContainer()
    unit_of_work = storage.unit_of_work
    clients = storage.clients
    authorizations = storage.authorizations
    grants = storage.grants
    upstream_token_store = storage.upstream_tokens
    access_tokens = storage.access_tokens
    refresh_tokens = storage.refresh_tokens
    rate_limit_store = storage.rate_limit_store
    storage_admin = storage.admin
    metadata_documents = storage.metadata_documents

    # The upstream identity provider is chosen by IDP_PROVIDER.
    identity_provider = providers.Selector(
        config.idp,
        fake=providers.Singleton(
            FakeIdentityProvider,
            public_url=settings.provided.public_url,
            signing_keys=settings.provided.token_hash_keys,
            clock=clock,
            tokens=token_generator,
        ),
        azure=providers.Singleton(
            EntraIdentityProvider,
            tenant=settings.provided.entra.tenant,
            client_id=settings.provided.entra.client_id,
            client_secret=settings.provided.entra.client_secret,
            client_certificate=settings.provided.entra.client_certificate,
            authority_host=settings.provided.entra.authority_host,
            scopes=providers.Callable(entra_scopes, settings),
            allowed_tenants=settings.provided.entra.allowed_tenants,
            allowed_groups=settings.provided.entra.allowed_groups,
            graph_base_url=settings.provided.graph_base_url,
            redirect_uri=settings.provided.upstream_redirect_uri,
            clock=clock,
        ),
        oidc=providers.Singleton(
            OidcIdentityProvider,
            issuer=settings.provided.oidc.issuer,
            client_id=settings.provided.oidc.client_id,
            client_secret=settings.provided.oidc.client_secret,
            scopes=settings.provided.oidc.scopes,
            prompt_consent=settings.provided.oidc.prompt_consent,
            policy_claims=settings.provided.access_policy.claims,
            redirect_uri=settings.provided.upstream_redirect_uri,
            clock=clock,
        ),
    )

    # Metrics (issue 11 §4): the domain's counts, and every upstream call timed.
    telemetry = providers.Singleton(PrometheusTelemetry)
    measured_identity_provider = providers.Singleton(MeasuredIdentityProvider, identity_provider, telemetry)

    upstream_tokens = providers.Singleton(
        UpstreamTokenService,
        grants=grants,
        upstream_tokens=upstream_token_store,
        identity_provider=measured_identity_provider,
        clock=clock,
        tokens=token_generator,
        access_policy=settings.provided.access_policy,
        audit=audit_log,
    )
    # The tools decide which scopes the server offers.
    toolsets = providers.Singleton(build_toolsets, settings, telemetry)
    tool_service = providers.Singleton(ToolService, toolsets=toolsets, upstream=upstream_tokens)
    policy = providers.Singleton(server_policy, settings, tool_service)

    housekeeping = providers.Singleton(Housekeeping, clients=clients, storage=storage_admin, clock=clock, policy=policy)
    registration_service = providers.Singleton(
        RegistrationService,
        clients=clients,
        clock=clock,
        tokens=token_generator,
        hasher=hasher,
        policy=policy,
        web_urls=web_urls,
        housekeeping=housekeeping,
        audit=audit_log,
    )
    # Client ID metadata documents: fetched safely, cached in storage; Claude's shipped copy.
    metadata_fetcher = providers.Singleton(
        SafeMetadataFetcher, allow_loopback=settings.provided.metadata_documents.allow_loopback
    )
    pinned_documents = providers.Singleton(load_pinned_documents)
    client_directory = providers.Singleton(
        ClientDirectory,
        clients=clients,
        documents=metadata_documents,
        fetcher=metadata_fetcher,
        pinned=pinned_documents,
        clock=clock,
        policy=policy,
        web_urls=web_urls,
    )
    authorization_service = providers.Singleton(
        AuthorizationService,
        directory=client_directory,
        authorizations=authorizations,
        grants=grants,
        unit_of_work=unit_of_work,
        identity_provider=measured_identity_provider,
        clock=clock,
        tokens=token_generator,
        hasher=hasher,
        policy=policy,
        web_urls=web_urls,
        housekeeping=housekeeping,
        audit=audit_log,
    )
    connections_service = providers.Singleton(
        ConnectionsService,
        grants=grants,
        clients=clients,
        identity_provider=measured_identity_provider,
        clock=clock,
        tokens=token_generator,
        audit=audit_log,
    )
    client_authenticator = providers.Singleton(ClientAuthenticator, directory=client_directory, clients=clients, hasher=hasher)
    token_service = providers.Singleton(
        TokenService,
        clients=clients,
        authorizations=authorizations,
        grants=grants,
        access_tokens=access_tokens,
        refresh_tokens=refresh_tokens,
        unit_of_work=unit_of_work,
        clock=clock,
        tokens=token_generator,
        hasher=hasher,
        policy=policy,
        housekeeping=housekeeping,
        upstream=upstream_tokens,
        audit=audit_log,
        telemetry=telemetry,
    )
    # The administration CLI (clients, grants).
    administration_service = providers.Singleton(
        AdministrationService, clients=clients, grants=grants, unit_of_work=unit_of_work, clock=clock, audit=audit_log
    )
    bearer_authenticator = providers.Singleton(
        BearerAuthenticator, access_tokens=access_tokens, clock=clock, hasher=hasher, policy=policy
    )

    mcp_server = providers.Singleton(McpServer, tools=tool_service, info=providers.Callable(server_info))
    mcp_origins = providers.Singleton(
        OriginPolicy, public_origin=settings.provided.public_url, allowed=settings.provided.mcp_allowed_origins
    )


def build_container(settings: Settings, *, storage: StorageContainer | None = None) -> Container:
    container = Container(settings=settings, storage=storage or build_storage(settings))
    container.config.from_dict({"idp": settings.idp_provider})
    return container
