"""How long a fetched client ID metadata document may be cached (draft-ietf-oauth-client-id-
metadata-document §5.2: HTTP caching, RFC 9111). The domain bounds the result."""

from __future__ import annotations

import email.message
from email.utils import parsedate_to_datetime

# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
DELTA_SECONDS_CAP = 2**31


def max_age_from_headers(headers: email.message.Message, now: float) -> int | None:
    """Seconds the response may be cached (RFC 9111 §4.2.1, §5.2.2, §5.3), None if it says
    nothing. ``no-store`` and ``no-cache`` (whatever else is there) give 0; else ``max-age``
    (the smallest if repeated, 0 if invalid); else ``Expires`` minus ``Date`` (or ``now``), 0 if
    invalid or past. ``private`` and ``s-maxage`` are ignored: the authorization server is the
    document's only user, not a cache shared between users."""
    directives: dict[str, list[str | None]] = {}
    for field in headers.get_all("Cache-Control") or []:
        for directive in str(field).split(","):
            name, _, value = directive.partition("=")
            name = name.strip().lower()
            if name:
                directives.setdefault(name, []).append(value.strip().strip('"') if value else None)
    if "no-store" in directives or "no-cache" in directives:
        return 0
    if "max-age" in directives:
        return min(_delta_seconds(value) for value in directives["max-age"])
    expires = headers.get_all("Expires")
    if not expires:
        return None
    expires_at = _http_date(str(expires[0]))
    if expires_at is None:
        return 0  # RFC 9111 §5.3: an invalid Expires (such as "0") is in the past
    date = _http_date(str(headers.get("Date", "")))
    return max(0, int(expires_at - (date if date is not None else now)))


def _delta_seconds(value: str | None) -> int:
    if value is None or not value.isascii() or not value.isdigit():
        return 0  # RFC 9111 §4.2.1: invalid freshness information counts as stale
    return DELTA_SECONDS_CAP if len(value) > 10 else min(int(value), DELTA_SECONDS_CAP)


def _http_date(value: str) -> float | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()
