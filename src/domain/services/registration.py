"""Dynamic Client Registration (RFC 7591 §2, §3); the redirect URI rules are in ``domain.uris``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Mapping

from ..audit import CLIENT_DELETED, CLIENT_REGISTERED, CLIENT_UPDATED, NoAuditTrail, client_event
from ..errors import InvalidClientMetadata, InvalidRedirectUri, InvalidToken
from ..model import DYNAMIC_CLIENT_KIND, OPERATOR_CLIENT_KIND, PUBLIC_CLIENT_AUTH_METHOD, Client
from ..policy import ServerPolicy
from ..ports import AuditTrail, ClientRepository, Clock, RehashedColumn, TokenGenerator, WebUrlParser
from ..security import TokenHasher
from ..text import unsafe_display_character
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


# RFC 7592 §2.2: fields of a client information response that an update request must not
# set; sent back as they were received, they are ignored.
RESPONSE_ONLY_FIELDS = ("registration_access_token", "registration_client_uri", "client_secret_expires_at", "client_id_issued_at")
CLIENT_ID_PREFIX = "mob_client_"
CLIENT_SECRET_PREFIX = "mob_cs_"
REGISTRATION_TOKEN_PREFIX = "mob_rat_"
# The path of a client's configuration endpoint (RFC 7592 §2), under the issuer.
CLIENT_CONFIGURATION_PATH = "/oauth/register/"


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    # Returned once, at registration; only its hash is stored.
    client_secret: str | None
    # RFC 7592 §3: the registration access token and the client configuration endpoint.
    registration_access_token: str | None = None
    registration_client_uri: str | None = None

    def response(self) -> dict[str, Any]:
        """RFC 7591 §3.2.1 client information response (with RFC 7592 §3's fields)."""
        document = self.client.metadata()
        if self.client_secret is not None:
            document["client_secret"] = self.client_secret
            # RFC 7591 §3.2.1: REQUIRED if client_secret is issued; 0 means it does not expire.
            document["client_secret_expires_at"] = 0
        if self.registration_access_token is not None:
            document["registration_access_token"] = self.registration_access_token
        if self.registration_client_uri is not None:
            document["registration_client_uri"] = self.registration_client_uri
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

    def client(self, client_id: str, *, issued_at: int, kind: str = DYNAMIC_CLIENT_KIND) -> Client:
        """The client these metadata describe (without secret or registration token)."""
        return Client(
            client_id=client_id,
            redirect_uris=self.redirect_uris,
            grant_types=self.grant_types,
            response_types=self.response_types,
            token_endpoint_auth_method=self.token_endpoint_auth_method,
            issued_at=issued_at,
            client_name=self.client_name,
            scope=self.scope,
            extra_metadata=self.extra,
            kind=kind,
        )


def validate_client_metadata(
    metadata: Mapping[str, Any],
    policy: ServerPolicy,
    web_urls: WebUrlParser,
    *,
    self_declared: bool = True,
    published: bool = False,
) -> ValidatedMetadata:
    """Apply RFC 7591 §2, under the server's policy, to a metadata document: a DCR body, or
    (``published``) a client ID metadata document, whose client is public by default and may
    list grant types meant for other servers (Claude's lists jwt-bearer): those are ignored
    rather than refused. The redirect URI allowlist binds ``self_declared`` clients only (not
    those an operator creates)."""
    _require_utf8(metadata)
    redirect_uris = _redirect_uris(metadata, web_urls, frozenset(policy.extra_redirect_schemes))
    for index, uri in enumerate(redirect_uris):
        if self_declared and not policy.redirect_uri_allowlist.admits(uri):
            raise InvalidRedirectUri(f"redirect_uris[{index}] ({uri}) is not among the redirect URIs this server allows")

    grant_types = _string_list(metadata, "grant_types", DEFAULT_GRANT_TYPES)
    unknown = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if published:
        grant_types = tuple(g for g in grant_types if g in SUPPORTED_GRANT_TYPES)
    elif unknown:
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
    auth_method = auth_method or (PUBLIC_CLIENT_AUTH_METHOD if published else DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD)
    if auth_method not in SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS:
        raise InvalidClientMetadata(
            f"unsupported token_endpoint_auth_method '{auth_method}'; "
            f"supported: {list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS)}"
        )

    client_name = _optional_string(metadata, "client_name", MAX_NAME_LENGTH)
    if client_name is not None:
        client_name = client_name.strip() or None
        unsafe = unsafe_display_character(client_name or "")
        if unsafe is not None:
            # The consent page names the client by it: one line, read as written.
            raise InvalidClientMetadata(
                f"client_name must be one line of plain text without control or bidirectional formatting "
                f"characters; it contains U+{ord(unsafe):04X}"
            )

    scope = _optional_string(metadata, "scope", MAX_SCOPE_LENGTH)
    if scope is not None:
        # RFC 7591 §2: the server may narrow the scope; unknown scopes are dropped.
        kept = [s for s in dict.fromkeys(scope.split()) if s in policy.scopes_supported]
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


def rehash_when_outdated(
    clients: ClientRepository, hasher: TokenHasher, client_id: str, column: RehashedColumn, value: str, stored: str
) -> None:
    """A client secret or registration token never expires, so one that just matched under an
    older token hash key (or was hashed before keys had ids) is hashed again under the current key
    at this use: then the older key can be retired (``keys status``) without anyone noticing."""
    if not hasher.is_current(stored):
        clients.rehash(client_id, column, stored, hasher.hash(value))


class RegistrationService:
    """RFC 7591 §3: register a client from its metadata; RFC 7592: read, replace and delete it
    with its registration access token; and clients an operator creates."""

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
        audit: AuditTrail | None = None,
    ) -> None:
        self._clients = clients
        self._audit: AuditTrail = audit or NoAuditTrail()
        self._clock = clock
        self._tokens = tokens
        self._hasher = hasher
        self._policy = policy
        self._web_urls = web_urls
        self._housekeeping = housekeeping

    def register(self, metadata: Mapping[str, Any]) -> RegisteredClient:
        if not self._policy.dynamic_registration_open:
            raise InvalidClientMetadata(
                "dynamic client registration is closed on this server"
                + (
                    "; use a client ID metadata document (an https URL as client_id)"
                    if self._policy.metadata_documents_accepted
                    else "; ask its operator for a client id"
                )
            )
        validated = self._validate(metadata)
        client = validated.client(self._tokens.generate(CLIENT_ID_PREFIX), issued_at=self._clock.now())
        client, secret = self._with_secret(client)
        registration_token = self._tokens.generate(REGISTRATION_TOKEN_PREFIX)
        client = replace(client, registration_token_hash=self._hasher.hash(registration_token))
        self._clients.add(client)
        self._audit.record(client_event(CLIENT_REGISTERED, client.client_id, reason=client.kind))
        # Registrations are what a flood creates: they pay for deleting the unused ones.
        self._housekeeping.tick()
        return self._registered(client, secret, registration_token)

    def _validate(self, metadata: Mapping[str, Any]) -> ValidatedMetadata:
        return validate_client_metadata(metadata, self._policy, self._web_urls)

    def _with_secret(self, client: Client) -> tuple[Client, str | None]:
        """A confidential client keeps the secret it has, or gets a new one (returned once); a
        public one has none."""
        if client.is_public:
            return replace(client, secret_hash=None), None
        if client.secret_hash is not None:
            return client, None
        secret = self._tokens.generate(CLIENT_SECRET_PREFIX)
        return replace(client, secret_hash=self._hasher.hash(secret)), secret

    def _registered(self, client: Client, secret: str | None, registration_token: str) -> RegisteredClient:
        return RegisteredClient(
            client=client,
            client_secret=secret,
            registration_access_token=registration_token,
            registration_client_uri=self._policy.issuer + CLIENT_CONFIGURATION_PATH + client.client_id,
        )

    # -- RFC 7592 client configuration endpoint --------------------------------------------------

    def _authorized(self, client_id: str, registration_token: str | None) -> Client:
        """RFC 7592 §2: the client whose registration access token this is. Unknown client,
        another client's token, a client without one (operator-created, metadata documents) and
        a missing token are one and the same answer (401): nothing says whether it exists."""
        client = self._clients.get(client_id)
        stored = client.registration_token_hash if client is not None else None
        # Compared even when there is nothing to compare with, so that the time taken does not
        # tell an unknown client from a wrong token.
        matches = self._hasher.matches(registration_token or "", stored or self._hasher.hash("-"))
        # A client an operator disabled manages nothing either: not even itself (the same answer).
        if client is None or stored is None or not registration_token or not matches or client.is_disabled:
            raise InvalidToken("the registration access token is missing, invalid, or not this client's")
        rehash_when_outdated(self._clients, self._hasher, client_id, "registration_token_hash", registration_token, stored)
        return client

    def read(self, client_id: str, registration_token: str | None) -> RegisteredClient:
        """RFC 7592 §2.1. The secret is kept only as a hash, so it is not returned again."""
        client = self._authorized(client_id, registration_token)
        assert registration_token is not None
        return self._registered(client, None, registration_token)

    def replace(self, client_id: str, registration_token: str | None, metadata: Mapping[str, Any]) -> RegisteredClient:
        """RFC 7592 §2.2: the request replaces every metadata field, validated as a registration
        is. A client that becomes confidential gets a new secret; the client id, registration
        access token and issue time stay."""
        current = self._authorized(client_id, registration_token)
        assert registration_token is not None
        if metadata.get("client_id") != client_id:
            raise InvalidClientMetadata("client_id must be sent and equal this client's id")
        sent_secret = metadata.get("client_secret")
        if sent_secret is not None and (
            not isinstance(sent_secret, str)
            or current.secret_hash is None
            or not self._hasher.matches(sent_secret, current.secret_hash)
        ):
            raise InvalidClientMetadata("client_secret does not match this client's secret")
        ignored = ("client_id", "client_secret", *RESPONSE_ONLY_FIELDS)
        validated = self._validate({name: value for name, value in metadata.items() if name not in ignored})
        client = replace(
            current,
            redirect_uris=validated.redirect_uris,
            grant_types=validated.grant_types,
            response_types=validated.response_types,
            token_endpoint_auth_method=validated.token_endpoint_auth_method,
            client_name=validated.client_name,
            scope=validated.scope,
            extra_metadata=validated.extra,
        )
        client, secret = self._with_secret(client)
        self._clients.add(client)
        self._audit.record(client_event(CLIENT_UPDATED, client_id))
        return self._registered(client, secret, registration_token)

    def delete(self, client_id: str, registration_token: str | None) -> None:
        """RFC 7592 §2.3: the client goes, and with it every grant and token issued to it."""
        self._authorized(client_id, registration_token)
        self._clients.delete(client_id)
        self._audit.record(client_event(CLIENT_DELETED, client_id))

    # -- operator-created clients ---------------------------------------------------------------

    def create_operator_client(self, *, name: str, redirect_uris: list[str], public: bool) -> RegisteredClient:
        """A client an operator creates (``mcp-oauth-bridge clients add``): trusted, exact
        redirect URIs (the allowlist binds self-declared clients only), confidential unless
        ``public``. Its secret is returned once."""
        validated = validate_client_metadata(
            {
                "client_name": name,
                "redirect_uris": redirect_uris,
                "token_endpoint_auth_method": PUBLIC_CLIENT_AUTH_METHOD if public else DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD,
            },
            self._policy,
            self._web_urls,
            self_declared=False,
        )
        if validated.client_name is None:
            raise InvalidClientMetadata("the client needs a name")
        client = validated.client(
            self._tokens.generate(CLIENT_ID_PREFIX), issued_at=self._clock.now(), kind=OPERATOR_CLIENT_KIND
        )
        client, secret = self._with_secret(client)
        self._clients.add(client)
        self._audit.record(client_event(CLIENT_REGISTERED, client.client_id, reason=client.kind))
        return RegisteredClient(client=client, client_secret=secret)
