"""Dynamic Client Registration (RFC 7591 §2, §3) and the redirect URI rules (RFC 8252 §7, OAuth 2.1 §2.3.1)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..errors import InvalidClientMetadata, InvalidRedirectUri
from ..model import Client
from ..policy import ServerPolicy
from ..ports import ClientRepository, Clock, TokenGenerator
from ..security import TokenHasher
from .housekeeping import Housekeeping

SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
SUPPORTED_RESPONSE_TYPES = ("code",)
SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_post", "client_secret_basic", "none")
SUPPORTED_APPLICATION_TYPES = ("web", "native")
# RFC 7591 §2 defaults; grant_types defaults to both because every MCP client refreshes.
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"

MAX_REDIRECT_URIS = 10
MAX_URI_LENGTH = 2000
MAX_NAME_LENGTH = 200
MAX_CONTACTS = 10
# Schemes a browser would execute or read locally instead of navigating to a client.
FORBIDDEN_REDIRECT_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "about", "blob", "filesystem"})
URI_SCHEME_PATTERN = re.compile(r"^[a-z][a-z0-9+.\-]*$")
# Optional human-readable URL fields (RFC 7591 §2) that we echo back.
URL_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
STRING_FIELDS = ("software_id", "software_version")


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    # Returned once, at registration; only its hash is stored.
    client_secret: str | None

    def response(self) -> dict[str, Any]:
        """RFC 7591 §3.2.1 client information response."""
        document = self.client.metadata()
        if self.client_secret is not None:
            document["client_secret"] = self.client_secret
            # RFC 7591 §3.2.1: REQUIRED if client_secret is issued; 0 means it does not expire.
            document["client_secret_expires_at"] = 0
        return document


def is_loopback_host(host: str | None) -> bool:
    """localhost or a loopback address (RFC 8252 §8.3), bracketed IPv6 included."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_redirect_uri(uri: Any) -> str:
    """Return the URI if it may be registered; raise ``InvalidRedirectUri`` saying why not."""
    if not isinstance(uri, str) or not uri:
        raise InvalidRedirectUri("each redirect URI must be a non-empty string")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidRedirectUri(f"redirect URI longer than {MAX_URI_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in uri):
        raise InvalidRedirectUri(f"redirect URI contains whitespace or control characters: {uri!r}")
    # RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component."
    if "#" in uri:
        raise InvalidRedirectUri(f"redirect URI must not contain a fragment: {uri}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not scheme or not URI_SCHEME_PATTERN.fullmatch(scheme):
        raise InvalidRedirectUri(f"redirect URI must be an absolute URI: {uri}")
    if scheme in FORBIDDEN_REDIRECT_SCHEMES:
        raise InvalidRedirectUri(f"redirect URI scheme '{scheme}' is not allowed: {uri}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRedirectUri(f"redirect URI must not contain user information: {uri}")
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        if not host:
            raise InvalidRedirectUri(f"redirect URI has no host: {uri}")
        # OAuth 2.1 §2.3.1 / RFC 8252 §7.3: plain http only for loopback redirects.
        if scheme == "http" and not is_loopback_host(host):
            raise InvalidRedirectUri(f"http redirect URIs are allowed only for loopback hosts (use https): {uri}")
    return uri


def _string_list(metadata: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = metadata.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings")
    return tuple(dict.fromkeys(value))


def _optional_string(metadata: Mapping[str, Any], name: str, max_length: int = MAX_URI_LENGTH) -> str | None:
    value = metadata.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string")
    if len(value) > max_length:
        raise InvalidClientMetadata(f"{name} is longer than {max_length} characters")
    return value


def _web_url(metadata: Mapping[str, Any], name: str) -> str | None:
    value = _optional_string(metadata, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return value
    raise InvalidClientMetadata(f"{name} must be an https URL")


@dataclass(frozen=True)
class ValidatedMetadata:
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    client_name: str | None
    scope: str | None
    extra: Mapping[str, Any]


def validate_client_metadata(metadata: Mapping[str, Any], scopes_supported: tuple[str, ...]) -> ValidatedMetadata:
    """Apply RFC 7591 §2 to a metadata document (DCR body or client ID metadata document)."""
    raw_uris = metadata.get("redirect_uris")
    # RFC 7591 §2: redirect_uris is required for redirect-based flows, which are all we serve.
    if raw_uris is None:
        raise InvalidRedirectUri("redirect_uris is required")
    if not isinstance(raw_uris, list):
        raise InvalidRedirectUri("redirect_uris must be an array of strings")
    if not raw_uris:
        raise InvalidRedirectUri("redirect_uris must contain at least one URI")
    if len(raw_uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUri(f"at most {MAX_REDIRECT_URIS} redirect URIs may be registered")
    redirect_uris = tuple(dict.fromkeys(validate_redirect_uri(uri) for uri in raw_uris))

    grant_types = _string_list(metadata, "grant_types", DEFAULT_GRANT_TYPES)
    unknown = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if unknown:
        raise InvalidClientMetadata(
            f"unsupported grant_types {unknown}; supported: {list(SUPPORTED_GRANT_TYPES)}"
        )
    if "authorization_code" not in grant_types:
        raise InvalidClientMetadata("grant_types must include authorization_code")

    response_types = _string_list(metadata, "response_types", SUPPORTED_RESPONSE_TYPES)
    unknown = [r for r in response_types if r not in SUPPORTED_RESPONSE_TYPES]
    if unknown:
        raise InvalidClientMetadata(f"unsupported response_types {unknown}; supported: ['code']")
    # RFC 7591 §2.1: authorization_code grant goes with the "code" response type.
    if "code" not in response_types:
        raise InvalidClientMetadata("response_types must include code for the authorization_code grant")

    auth_method = _optional_string(metadata, "token_endpoint_auth_method") or DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD
    if auth_method not in SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS:
        raise InvalidClientMetadata(
            f"unsupported token_endpoint_auth_method '{auth_method}'; "
            f"supported: {list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS)}"
        )

    client_name = _optional_string(metadata, "client_name", MAX_NAME_LENGTH)
    if client_name is not None:
        client_name = client_name.strip() or None

    scope = _optional_string(metadata, "scope")
    if scope is not None:
        # RFC 7591 §2: the server may narrow the scope; unknown scopes are dropped.
        kept = [s for s in dict.fromkeys(scope.split()) if s in scopes_supported]
        scope = " ".join(kept) or None

    extra: dict[str, Any] = {}
    for name in URL_FIELDS:
        url = _web_url(metadata, name)
        if url is not None:
            extra[name] = url
    for name in STRING_FIELDS:
        text = _optional_string(metadata, name, MAX_NAME_LENGTH)
        if text is not None:
            extra[name] = text
    application_type = _optional_string(metadata, "application_type")
    if application_type is not None:
        if application_type not in SUPPORTED_APPLICATION_TYPES:
            raise InvalidClientMetadata("application_type must be 'web' or 'native'")
        extra["application_type"] = application_type
    contacts = _string_list(metadata, "contacts", ())
    if len(contacts) > MAX_CONTACTS:
        raise InvalidClientMetadata(f"at most {MAX_CONTACTS} contacts")
    if contacts:
        extra["contacts"] = list(contacts)

    return ValidatedMetadata(
        redirect_uris=redirect_uris,
        grant_types=grant_types,
        response_types=response_types,
        token_endpoint_auth_method=auth_method,
        client_name=client_name,
        scope=scope,
        extra=extra,
    )


class RegistrationService:
    """RFC 7591 §3: register a client from its metadata."""

    def __init__(
        self,
        *,
        clients: ClientRepository,
        clock: Clock,
        tokens: TokenGenerator,
        hasher: TokenHasher,
        policy: ServerPolicy,
        housekeeping: Housekeeping,
    ) -> None:
        self._clients = clients
        self._clock = clock
        self._tokens = tokens
        self._hasher = hasher
        self._policy = policy
        self._housekeeping = housekeeping

    def register(self, metadata: Mapping[str, Any]) -> RegisteredClient:
        validated = validate_client_metadata(metadata, self._policy.scopes_supported)
        client = Client(
            client_id=self._tokens.generate("mob_client_"),
            redirect_uris=validated.redirect_uris,
            grant_types=validated.grant_types,
            response_types=validated.response_types,
            token_endpoint_auth_method=validated.token_endpoint_auth_method,
            issued_at=self._clock.now(),
            client_name=validated.client_name,
            scope=validated.scope,
            extra_metadata=validated.extra,
        )
        secret = None
        if not client.is_public:
            secret = self._tokens.generate("mob_cs_")
            client = replace(client, secret_hash=self._hasher.hash(secret))
        self._clients.add(client)
        # Registrations are what a flood creates: they pay for deleting the unused ones.
        self._housekeeping.tick()
        return RegisteredClient(client=client, client_secret=secret)
