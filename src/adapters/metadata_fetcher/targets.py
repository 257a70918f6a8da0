"""What a client ID metadata document may be fetched from: the URL (draft-ietf-oauth-client-id-
metadata-document §3, as far as the fetch is concerned; the domain checks the rest) and the
addresses its host resolves to (§8.6 SSRF: RFC 6890 and the IANA special-purpose address
registries)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...domain.ports import MetadataDocumentUnavailable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Special-use ranges (RFC 6890, IANA IPv4/IPv6 special-purpose address registries) that
# ipaddress's is_global does not (or, in older Pythons, did not yet) report, named for messages
# and logs. Order matters where they nest: the first match names the class.
_REFUSED: tuple[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network], ...] = tuple(
    (name, ipaddress.ip_network(network))
    for name, network in (
        ("unspecified", "::/128"),
        ("this-network", "0.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("shared (CGNAT)", "100.64.0.0/10"),
        ("link-local", "169.254.0.0/16"),
        ("private", "172.16.0.0/12"),
        ("IETF protocol assignment", "192.0.0.0/24"),
        ("documentation", "192.0.2.0/24"),
        ("6to4 relay anycast", "192.88.99.0/24"),
        ("private", "192.168.0.0/16"),
        ("benchmarking", "198.18.0.0/15"),
        ("documentation", "198.51.100.0/24"),
        ("documentation", "203.0.113.0/24"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),  # includes the broadcast address 255.255.255.255
        ("IPv4-mapped", "::ffff:0:0/96"),
        ("IPv4-compatible", "::/96"),
        ("NAT64", "64:ff9b::/96"),
        ("NAT64", "64:ff9b:1::/48"),
        ("discard", "100::/64"),
        ("Teredo", "2001::/32"),
        ("IETF protocol assignment", "2001::/23"),
        ("documentation", "2001:db8::/32"),
        ("6to4", "2002::/16"),
        ("documentation", "3fff::/20"),
        ("SRv6 SID", "5f00::/16"),
        ("unique local", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "ff00::/8"),
    )
)
# Only 2000::/3 is allocated for global unicast; the rest of the IPv6 space is reserved.
_IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")
def address_refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be fetched from (the special-use class, e.g. "private"), or None
    if it is globally routable (or loopback, when ``allow_loopback``)."""
    try:
        ip: Address = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if any(ip in network for network in _LOOPBACK if network.version == ip.version):
        return None if allow_loopback else "loopback"
    for name, network in _REFUSED:
        if network.version == ip.version and ip in network:
            return name
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _IPV6_GLOBAL_UNICAST:
        return "reserved"
    if not ip.is_global or ip.is_private or ip.is_reserved or ip.is_multicast or ip.is_link_local:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Target:
    """The parts of a client ID URL the fetch uses."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    host_header: str
    request_target: str  # path and query


def parse_target(url: str, *, allow_loopback: bool) -> Target:
    """The draft's §3 URL rules as far as the fetch is concerned (the domain checks the rest)."""
    if not url or not all(0x21 <= ord(char) <= 0x7E for char in url):
        raise MetadataDocumentUnavailable("the client ID is not a valid URL")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise MetadataDocumentUnavailable("the client ID is not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise MetadataDocumentUnavailable("the client ID is not an https URL")
    if "#" in url:
        raise MetadataDocumentUnavailable("the client ID URL has a fragment")
    if "@" in parts.netloc:
        raise MetadataDocumentUnavailable("the client ID URL has user information")
    host = parts.hostname or ""
    literal = ip_literal(host)
    if not host or (literal is None and not _HOST_NAME.fullmatch(host)):
        raise MetadataDocumentUnavailable("the client ID URL has no valid host")
    try:
        explicit_port = parts.port
    except ValueError:
        raise MetadataDocumentUnavailable("the client ID URL has an invalid port") from None
    if explicit_port == 0:
        raise MetadataDocumentUnavailable("the client ID URL has an invalid port")
    if parts.scheme == "http" and not (allow_loopback and is_loopback_host(host, literal)):
        raise MetadataDocumentUnavailable("the client ID is not an https URL")
    default_port = 443 if parts.scheme == "https" else 80
    port = explicit_port or default_port
    shown_host = f"[{host}]" if ":" in host else host
    return Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        host_header=shown_host if port == default_port else f"{shown_host}:{port}",
        request_target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def host_for_log(url: str) -> str:
    """The host only: the path and query of a URL may carry anything."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if host and (_HOST_NAME.fullmatch(host) or ip_literal(host) is not None):
        return host
    return "(no valid host)"


def ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str, literal: Address | None) -> bool:
    if literal is None:
        return host == "localhost"
    return any(literal in network for network in _LOOPBACK if network.version == literal.version)
