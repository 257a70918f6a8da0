"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-02): the
client identifier URL (§3), the document's rules (§4, §8.1) and the operator's trust policy
(which hosts may publish clients, which redirect URIs any self-declared client may use).

Pure rules only; fetching (§5, §8.6 SSRF) is an adapter behind ``ClientMetadataFetcher`` and
caching is ``services.clients``'s."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import InvalidClient, InvalidClientMetadata, OAuthError
from .uris import is_loopback_host

# §8.7: the server caps what it reads; Claude's document is about 400 bytes.
MAX_DOCUMENT_BYTES = 5 * 1024
# Client ids that are URLs: anything else is an id this server issued.
URL_CLIENT_ID_PREFIXES = ("https://", "http://")
# §4: shared secrets make no sense for a document anyone can read.
SHARED_SECRET_AUTH_METHODS = frozenset({"client_secret_post", "client_secret_basic", "client_secret_jwt"})
# Key-based client authentication (RFC 7523) is not implemented: such a document is refused,
# rather than its client treated as public when it expects to authenticate.
KEY_AUTH_METHODS = frozenset({"private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"})
# Fields a document must not carry (§4: no client_secret; these belong to registration responses).
FORBIDDEN_FIELDS = ("client_secret", "client_secret_expires_at")


def is_url_client_id(client_id: str) -> bool:
    return client_id.startswith(URL_CLIENT_ID_PREFIXES)


def url_host(client_id: str) -> str:
    """The host of a client identifier URL (lower case, IPv6 without brackets); "" if none."""
    try:
        return urlsplit(client_id).hostname or ""
    except ValueError:
        return ""


def check_client_id_url(client_id: str, *, allow_loopback: bool = False) -> None:
    """§3: https, a host, a path other than "/", no userinfo, no fragment, no dot segments.
    With ``allow_loopback`` (development and tests) http on a loopback host is accepted too.
    Raises ``InvalidClient`` saying which rule failed."""

    def refuse(rule: str) -> InvalidClient:
        return InvalidClient(f"the client_id URL {rule} (client ID metadata documents, draft §3)")

    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F or not ch.isascii() for ch in client_id):
        raise refuse("must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(client_id)
        port = parts.port
    except ValueError:
        raise refuse("is not a valid URL") from None
    host = parts.hostname or ""
    if parts.scheme != "https" and not (allow_loopback and parts.scheme == "http" and is_loopback_host(host)):
        raise refuse("must use https")
    if not host:
        raise refuse("must name a host")
    if "@" in parts.netloc:
        raise refuse("must not contain a user name or password")
    if "#" in client_id:
        raise refuse("must not contain a fragment")
    if not parts.path or parts.path == "/":
        raise refuse("must contain a path")
    segments = parts.path.split("/")
    if any(segment.lower() in (".", "..", "%2e", "%2e%2e", ".%2e", "%2e.") for segment in segments):
        raise refuse("must not contain . or .. path segments")
    if port == 0:
        raise refuse("has an invalid port")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        # *.example.com: any subdomain of example.com, not example.com itself.
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class MetadataDocumentPolicy:
    """Which client ID metadata documents the operator accepts, and how long they are kept."""

    # CIMD_ALLOWED_HOSTS: empty means any public host; exact hosts or *.example.com.
    allowed_hosts: tuple[str, ...] = ()
    # CIMD_DENIED_HOSTS: refused even when allowed.
    denied_hosts: tuple[str, ...] = ()
    # CIMD_ALLOW_LOOPBACK: development and tests fetch documents from loopback over http.
    allow_loopback: bool = False
    # CIMD_PINNED_ONLY: only the documents shipped with the project, never a fetch.
    pinned_only: bool = False
    # Bounds on the host's Cache-Control / Expires (CIMD_CACHE_MIN_TTL, CIMD_CACHE_MAX_TTL), and
    # the lifetime when the host says nothing.
    min_cache_ttl: int = 60
    max_cache_ttl: int = 24 * 3600
    default_cache_ttl: int = 3600
    # CIMD_STALE_TTL: how long after its fetch a document still serves refreshes when its host
    # cannot be reached (or serves something invalid), rather than disconnecting everyone.
    stale_ttl: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not 0 < self.min_cache_ttl <= self.max_cache_ttl:
            raise ValueError("the document cache bounds must satisfy 0 < minimum <= maximum")
        if self.stale_ttl < self.max_cache_ttl:
            raise ValueError("the stale lifetime must be at least the maximum cache lifetime")

    def check_host(self, client_id: str) -> None:
        host = url_host(client_id).rstrip(".")
        if any(_host_matches(host, pattern) for pattern in self.denied_hosts):
            raise InvalidClient(f"client ID metadata documents from {host} are not accepted by this server")
        if self.allowed_hosts and not any(_host_matches(host, pattern) for pattern in self.allowed_hosts):
            raise InvalidClient(f"client ID metadata documents from {host} are not accepted by this server")

    def cache_lifetime(self, max_age: int | None) -> int:
        """Seconds a fetched document is used without fetching it again (§5.2)."""
        wanted = self.default_cache_ttl if max_age is None else max_age
        return max(self.min_cache_ttl, min(self.max_cache_ttl, wanted))


def json_object(body: bytes, *, invalid: str, not_object: str) -> dict[str, Any]:
    """Client metadata as JSON (a registration body, a metadata document): one JSON object, or
    ``InvalidClientMetadata`` with ``invalid`` or ``not_object``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidClientMetadata(invalid) from None
    if not isinstance(document, dict):
        raise InvalidClientMetadata(not_object)
    return document


def parse_document(body: bytes) -> dict[str, Any]:
    """§4: the body must be one JSON object (the size cap is the fetcher's, and checked here
    again for documents that were not fetched)."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidClientMetadata(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return json_object(body, invalid="the document is not valid JSON", not_object="the document is not a JSON object")


def check_document(document: Mapping[str, Any], client_id: str) -> None:
    """§4 and MCP 2026-07-28: the rules a document has beyond RFC 7591's (which
    ``validate_client_metadata`` applies)."""
    if document.get("client_id") != client_id:
        raise InvalidClientMetadata("the document's client_id is not exactly the URL it was fetched from")
    for name in ("client_name", "redirect_uris"):
        if name not in document:
            raise InvalidClientMetadata(f"the document has no {name}")
    for name in FORBIDDEN_FIELDS:
        if name in document:
            raise InvalidClientMetadata(f"the document must not contain {name}: it is public")
    method = document.get("token_endpoint_auth_method")
    if method in SHARED_SECRET_AUTH_METHODS:
        raise InvalidClientMetadata(f"token_endpoint_auth_method {method} needs a shared secret, which a public document cannot hold")
    if method in KEY_AUTH_METHODS:
        raise InvalidClientMetadata(
            f"token_endpoint_auth_method {method} is not supported by this server; publish the document with \"none\""
        )


def describe(error: OAuthError) -> str:
    return error.description or error.error


# -- redirect URI allowlist (REDIRECT_URI_ALLOWLIST) ---------------------------------------------

# Where a "*" may not reach: it stands for part of one component (a host label, a port, a path
# segment), never across "/", "?", "#" or "@".
_WILDCARD = "[^/?#@]*"


@dataclass(frozen=True)
class RedirectUriAllowlist:
    """Patterns the redirect URIs of self-declared clients (DCR and client ID metadata
    documents) must match; empty means no restriction beyond the redirect URI rules.

    A pattern is a redirect URI in which ``*`` matches any run of characters within one
    component, and ``:*`` after the host also matches no port at all:
    ``http://127.0.0.1:*/callback`` admits ``http://127.0.0.1/callback`` and
    ``http://127.0.0.1:33418/callback``."""

    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        compiled = []
        for pattern in self.patterns:
            regex = ""
            rest = pattern
            while rest:
                if rest.startswith(":*"):
                    regex += "(?::[0-9]{1,5})?"
                    rest = rest[2:]
                elif rest.startswith("*"):
                    regex += _WILDCARD
                    rest = rest[1:]
                else:
                    regex += re.escape(rest[0])
                    rest = rest[1:]
            compiled.append(re.compile(regex))
        object.__setattr__(self, "_compiled", tuple(compiled))

    def admits(self, redirect_uri: str) -> bool:
        if not self.patterns:
            return True
        compiled: tuple[re.Pattern[str], ...] = getattr(self, "_compiled")
        return any(regex.fullmatch(redirect_uri) for regex in compiled)
