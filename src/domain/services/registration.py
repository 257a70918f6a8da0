"""Dynamic Client Registration (RFC 7591 §2, §3); the redirect URI rules are in ``domain.uris``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

from ..errors import InvalidClientMetadata, InvalidRedirectUri
from ..model import Client
from ..policy import ServerPolicy
from ..ports import ClientRepository, Clock, TokenGenerator, WebUrlParser
from ..security import TokenHasher
from ..uris import MAX_CLIENT_URL_LENGTH, canonical_client_url, canonical_redirect_uri, is_utf8_encodable
from .housekeeping import Housekeeping

SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
SUPPORTED_RESPONSE_TYPES = ("code",)
SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_post", "client_secret_basic", "none")
SUPPORTED_APPLICATION_TYPES = ("web", "native")
# RFC 7591 §2 defaults; grant_types defaults to both because every MCP client refreshes.
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD = "client_secret_basic"

# Caps (RFC 7591 leaves sizes to the server). Claude registers one redirect URI and a body under
# 1 KiB; these bound every stored client whatever a stranger sends.
MAX_METADATA_DOCUMENT_BYTES = 8 * 1024
MAX_REDIRECT_URIS = 10
MAX_CONTACTS = 10
MAX_CONTACT_LENGTH = 254  # the longest e-mail address (RFC 5321 §4.5.3.1)
# client_name, software_id, software_version.
MAX_NAME_LENGTH = 200
MAX_SCOPE_LENGTH = 1024
# Entries of grant_types / response_types before duplicates are dropped.
MAX_LIST_ENTRIES = 8
# token_endpoint_auth_method, application_type: enumerated values, all short.
MAX_KEYWORD_LENGTH = 64
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


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value (object keys included) with where it is, without recursion
    (a document's nesting is bounded only by its size)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, Mapping):
            for key, child in item.items():
                yield where, str(key)
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))


def _require_utf8(metadata: Mapping[str, Any]) -> None:
    # A lone surrogate ("\ud800" in JSON) cannot be encoded as UTF-8: stored, it would break
    # every page that shows it. Any field, known or not, inside lists and objects too.
    for where, text in _strings(metadata, ""):
        if not is_utf8_encodable(text):
            raise InvalidClientMetadata(f"{where or 'a field name'} contains text that cannot be encoded as UTF-8")


def _string_list(
    metadata: Mapping[str, Any],
    name: str,
    default: tuple[str, ...],
    *,
    max_entries: int = MAX_LIST_ENTRIES,
    max_length: int = MAX_KEYWORD_LENGTH,
) -> tuple[str, ...]:
    value = metadata.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings")
    if len(value) > max_entries:
        raise InvalidClientMetadata(f"{name} has more than {max_entries} entries")
    if any(len(item) > max_length for item in value):
        raise InvalidClientMetadata(f"each entry of {name} must be at most {max_length} characters")
    return tuple(dict.fromkeys(value))


def _optional_string(metadata: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = metadata.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string")
    if len(value) > max_length:
        raise InvalidClientMetadata(f"{name} is longer than {max_length} characters")
    return value


def _redirect_uris(metadata: Mapping[str, Any], web_urls: WebUrlParser, extra_schemes: frozenset[str]) -> tuple[str, ...]:
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
    # Stored in the form a browser uses (punycode hosts); the same URI twice is kept once.
    return tuple(
        dict.fromkeys(
            canonical_redirect_uri(uri, web_urls, name=f"redirect_uris[{index}]", extra_schemes=extra_schemes)
            for index, uri in enumerate(raw_uris)
        )
    )


@dataclass(frozen=True)
class ValidatedMetadata:
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    client_name: str | None
    scope: str | None
    # Only known fields (RFC 7591 §2), validated: an unknown field is never stored or echoed.
    extra: Mapping[str, Any]


def validate_client_metadata(
    metadata: Mapping[str, Any],
    scopes_supported: tuple[str, ...],
    web_urls: WebUrlParser,
    *,
    extra_redirect_schemes: frozenset[str] = frozenset(),
) -> ValidatedMetadata:
    """Apply RFC 7591 §2 to a metadata document (DCR body or client ID metadata document)."""
    _require_utf8(metadata)
    redirect_uris = _redirect_uris(metadata, web_urls, extra_redirect_schemes)

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

    auth_method = _optional_string(metadata, "token_endpoint_auth_method", MAX_KEYWORD_LENGTH)
    auth_method = auth_method or DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD
    if auth_method not in SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS:
        raise InvalidClientMetadata(
            f"unsupported token_endpoint_auth_method '{auth_method}'; "
            f"supported: {list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS)}"
        )

    client_name = _optional_string(metadata, "client_name", MAX_NAME_LENGTH)
    if client_name is not None:
        client_name = client_name.strip() or None

    scope = _optional_string(metadata, "scope", MAX_SCOPE_LENGTH)
    if scope is not None:
        # RFC 7591 §2: the server may narrow the scope; unknown scopes are dropped.
        kept = [s for s in dict.fromkeys(scope.split()) if s in scopes_supported]
        scope = " ".join(kept) or None

    extra: dict[str, Any] = {}
    for name in URL_FIELDS:
        url = _optional_string(metadata, name, MAX_CLIENT_URL_LENGTH)
        if url is not None:
            extra[name] = canonical_client_url(url, web_urls, name=name)
    for name in STRING_FIELDS:
        text = _optional_string(metadata, name, MAX_NAME_LENGTH)
        if text is not None:
            extra[name] = text
    application_type = _optional_string(metadata, "application_type", MAX_KEYWORD_LENGTH)
    if application_type is not None:
        if application_type not in SUPPORTED_APPLICATION_TYPES:
            raise InvalidClientMetadata("application_type must be 'web' or 'native'")
        extra["application_type"] = application_type
    contacts = _string_list(metadata, "contacts", (), max_entries=MAX_CONTACTS, max_length=MAX_CONTACT_LENGTH)
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
        web_urls: WebUrlParser,
        housekeeping: Housekeeping,
    ) -> None:
        self._clients = clients
        self._clock = clock
        self._tokens = tokens
        self._hasher = hasher
        self._policy = policy
        self._web_urls = web_urls
        self._housekeeping = housekeeping

    def register(self, metadata: Mapping[str, Any]) -> RegisteredClient:
        validated = validate_client_metadata(
            metadata,
            self._policy.scopes_supported,
            self._web_urls,
            extra_redirect_schemes=frozenset(self._policy.extra_redirect_schemes),
        )
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
