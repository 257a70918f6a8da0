"""A small harness that wires the domain services to the in-memory fakes (no Flask, no SQLite)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mcp_oauth_bridge.domain.model import AccessToken, Grant, IssuedTokens, RefreshToken
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.domain.services.authorization import AuthorizationService, ConsentPrompt
from mcp_oauth_bridge.domain.services.bearer import BearerAuthenticator
from mcp_oauth_bridge.domain.services.clients import ClientDirectory
from mcp_oauth_bridge.domain.services.housekeeping import Housekeeping
from mcp_oauth_bridge.domain.services.registration import RegisteredClient, RegistrationService
from mcp_oauth_bridge.domain.services.tokens import ClientAuthenticator, TokenService
from mcp_oauth_bridge.domain.services.upstream import UpstreamTokenService
from tests.fakes import (
    FixedClock,
    InMemoryClientRepository,
    InMemoryStorage,
    RecordingAuditTrail,
    RecordedWebUrlParser,
    ScriptedIdentityProvider,
    ScriptedMetadataFetcher,
    SequentialTokenGenerator,
)

NOW = 1_700_000_000
ISSUER = "https://auth.example.com"
RESOURCE = "https://auth.example.com/mcp"
SCOPES = ("mcp:read", "mcp:write")
HASH_KEY = b"unit-test-token-hash-key-32bytes!"
REDIRECT_URI = "https://client.example/callback"
BROWSER = "browser-cookie-1"
UPSTREAM_CODE = "upstream-code-1"
# RFC 7636 Appendix B.
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def query(url: str) -> dict[str, str]:
    """The query parameters of a redirect URL, one value each (asserting none is repeated)."""
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parsed.values()), parsed
    return {name: values[0] for name, values in parsed.items()}


def base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class World:
    clock: FixedClock
    tokens: SequentialTokenGenerator
    clients: InMemoryClientRepository
    storage: InMemoryStorage
    idp: ScriptedIdentityProvider
    hasher: TokenHasher
    policy: ServerPolicy
    housekeeping: Housekeeping
    registration: RegistrationService
    authorization: AuthorizationService
    token_service: TokenService
    client_auth: ClientAuthenticator
    bearer: BearerAuthenticator
    fetcher: ScriptedMetadataFetcher
    directory: ClientDirectory
    # Every IdP URL handed out by decide(), newest last.
    idp_urls: list[str] = field(default_factory=list)
    # Every security event the services recorded.
    audit: RecordingAuditTrail = field(default_factory=RecordingAuditTrail)

    # -- registration ---------------------------------------------------------------------------

    def register(self, **metadata: Any) -> RegisteredClient:
        """A public client (token_endpoint_auth_method=none) unless told otherwise."""
        document: dict[str, Any] = {
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "client_name": "Test Client",
        }
        document.update(metadata)
        return self.registration.register(document)

    def register_confidential(self, **metadata: Any) -> RegisteredClient:
        return self.register(token_endpoint_auth_method="client_secret_post", **metadata)

    # -- authorization --------------------------------------------------------------------------

    def authorize_params(self, registered: RegisteredClient, **overrides: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": registered.client.client_id,
            "redirect_uri": registered.client.redirect_uris[0],
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
            "state": "client-state-1",
            "resource": RESOURCE,
        }
        params.update(overrides)
        return {name: value for name, value in params.items() if value is not None}

    def start(self, registered: RegisteredClient, *, browser_id: str | None = BROWSER, **overrides: str | None) -> ConsentPrompt:
        return self.authorization.start(self.authorize_params(registered, **overrides), browser_id=browser_id)

    def approve(self, prompt: ConsentPrompt) -> str:
        url = self.authorization.decide(
            pending_id=prompt.pending_id,
            csrf_token=prompt.csrf_token,
            browser_id=prompt.browser_id,
            approved=True,
        )
        self.idp_urls.append(url)
        return url

    def callback(self, idp_url: str, *, code: str | None = UPSTREAM_CODE, error: str | None = None,
                 browser_id: str | None = BROWSER, error_description: str | None = None) -> str:
        return self.authorization.complete_upstream_login(
            state=query(idp_url)["state"], code=code, error=error, browser_id=browser_id,
            error_description=error_description,
        )

    def authorize_and_get_code(self, registered: RegisteredClient, **overrides: str | None) -> str:
        prompt = self.start(registered, **overrides)
        redirect = self.callback(self.approve(prompt))
        return query(redirect)["code"]

    # -- token endpoint -------------------------------------------------------------------------

    def exchange(
        self,
        registered: RegisteredClient,
        code: str,
        *,
        code_verifier: str | None = VERIFIER,
        redirect_uri: str | None = REDIRECT_URI,
        resource: str | None = RESOURCE,
    ) -> IssuedTokens:
        return self.token_service.exchange_code(
            registered.client,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            resource=resource,
        )

    def login(self, registered: RegisteredClient, **overrides: str | None) -> IssuedTokens:
        """Authorization code + PKCE from start to token response."""
        code = self.authorize_and_get_code(registered, **overrides)
        redirect_uri = overrides.get("redirect_uri", registered.client.redirect_uris[0])
        return self.exchange(registered, code, redirect_uri=redirect_uri)

    def refresh(self, registered: RegisteredClient, refresh_token: str | None, *, scope: str | None = None,
                resource: str | None = RESOURCE) -> IssuedTokens:
        return self.token_service.refresh(
            registered.client, refresh_token=refresh_token, scope=scope, resource=resource
        )

    # -- inspection -----------------------------------------------------------------------------

    def access_record(self, token: str) -> AccessToken:
        return self.storage.access_tokens[self.hasher.hash(token)]

    def refresh_record(self, token: str) -> RefreshToken:
        return self.storage.refresh_tokens[self.hasher.hash(token)]

    def only_grant(self) -> Grant:
        assert len(self.storage.grants) == 1
        return next(iter(self.storage.grants.values()))

    def active(self, registered: RegisteredClient, token: str) -> bool:
        return self.token_service.introspect(registered.client, token=token, token_type_hint=None).active


def build_world(
    policy: ServerPolicy | None = None,
    *,
    pinned: dict[str, Any] | None = None,
    hash_keys: tuple[bytes, ...] = (HASH_KEY,),
    restart_of: World | None = None,
) -> World:
    """A world of services over in-memory storage; ``restart_of`` another world: the same storage,
    clock, identity provider and randomness, as a server restarted with other ``hash_keys``."""
    if restart_of is None:
        clock, tokens, storage = FixedClock(NOW), SequentialTokenGenerator(), InMemoryStorage()
        clients, idp = InMemoryClientRepository(storage), ScriptedIdentityProvider()
        fetcher, audit = ScriptedMetadataFetcher(), RecordingAuditTrail()
    else:
        clock, tokens, storage = restart_of.clock, restart_of.tokens, restart_of.storage
        clients, idp = restart_of.clients, restart_of.idp
        fetcher, audit = restart_of.fetcher, restart_of.audit
        policy = policy or restart_of.policy
    hasher = TokenHasher(*hash_keys)
    policy = policy or ServerPolicy(issuer=ISSUER, resource=RESOURCE, scopes_supported=SCOPES)
    web_urls = RecordedWebUrlParser()
    housekeeping = Housekeeping(clients=clients, storage=storage, clock=clock, policy=policy)
    directory = ClientDirectory(
        clients=clients, documents=storage, fetcher=fetcher, pinned=pinned or {}, clock=clock, policy=policy, web_urls=web_urls
    )
    return World(
        audit=audit,
        fetcher=fetcher,
        directory=directory,
        clock=clock,
        tokens=tokens,
        clients=clients,
        storage=storage,
        idp=idp,
        hasher=hasher,
        policy=policy,
        housekeeping=housekeeping,
        registration=RegistrationService(
            clients=clients,
            clock=clock,
            tokens=tokens,
            hasher=hasher,
            policy=policy,
            housekeeping=housekeeping,
            web_urls=web_urls,
            audit=audit,
        ),
        authorization=AuthorizationService(
            directory=directory,
            authorizations=storage,
            grants=storage,
            unit_of_work=storage,
            identity_provider=idp,
            clock=clock,
            tokens=tokens,
            hasher=hasher,
            policy=policy,
            web_urls=web_urls,
            housekeeping=housekeeping,
            audit=audit,
        ),
        token_service=TokenService(
            clients=clients,
            authorizations=storage,
            grants=storage,
            access_tokens=storage,
            refresh_tokens=storage,
            unit_of_work=storage,
            clock=clock,
            tokens=tokens,
            hasher=hasher,
            policy=policy,
            housekeeping=housekeeping,
            upstream=UpstreamTokenService(
                grants=storage,
                upstream_tokens=storage,
                identity_provider=idp,
                clock=clock,
                tokens=tokens,
                access_policy=policy.access_policy,
                audit=audit,
            ),
            audit=audit,
        ),
        client_auth=ClientAuthenticator(directory=directory, clients=clients, hasher=hasher),
        bearer=BearerAuthenticator(access_tokens=storage, clock=clock, hasher=hasher, policy=policy),
    )


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def public_client(world: World) -> RegisteredClient:
    return world.register()


@pytest.fixture
def confidential_client(world: World) -> RegisteredClient:
    return world.register_confidential()
