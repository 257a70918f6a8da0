"""The server's identity and limits, as the services need them (issuer, resource, lifetimes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .access_policy import AccessPolicy
from .client_documents import MetadataDocumentPolicy, RedirectUriAllowlist
from .model import DYNAMIC_CLIENT_KIND, METADATA_DOCUMENT_CLIENT_KIND, OPERATOR_CLIENT_KIND

# CLIENT_REGISTRATION: who may become a client, as the kinds of client each mode accepts.
REGISTRATION_OPEN = "open"
REGISTRATION_METADATA_DOCUMENTS = "metadata-documents"
REGISTRATION_CLOSED = "closed"
ACCEPTED_CLIENT_KINDS = {
    # Dynamic Client Registration (RFC 7591), client ID metadata documents, operator clients.
    REGISTRATION_OPEN: frozenset({DYNAMIC_CLIENT_KIND, METADATA_DOCUMENT_CLIENT_KIND, OPERATOR_CLIENT_KIND}),
    # /register is closed, and clients it registered before are no longer accepted.
    REGISTRATION_METADATA_DOCUMENTS: frozenset({METADATA_DOCUMENT_CLIENT_KIND, OPERATOR_CLIENT_KIND}),
    REGISTRATION_CLOSED: frozenset({OPERATOR_CLIENT_KIND}),
}


@dataclass(frozen=True)
class ServerPolicy:
    # RFC 8414 §2: the issuer identifier; RFC 9207 §2: sent as ``iss`` in authorization responses.
    issuer: str
    # RFC 8707 / RFC 9728: the one protected resource tokens are issued for (PUBLIC_URL + "/mcp").
    resource: str
    scopes_supported: tuple[str, ...]
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    authorization_code_ttl: int = 60
    pending_authorization_ttl: int = 600
    refresh_grace_period: int = 60
    # A dynamically registered client that never completed an authorization is deleted after
    # unused_client_ttl; one without a live grant after idle_client_ttl since its last use.
    unused_client_ttl: int = 24 * 3600
    idle_client_ttl: int = 90 * 24 * 3600
    # Expired rows are purged opportunistically at most this often per process.
    purge_interval: int = 3600
    # App schemes admitted in redirect URIs besides https, loopback http and reverse-domain
    # private-use schemes (EXTRA_REDIRECT_SCHEMES; never one a browser hands to the OS).
    extra_redirect_schemes: tuple[str, ...] = ()
    # CLIENT_REGISTRATION (one of ACCEPTED_CLIENT_KINDS' keys).
    client_registration: str = REGISTRATION_OPEN
    # REDIRECT_URI_ALLOWLIST: what self-declared clients may redirect to.
    redirect_uri_allowlist: RedirectUriAllowlist = field(default_factory=RedirectUriAllowlist)
    # CIMD_*: client ID metadata documents.
    metadata_documents: MetadataDocumentPolicy = field(default_factory=MetadataDocumentPolicy)
    # The organisation or service the pages name (SERVICE_NAME): "… wants to use your tools at
    # Contoso". Empty: the pages name the issuer's host.
    service_name: str = ""
    # Who may connect (AZURE_ALLOWED_GROUPS, AZURE_REQUIRED_APP_ROLES, OIDC_REQUIRED_CLAIMS),
    # checked at sign-in and again whenever the upstream session is refreshed.
    access_policy: AccessPolicy = field(default_factory=AccessPolicy)
    # Whom the access-denied page tells a person to ask (ACCESS_DENIED_CONTACT).
    access_denied_contact: str = ""
    # GRANT_MAX_LIFETIME: past it a grant's refresh tokens stop working; the person signs in again.
    grant_max_lifetime: int = 30 * 24 * 3600

    def __post_init__(self) -> None:
        for name in (
            "access_token_ttl",
            "refresh_token_ttl",
            "authorization_code_ttl",
            "pending_authorization_ttl",
            "unused_client_ttl",
            "idle_client_ttl",
            "purge_interval",
            "grant_max_lifetime",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.client_registration not in ACCEPTED_CLIENT_KINDS:
            raise ValueError(f"client_registration must be one of {', '.join(ACCEPTED_CLIENT_KINDS)}")
        if self.refresh_grace_period < 0:
            raise ValueError("refresh_grace_period must not be negative")

    @property
    def accepted_client_kinds(self) -> frozenset[str]:
        return ACCEPTED_CLIENT_KINDS[self.client_registration]

    @property
    def dynamic_registration_open(self) -> bool:
        return DYNAMIC_CLIENT_KIND in self.accepted_client_kinds

    @property
    def metadata_documents_accepted(self) -> bool:
        return METADATA_DOCUMENT_CLIENT_KIND in self.accepted_client_kinds
