"""The ClientMetadataFetcher port: GET a client ID metadata document safely
(draft-ietf-oauth-client-id-metadata-document: §5 Client Information Discovery, a 200 and no
redirects; §5.2 caching; §8.6 Server-Side Request Forgery; §8.7 Maximum Response Size).

The client ID is a URL anyone can choose, so the fetch is an SSRF surface:

- https only (http only with ``allow_loopback`` to a loopback host, for tests and local work);
  no userinfo, no fragment (``targets``).
- The host is resolved here, and every address it resolves to must be globally routable
  (RFC 6890 and the IANA special-purpose registries, including the IPv6 forms that embed or
  translate to IPv4: mapped, compatible, NAT64, 6to4, Teredo). One bad address refuses the name.
- The connection goes to an address that was checked, never to a second resolution, with the
  Host header and TLS server name (SNI and certificate check) set to the URL's host name, so DNS
  rebinding cannot slip a second, internal answer past the check (``fetcher``).
- No redirects, only 200, JSON or no Content-Type, no Content-Encoding, at most ``max_bytes``
  (read as it arrives and dropped as soon as more comes), a connect deadline and a total deadline
  over the whole exchange (resolution included); no cookies, credentials or proxies.
- The freshness the answer allows (``freshness``, RFC 9111) goes back as ``max_age``.

Concurrent fetches of one URL in a process are merged into one request. Nothing is cached here:
the domain caches valid documents in storage.
"""

from .fetcher import SafeMetadataFetcher
from .freshness import max_age_from_headers
from .targets import address_refusal

__all__ = ["SafeMetadataFetcher", "address_refusal", "max_age_from_headers"]
