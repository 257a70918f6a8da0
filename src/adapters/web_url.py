"""The WebUrlParser port on ada (ada-url), a WHATWG URL Standard parser: what a browser makes of a
URL, which the standard library's urllib (RFC 3986, lenient) does not tell."""

from __future__ import annotations

import ada_url

from ..domain.ports import WebUrl

PARSED_ATTRIBUTES = ("href", "protocol", "username", "password", "hostname", "port")


class AdaWebUrlParser:
    def parse(self, url: str) -> WebUrl | None:
        try:
            parts = ada_url.parse_url(url, attributes=PARSED_ATTRIBUTES)
        except ValueError:
            # Not a valid URL, or text ada cannot take (a lone surrogate is not UTF-8).
            return None
        hostname = parts["hostname"]
        return WebUrl(
            href=parts["href"],
            scheme=parts["protocol"].removesuffix(":"),
            username=parts["username"],
            password=parts["password"],
            hostname=hostname,
            port=parts["port"],
            unicode_hostname=_unicode_host(hostname),
        )


def _unicode_host(hostname: str) -> str:
    # Only names with punycode labels decode to anything else; IP addresses are left alone.
    if "xn--" not in hostname or hostname.startswith("["):
        return hostname
    try:
        return ada_url.idna_to_unicode(hostname)
    except ValueError:
        return hostname
