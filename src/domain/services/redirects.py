"""Redirect URI matching (RFC 6749 §3.1.2.3, RFC 8252 §7.3) and authorization responses (RFC 9207)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

from ..uris import is_loopback_host


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        parts.port
    except ValueError:
        return False
    return True


def redirect_uri_matches(requested: str, registered: str) -> bool:
    """Exact string match; for loopback http redirects only the port may differ."""
    if requested == registered:
        return True
    try:
        req, reg = urlsplit(requested), urlsplit(registered)
    except ValueError:
        # Not a URI at all (an unclosed IPv6 bracket, say): it matches nothing.
        return False
    # RFC 8252 §7.3: "The authorization server MUST allow any port to be specified at the
    # time of the request for loopback IP redirect URIs".
    if reg.scheme != "http" or req.scheme != "http":
        return False
    if not reg.hostname or not is_loopback_host(reg.hostname):
        return False
    if not (_has_valid_port(req) and _has_valid_port(reg)):
        return False
    return (
        req.hostname == reg.hostname
        and req.path == reg.path
        and req.query == reg.query
        and req.username is None
        and req.password is None
        and not req.fragment
    )


@dataclass(frozen=True)
class ClientRedirect:
    """An authorization response or error sent to the client's redirect URI."""

    redirect_uri: str
    params: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, redirect_uri: str, *, issuer: str, state: str | None, **params: str) -> "ClientRedirect":
        items = list(params.items())
        if state is not None:
            items.append(("state", state))
        # RFC 9207 §2: the iss parameter is added to every authorization response.
        items.append(("iss", issuer))
        return cls(redirect_uri=redirect_uri, params=tuple(items))

    def url(self) -> str:
        parts = urlsplit(self.redirect_uri)
        query = "&".join(part for part in (parts.query, urlencode(self.params)) if part)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
