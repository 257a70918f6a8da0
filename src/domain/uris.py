"""Redirect URIs and client URLs read as a browser reads them: RFC 6749 §3.1.2, OAuth 2.1 §2.3.1,
RFC 8252 §7.1 (private-use schemes), §7.3 and §8.3 (loopback), RFC 9700 §4.1 and §4.11 (exact
matching, no open redirector), and the WHATWG URL Standard (what a browser navigates to).

The rule for a registered redirect URI, exactly:

- a non-empty string of at most ``MAX_REDIRECT_URI_LENGTH`` characters, encodable as UTF-8, with
  no whitespace, no control character and no backslash anywhere, and no ``#`` (no fragment, not
  even an empty one);
- its scheme is ``https`` (any host), ``http`` on a loopback host (127.0.0.0/8, ``[::1]``,
  ``localhost``), or a private-use scheme in reverse-domain form (``REVERSE_DOMAIN_SCHEME``: two
  or more dot-separated labels of lower-case letters, digits and inner hyphens, the first
  starting with a letter, e.g. ``com.example.app``); schemes a browser hands to the operating
  system or runs (``OS_HANDLER_SCHEMES``, any ``ms-*``) are named as such in the refusal;
- no user information (``user@``);
- the URI equals its WHATWG serialization (so no default port, no ``.``/``..`` or ``%2e``
  segments, no percent-encoded, upper-case or odd-IPv4 host, no missing path ``/``), except that a
  host written with non-ASCII characters is converted: the WHATWG (punycode) serialization is
  what is stored and answered;
- the host (after that parse) is an IP address or dot-separated labels of ``a-z 0-9 - _`` with at
  most one trailing dot; a private-use URI may have no host.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

from .errors import InvalidClientMetadata, InvalidRedirectUri, InvalidRequest, OAuthError
from .ports import WebUrl, WebUrlParser

# Claude's redirect URI is 39 characters and a loopback one rarely exceeds 60; 512 leaves room
# for a path and query while bounding every stored client and pending authorization.
MAX_REDIRECT_URI_LENGTH = 512
# client_uri, logo_uri, tos_uri, policy_uri.
MAX_CLIENT_URL_LENGTH = 512

# Schemes a browser hands to the operating system's handlers (search, Office, diagnostics,
# settings, mail, phone, Android intents) or runs or reads itself: never a place to send a person
# with a code. Any scheme outside https, loopback http and reverse-domain private-use schemes is
# refused anyway; these are named so that the refusal says why.
OS_HANDLER_SCHEMES = frozenset(
    {
        "about",
        "blob",
        "data",
        "file",
        "filesystem",
        "ftp",
        "intent",
        "javascript",
        "jar",
        "mailto",
        "search",
        "search-ms",
        "shell",
        "sms",
        "smb",
        "tel",
        "vbscript",
        "view-source",
    }
)
# ms-officecmd:, ms-msdt:, ms-settings:, ms-word: … (Windows protocol handlers), dotted or not.
OS_HANDLER_SCHEME_PREFIXES = ("ms-",)

PRIVATE_USE = "private-use"
SCHEME_PATTERN = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
# RFC 8252 §7.1: "apps MUST use a URI scheme based on a domain name under their control,
# expressed in reverse order". At least two labels; the first starts with a letter (RFC 3986 §3.1).
REVERSE_DOMAIN_SCHEME = re.compile(rf"[a-z](?:[a-z0-9-]*[a-z0-9])?(?:\.{_LABEL})+")
HOST_NAME = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?")


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


def is_utf8_encodable(text: str) -> bool:
    """False for text with a lone UTF-16 surrogate (JSON's "\\ud800"), which no page can show."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str, uri: str) -> str:
    # Error descriptions are ASCII without '"' or '\' (RFC 6749 §5.2): show the URI only then.
    if all(0x20 < ord(ch) < 0x7F for ch in uri) and '"' not in uri and "\\" not in uri:
        return f"{name} {uri}"
    return name


def _check_text(uri: str, name: str, error: type[OAuthError], max_length: int) -> None:
    if not is_utf8_encodable(uri):
        raise error(f"{name} contains text that cannot be encoded as UTF-8 (a lone surrogate)")
    if len(uri) > max_length:
        raise error(f"{name} is longer than {max_length} characters")
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in uri):
        raise error(f"{name} contains whitespace or control characters")
    # Browsers read "\" as "/" in http(s) URLs: https://evil.example\.claude.ai/ goes to evil.example.
    if "\\" in uri:
        raise error(f"{name} contains a backslash")


def _scheme(uri: str, label: str, error: type[OAuthError]) -> str:
    match = SCHEME_PATTERN.match(uri)
    if match is None:
        raise error(f"{label} must be an absolute URI with a scheme")
    return match.group(1).lower()


def is_os_handler_scheme(scheme: str) -> bool:
    return scheme in OS_HANDLER_SCHEMES or scheme.startswith(OS_HANDLER_SCHEME_PREFIXES)


def _redirect_scheme_kind(scheme: str, label: str, extra_schemes: frozenset[str]) -> str:
    if is_os_handler_scheme(scheme):
        raise InvalidRedirectUri(
            f"{label}: the scheme '{scheme}:' is handed by browsers to the operating system or run as code; "
            "it cannot be a redirect URI"
        )
    if scheme in ("https", "http"):
        return scheme
    # An operator may admit an app's scheme that is not in reverse-domain form (Cursor registers
    # cursor://anysphere.cursor-mcp/oauth/callback): EXTRA_REDIRECT_SCHEMES.
    if REVERSE_DOMAIN_SCHEME.fullmatch(scheme) or scheme in extra_schemes:
        return PRIVATE_USE
    raise InvalidRedirectUri(
        f"{label}: redirect URIs must use https, http on a loopback host, or a private-use scheme in "
        "reverse-domain form (RFC 8252 §7.1, e.g. com.example.app:/callback)"
    )


def _only_the_host_was_converted(uri: str, url: WebUrl) -> bool:
    """True when the URI differs from its serialization only in a host written with non-ASCII
    characters (an internationalised name), which WHATWG turns into punycode."""
    prefix = f"{url.scheme}://"
    if uri[: len(prefix)].lower() != prefix:
        return False
    start = len(prefix)
    end = next((i for i in range(start, len(uri)) if uri[i] in "/?#"), len(uri))
    authority = uri[start:end]
    if "@" in authority or authority.startswith("["):
        return False
    host = authority.rsplit(":", 1)[0] if ":" in authority else authority
    if host.isascii():
        return False
    return uri[:start] + url.hostname + uri[start + len(host) :] == url.href


def _parse(uri: str, parser: WebUrlParser, label: str, error: type[OAuthError]) -> WebUrl:
    url = parser.parse(uri)
    if url is None:
        raise error(f"{label} is not a valid URL")
    if url.username or url.password:
        raise error(f"{label} must not contain user information (user@host)")
    return url


def _require_canonical(uri: str, url: WebUrl, label: str, error: type[OAuthError]) -> None:
    if url.href == uri or (url.scheme in ("http", "https") and _only_the_host_was_converted(uri, url)):
        return
    # A URI that a browser rewrites can show one thing and lead to another (RFC 9700 §4.1.3):
    # only the form the browser itself produces is kept.
    raise error(f"{label} is not in canonical form; use {url.href} (its WHATWG URL serialization)")


def _check_host(url: WebUrl, kind: str, label: str, error: type[OAuthError]) -> None:
    host = url.hostname
    if kind == PRIVATE_USE and not host:
        return
    bracketed_ip = host.startswith("[") and host.endswith("]")
    if not bracketed_ip and not HOST_NAME.fullmatch(host):
        raise error(f"{label}: the host must be a plain host name or IP address")
    # OAuth 2.1 §2.3.1 / RFC 8252 §7.3: plain http only for loopback redirects.
    if kind == "http" and not is_loopback_host(host):
        raise error(f"{label}: http is allowed only on a loopback host (127.0.0.1, [::1] or localhost); use https")


def canonical_redirect_uri(
    uri: object, parser: WebUrlParser, *, name: str = "redirect URI", extra_schemes: frozenset[str] = frozenset()
) -> str:
    """The redirect URI as it is registered (see the module docstring for the rule), or
    ``InvalidRedirectUri`` saying why not. Used for DCR and client ID metadata documents alike.
    ``extra_schemes``: app schemes the operator admits besides reverse-domain ones."""
    if not isinstance(uri, str) or not uri:
        raise InvalidRedirectUri(f"{name} must be a non-empty string")
    _check_text(uri, name, InvalidRedirectUri, MAX_REDIRECT_URI_LENGTH)
    label = _shown(name, uri)
    # RFC 6749 §3.1.2: "The endpoint URI MUST NOT include a fragment component."
    if "#" in uri:
        raise InvalidRedirectUri(f"{label} must not contain a fragment ('#')")
    kind = _redirect_scheme_kind(_scheme(uri, label, InvalidRedirectUri), label, extra_schemes)
    url = _parse(uri, parser, label, InvalidRedirectUri)
    _check_host(url, kind, label, InvalidRedirectUri)
    _require_canonical(uri, url, label, InvalidRedirectUri)
    if len(url.href) > MAX_REDIRECT_URI_LENGTH:
        raise InvalidRedirectUri(f"{name} is longer than {MAX_REDIRECT_URI_LENGTH} characters in punycode form")
    return url.href


def canonical_client_url(value: str, parser: WebUrlParser, *, name: str) -> str:
    """An informational URL (client_uri, logo_uri, tos_uri, policy_uri; RFC 7591 §2): https (or
    loopback http) with a plain host, stored and shown in its WHATWG serialization (clients write
    ``https://claude.ai`` for ``https://claude.ai/``; nobody is sent to it without a click), or
    ``InvalidClientMetadata``. client_uri is shown on the consent page."""
    _check_text(value, name, InvalidClientMetadata, MAX_CLIENT_URL_LENGTH)
    label = _shown(name, value)
    scheme = _scheme(value, label, InvalidClientMetadata)
    if scheme not in ("https", "http"):
        raise InvalidClientMetadata(f"{name} must be an https URL")
    url = _parse(value, parser, label, InvalidClientMetadata)
    _check_host(url, scheme, label, InvalidClientMetadata)
    if len(url.href) > MAX_CLIENT_URL_LENGTH:
        raise InvalidClientMetadata(f"{name} is longer than {MAX_CLIENT_URL_LENGTH} characters in punycode form")
    return url.href


@dataclass(frozen=True)
class RedirectDestination:
    """Where the browser goes for a redirect URI, from the same WHATWG parse a browser makes."""

    # "claude.ai", "example.com:8443", "http://127.0.0.1:9999", "com.example.app:"
    site: str
    # The host's Unicode form when it has punycode labels that decode to something else
    # (what some browsers show instead): "аррӏе.com" for xn--80ak6aa92e.com.
    unicode_host: str | None
    # A private-use scheme: an app on the person's device receives the response.
    app: bool


def redirect_destination(redirect_uri: str, parser: WebUrlParser) -> RedirectDestination:
    url = parser.parse(redirect_uri)
    if url is None:
        # Only validated URIs reach here; one that no longer parses is not shown at all.
        raise InvalidRequest("the client's redirect URI is not a valid URL")
    host = url.hostname + (f":{url.port}" if url.port else "")
    unicode_host = url.unicode_hostname if url.unicode_hostname != url.hostname else None
    if url.scheme == "https":
        return RedirectDestination(site=host, unicode_host=unicode_host, app=False)
    if url.scheme == "http":
        return RedirectDestination(site=f"http://{host}", unicode_host=unicode_host, app=False)
    return RedirectDestination(site=f"{url.scheme}:", unicode_host=None, app=True)
