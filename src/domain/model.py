"""The authorization server's records: clients (RFC 7591), pending authorizations, grants,
codes and tokens (RFC 6749). Secrets appear here only as keyed hashes, except the upstream
tokens, which the storage adapters encrypt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

PUBLIC_CLIENT_AUTH_METHOD = "none"
# The kinds of client (a stored column). Clients registered through RFC 7591 Dynamic Client
# Registration: only these are deleted when unused.
DYNAMIC_CLIENT_KIND = "registered"
# Created by an operator (``mcp-oauth-bridge clients add``): trusted, never reaped.
OPERATOR_CLIENT_KIND = "operator"
# Identified by the https URL of its client ID metadata document
# (draft-ietf-oauth-client-id-metadata-document): the row keeps the client's identity (grants
# reference it); the document itself is cached apart (MetadataDocumentStore).
METADATA_DOCUMENT_CLIENT_KIND = "metadata_document"
CLIENT_KINDS = (DYNAMIC_CLIENT_KIND, OPERATOR_CLIENT_KIND, METADATA_DOCUMENT_CLIENT_KIND)


@dataclass(frozen=True)
class Client:
    """A registered OAuth client (RFC 7591 §2 metadata)."""

    client_id: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    issued_at: int
    client_name: str | None = None
    scope: str | None = None
    # Every other metadata field the client registered, echoed back in the registration response.
    extra_metadata: Mapping[str, Any] = field(default_factory=dict)
    secret_hash: str | None = None
    kind: str = DYNAMIC_CLIENT_KIND
    last_used_at: int | None = None
    # RFC 7592 §3: the registration access token of a DCR client, as a keyed hash.
    registration_token_hash: str | None = None
    # When an operator disabled it (`clients disable`); None while it is enabled.
    disabled_at: int | None = None

    @property
    def is_disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == PUBLIC_CLIENT_AUTH_METHOD

    @property
    def is_operator_created(self) -> bool:
        return self.kind == OPERATOR_CLIENT_KIND

    @property
    def is_metadata_document(self) -> bool:
        return self.kind == METADATA_DOCUMENT_CLIENT_KIND

    @property
    def display_name(self) -> str:
        return self.client_name or self.client_id

    def metadata(self) -> dict[str, Any]:
        """The client's registered metadata, as RFC 7591 §3.2.1 returns it."""
        document: dict[str, Any] = dict(self.extra_metadata)
        document.update(
            client_id=self.client_id,
            client_id_issued_at=self.issued_at,
            redirect_uris=list(self.redirect_uris),
            grant_types=list(self.grant_types),
            response_types=list(self.response_types),
            token_endpoint_auth_method=self.token_endpoint_auth_method,
        )
        if self.client_name is not None:
            document["client_name"] = self.client_name
        if self.scope is not None:
            document["scope"] = self.scope
        return document


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request (RFC 6749 §4.1.1 + RFC 7636 §4.3 + RFC 8707 §2)."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    resource: str
    code_challenge: str
    code_challenge_method: str
    state: str | None


@dataclass(frozen=True)
class UpstreamTransaction:
    """What the server needs to finish the upstream login: sent as ``state`` (hashed here),
    PKCE verifier and OIDC nonce (both stored encrypted by the storage adapters)."""

    state_hash: str
    code_verifier: str
    nonce: str


@dataclass(frozen=True)
class PendingAuthorization:
    """An authorization request waiting for consent and then for the upstream login."""

    pending_id: str
    request: AuthorizationRequest
    csrf_token_hash: str
    browser_binding_hash: str
    created_at: int
    expires_at: int
    upstream: UpstreamTransaction | None = None
    consumed_at: int | None = None


@dataclass(frozen=True)
class UpstreamTokens:
    """Tokens obtained from the upstream identity provider on the user's behalf."""

    access_token: str
    expires_at: int
    refresh_token: str | None = None
    scope: str | None = None
    id_token: str | None = None


@dataclass(frozen=True)
class UpstreamIdentity:
    """Who signed in upstream: a stable subject and display claims (name, email, username)."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    # What the access policy is evaluated on (every claim the provider gave, Entra ID's groups
    # resolved); not stored with the grant.
    policy_claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamLogin:
    """The result of exchanging an upstream authorization code."""

    identity: UpstreamIdentity
    tokens: UpstreamTokens


@dataclass(frozen=True)
class Grant:
    """One user's authorization of one client: everything tokens are issued from."""

    grant_id: str
    client_id: str
    subject: str
    claims: Mapping[str, Any]
    scopes: tuple[str, ...]
    resource: str
    created_at: int
    revoked_at: int | None = None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class AuthorizationCode:
    """A one-time code (RFC 6749 §4.1.2) bound to client, redirect URI, PKCE challenge and
    resource."""

    code_hash: str
    grant_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    code_challenge_method: str
    resource: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int
    redeemed_at: int | None = None


@dataclass(frozen=True)
class AccessToken:
    token_hash: str
    grant_id: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    issued_at: int
    expires_at: int
    revoked_at: int | None = None


@dataclass(frozen=True)
class RefreshToken:
    """A refresh token of a grant (RFC 6749 §6). Every rotation issues the next ``generation``;
    only the grant's current generation and the token it replaced are kept, so storage per grant
    stays constant however often it refreshes (domain/refresh_tokens.py)."""

    token_hash: str
    grant_id: str
    client_id: str
    generation: int
    scopes: tuple[str, ...]
    resource: str
    issued_at: int
    expires_at: int
    # Set when this token was exchanged for one of the next generation (rotation).
    rotated_at: int | None = None
    # Set when, after its rotation, it was accepted once more inside the grace window.
    retried_at: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True)
class IssuedTokens:
    """A token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    token_type: str = "Bearer"


@dataclass(frozen=True)
class Introspection:
    """An introspection response (RFC 7662 §2.2)."""

    active: bool
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    token_type: str | None = None
    exp: int | None = None
    iat: int | None = None
    sub: str | None = None
    aud: str | None = None
    iss: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if not self.active:
            # RFC 7662 §2.2: an inactive token reveals nothing else.
            return {"active": False}
        return {key: value for key, value in self.__dict__.items() if value is not None}


@dataclass(frozen=True)
class AccessContext:
    """What a protected resource learns from a valid bearer token."""

    grant: Grant
    client_id: str
    scopes: tuple[str, ...]
    resource: str
    expires_at: int

    @property
    def subject(self) -> str:
        return self.grant.subject
