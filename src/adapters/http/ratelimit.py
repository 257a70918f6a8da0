"""Rate limits on what a stranger can call: 429 Too Many Requests with Retry-After (RFC 6585 §4,
RFC 9110 §10.2.3), counted by Flask-Limiter with limits' fixed-window strategy in storage that
every worker and instance shares.

- Per client address (before the view): registration, and each browser step (authorize,
  consent, upstream callback). The address is the direct peer, or, behind proxies trusted by
  FORWARDED_ALLOW_IPS, the rightmost untrusted hop of X-Forwarded-For; IPv6 clients by their /64.
- After client authentication at the token, revocation and introspection endpoints: the code
  exchange and introspection/revocation per authenticated client, the refresh grant per grant,
  and failed authentications with a secret per presented client id (past its limit a secret
  presented for that client id is answered 429 without being checked).

A limited API request is answered with an OAuth JSON error, ``temporarily_unavailable`` (RFC 6749
§4.1.2.1: "unable to handle the request due to a temporary overloading"; a client retries later
instead of dropping its refresh token, as it would for ``invalid_grant``); a browser step with the
error page. When the counters cannot be reached, requests are served unlimited (and logged):
losing the abuse limits for the length of an outage is better than refusing every sign-in and
refresh of every user.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, cast

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RequestLimit
from limits import RateLimitItem, parse_many
from limits.errors import StorageError as LimitsStorageError
from limits.strategies import RateLimiter

from ...domain.ports import Clock, RateLimitStore
from ...domain.refresh_tokens import parse_refresh_token
from ...domain.security import TokenHasher
from ..storage.limits_storage import STORAGE_URI
from .errors import error_page, json_response

log = logging.getLogger(__name__)

EXTENSION = "mcp_oauth_bridge.rate_limits"
STRATEGY = "fixed-window"
RATE_LIMITED_ERROR = "temporarily_unavailable"
# One host commonly owns a whole /64 (SLAAC, privacy addresses): counting single IPv6 addresses
# would give it 2^64 budgets.
IPV6_CLIENT_PREFIX = 64
# Identifiers longer than this (client ids, addresses are shorter) are hashed before they reach
# the counter store, so that no backend keeps a key a stranger made long.
MAX_IDENTIFIER_LENGTH = 64
# Limits of at least BATCHED_LIMIT requests a window are counted in blocks of 1/BLOCKS_PER_WINDOW
# of the limit (RateLimits._take); MAX_HELD_BLOCKS bounds what a process remembers of them.
BATCHED_LIMIT = 100
BLOCKS_PER_WINDOW = 50
MAX_HELD_BLOCKS = 10_000
# A Redis that does not answer must not hold a request for long (the request then goes unlimited).
REDIS_TIMEOUT_SECONDS = 2.0

# The view functions limited per client address, by endpoint name, and how they answer 429.
REGISTER_ENDPOINTS = ("registration.register", "registration.configuration")
BROWSER_ENDPOINTS = (
    "authorization.authorize",
    "authorization.consent",
    "authorization.callback",
    "connections.sign_in",
    "connections.revoke",
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimited(Exception):
    """A limit keyed by the client was reached (raised by the token endpoints' views)."""

    def __init__(self, retry_after: int, description: str, *, limit: str = "") -> None:
        super().__init__(description)
        self.retry_after = retry_after
        self.description = description
        # The limit's name, for the audit log.
        self.limit = limit


class RateLimitAudit(Protocol):
    """Where a refused request is reported (the audit log)."""

    def rate_limit_hit(self, limit: str, *, client_id: str | None = None) -> None: ...


# -- client addresses ---------------------------------------------------------------------------


def _parse_address(text: str) -> IPAddress | None:
    """An address as X-Forwarded-For or REMOTE_ADDR carry it: bare, ``[v6]``, ``[v6]:port`` or
    ``v4:port`` (some proxies, Azure Application Gateway among them, append the port)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_key(address: IPAddress) -> str:
    """What an address is counted as: IPv4 as itself (an IPv4-mapped IPv6 address too), IPv6 by
    its /64."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


class ClientAddresses:
    """The client address of a request: X-Forwarded-For is believed only from trusted proxies
    (FORWARDED_ALLOW_IPS, as gunicorn reads it; ``*`` trusts every peer)."""

    def __init__(self, forwarded_allow_ips: Sequence[str]) -> None:
        self._trust_all = "*" in forwarded_allow_ips
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(entry) for entry in forwarded_allow_ips if entry != "*"
        )

    def _is_trusted(self, address: IPAddress) -> bool:
        return self._trust_all or any(address in network for network in self._trusted)

    def resolve(self, environ: Mapping[str, Any]) -> str:
        client = self.address(environ)
        if client is not None:
            return address_key(client)
        peer_text = str(environ.get("REMOTE_ADDR") or "")
        peer = _parse_address(peer_text)
        return address_key(peer) if peer is not None else "peer:" + _bounded(peer_text or "unknown")

    def address(self, environ: Mapping[str, Any]) -> IPAddress | None:
        """The client's own address, or None when it cannot be told (a peer without an IP
        address, or a hop a trusted proxy should have written that is not an address)."""
        peer = _parse_address(str(environ.get("REMOTE_ADDR") or ""))
        # gunicorn trusts a peer without an IP address (a UNIX socket) as it does a listed one.
        if peer is not None and not self._is_trusted(peer):
            return peer
        hops = [hop for hop in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()]
        client: IPAddress | None = None
        # Each trusted proxy appends the address it received the request from: walk from the
        # right past our own proxies; the first hop they did not vouch for is the client. What
        # is left of it was written by the client and proves nothing.
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # Not an address where a trusted proxy should have written one: count the request
                # as the peer's (resolve), so that varying junk cannot buy fresh budgets.
                return None
            client = address
            if not self._is_trusted(address):
                break
        # No header, or every hop a trusted proxy: the leftmost is where the request began.
        return client if client is not None else peer

    def peer_is_trusted(self, environ: Mapping[str, Any]) -> bool:
        """Whether the direct peer is a trusted proxy (whose headers are believed)."""
        peer = _parse_address(str(environ.get("REMOTE_ADDR") or ""))
        return peer is None or self._is_trusted(peer)

    def current(self) -> str:
        """Flask-Limiter's key function: the current request's client address."""
        return self.resolve(request.environ)


# -- keys ---------------------------------------------------------------------------------------


def _bounded(identifier: str) -> str:
    if len(identifier) <= MAX_IDENTIFIER_LENGTH:
        return identifier
    return "sha256:" + hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()


def refresh_limit_key(refresh_token: str, hasher: TokenHasher) -> str:
    """What the refresh grant's limit is counted by: the grant the token names, so that every
    generation of one grant shares one budget (never the client id, which every Claude user may
    share).

    Only a token whose tag is ours names a grant: any other value (forged, malformed, of the old
    format) is counted by its own digest, so that a stranger's value naming someone's grant never
    spends that grant's budget.
    """
    name = parse_refresh_token(hasher, refresh_token)
    if name is not None:
        return "grant:" + name.grant_id
    return "rt:" + hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- responses ----------------------------------------------------------------------------------


def _retry_after(item: RateLimitItem, reset_time: float, now: int) -> int:
    """Whole seconds until the window ends and frees a slot: never 0 (the caller would retry at
    once), never more than the window (Redis reports its end in fractional time, the clock in
    whole seconds)."""
    return min(item.get_expiry(), max(1, math.ceil(reset_time - now)))


def _seconds(seconds: int) -> str:
    return "1 second" if seconds == 1 else f"{seconds} seconds"


def too_many_requests_json(retry_after: int, description: str) -> Response:
    response = json_response({"error": RATE_LIMITED_ERROR, "error_description": description}, 429, no_store=True)
    response.headers["Retry-After"] = str(retry_after)
    return response


def too_many_requests_page(retry_after: int) -> Response:
    response = error_page(
        "Too many requests",
        f"Too many sign-in requests came from your network. Try again in {_seconds(retry_after)}.",
        429,
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


# -- the limits ---------------------------------------------------------------------------------


class RateLimitConfig(Protocol):
    """What ``install`` reads (entrypoints.config.RateLimitSettings): each limit in limits'
    notation, or None when it is off."""

    @property
    def enabled(self) -> bool: ...
    @property
    def storage_url(self) -> str | None: ...
    @property
    def register(self) -> str | None: ...
    @property
    def authorize(self) -> str | None: ...
    @property
    def refresh(self) -> str | None: ...
    @property
    def code_exchange(self) -> str | None: ...
    @property
    def client_auth_failures(self) -> str | None: ...
    @property
    def introspect(self) -> str | None: ...
    @property
    def revoke(self) -> str | None: ...
    @property
    def forwarded_allow_ips(self) -> tuple[str, ...]: ...


@dataclass
class _HeldHits:
    remaining: int
    window_ends_at: float


def _block_size(item: RateLimitItem) -> int:
    return item.amount // BLOCKS_PER_WINDOW if item.amount >= BATCHED_LIMIT else 1


@dataclass(frozen=True)
class ClientLimit:
    """A limit keyed by something the view knows only after authentication."""

    name: str
    items: tuple[RateLimitItem, ...]


def _client_limit(name: str, value: str | None) -> ClientLimit | None:
    return None if value is None else ClientLimit(name, tuple(parse_many(value)))


class RateLimits:
    """This app's rate limits: its own Flask-Limiter (never shared between apps) and the limits
    the token endpoints apply after authenticating the client."""

    def __init__(
        self,
        *,
        strategy: RateLimiter | None = None,
        clock: Clock | None = None,
        code_exchange: str | None = None,
        refresh: str | None = None,
        introspect: str | None = None,
        revoke: str | None = None,
        client_auth_failures: str | None = None,
    ) -> None:
        self._strategy = strategy
        self._clock = clock
        # Hits of batched limits this process counted in the store and has not used yet.
        self._held: dict[str, _HeldHits] = {}
        self._lock = threading.Lock()
        self.code_exchange = _client_limit("code-exchange", code_exchange)
        self.refresh = _client_limit("refresh", refresh)
        self.introspect = _client_limit("introspect", introspect)
        self.revoke = _client_limit("revoke", revoke)
        self._auth_failures = _client_limit("client-auth-failures", client_auth_failures)

    def charge(self, limit: ClientLimit | None, identifier: str, description: str) -> None:
        """Count one request against ``limit`` for ``identifier``; RateLimited past it."""
        if limit is None or self._strategy is None:
            return
        identifiers = (limit.name, _bounded(identifier))
        try:
            for item in limit.items:
                if not self._take(item, identifiers):
                    raise RateLimited(self._retry_after(item, identifiers), description, limit=limit.name)
        except LimitsStorageError as exc:
            log.error("rate-limit counters unavailable, %s not limited: %s", limit.name, exc.storage_error)

    def _take(self, item: RateLimitItem, identifiers: Sequence[str]) -> bool:
        """One hit of ``item``. A limit of at least BATCHED_LIMIT a window (introspection and
        revocation: 600 a minute) is counted in the shared store a block at a time (1/50 of the
        limit), the block's other hits kept by this process until its window ends: one counter
        write per block instead of one per request on the hot path. The shared count includes
        every block handed out, so all processes together never admit more than the limit; near
        it, a request may be refused while another process still holds unused hits (at most a
        block per process)."""
        assert self._strategy is not None and self._clock is not None
        block = _block_size(item)
        if block == 1:
            return bool(self._strategy.hit(item, *identifiers))
        key = item.key_for(*identifiers)
        now = self._clock.now()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.remaining > 0 and now < held.window_ends_at:
                held.remaining -= 1
                return True
        if not self._strategy.hit(item, *identifiers, cost=block):
            return False
        window_ends_at = self._strategy.get_window_stats(item, *identifiers).reset_time
        with self._lock:
            if len(self._held) >= MAX_HELD_BLOCKS:
                self._held.clear()
            self._held[key] = _HeldHits(remaining=block - 1, window_ends_at=window_ends_at)
        return True

    def check_client_authentication(self, client_id: str) -> None:
        """RateLimited if ``client_id`` failed authentication too often in the current window:
        a read only, so that the common case (a client that authenticates) costs no write."""
        limit = self._auth_failures
        if limit is None or self._strategy is None:
            return
        identifiers = (limit.name, _bounded(client_id))
        try:
            for item in limit.items:
                if not self._strategy.test(item, *identifiers):
                    raise RateLimited(
                        self._retry_after(item, identifiers),
                        "too many failed client authentications for this client_id; try again later",
                        limit=limit.name,
                    )
        except LimitsStorageError as exc:
            log.error("rate-limit counters unavailable, client authentication not limited: %s", exc.storage_error)

    def client_authentication_failed(self, client_id: str) -> None:
        limit = self._auth_failures
        if limit is None or self._strategy is None:
            return
        identifiers = (limit.name, _bounded(client_id))
        try:
            for item in limit.items:
                self._strategy.hit(item, *identifiers)
        except LimitsStorageError as exc:
            log.error("rate-limit counters unavailable, failed authentication not counted: %s", exc.storage_error)

    def _retry_after(self, item: RateLimitItem, identifiers: Sequence[str]) -> int:
        assert self._strategy is not None and self._clock is not None
        return _retry_after(item, self._strategy.get_window_stats(item, *identifiers).reset_time, self._clock.now())


def rate_limits() -> RateLimits:
    """The current app's rate limits."""
    return cast(RateLimits, current_app.extensions[EXTENSION])


def install(
    app: Flask, settings: RateLimitConfig, *, store: RateLimitStore, clock: Clock, audit: RateLimitAudit | None = None
) -> RateLimits:
    """Set up this app's rate limits from ``settings``: the limits per address on its registered
    view functions, and ``rate_limits()`` for the token endpoints.

    Call after the blueprints are registered. With ``settings.enabled`` false nothing is counted
    and no hook is installed. Every refusal is reported to ``audit``.
    """
    app.register_error_handler(RateLimited, _rate_limited(audit))
    if not settings.enabled:
        limits = RateLimits()
        app.extensions[EXTENSION] = limits
        return limits

    options: dict[str, Any]
    if settings.storage_url:
        uri = settings.storage_url
        options = {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
    else:
        uri, options = STORAGE_URI, {"store": store, "clock": clock}
    addresses = ClientAddresses(settings.forwarded_allow_ips)
    limiter = Limiter(
        addresses.current,
        storage_uri=uri,
        # Every storage error becomes limits.errors.StorageError (Redis's included), which the
        # views' limits catch; Flask-Limiter swallows (and logs) it for the limits it applies.
        storage_options=cast("dict[str, str | int]", {**options, "wrap_exceptions": True}),
        strategy=STRATEGY,
        swallow_errors=True,
        headers_enabled=False,
    )
    # Flask-Limiter's request hooks apply default and application-wide limits, which this app has
    # none of, and cost about as much as a whole introspection on every request (healthz and
    # /mcp included). init_app installs them only for a limiter the app does not list yet: listed
    # first, it is configured without them, and its limits run in the wrapped views alone.
    app.extensions.setdefault("limiter", set()).add(limiter)
    limiter.init_app(app)
    _limit_views(app, limiter, REGISTER_ENDPOINTS, settings.register, _json_on_breach(clock, audit))
    _limit_views(app, limiter, BROWSER_ENDPOINTS, settings.authorize, _page_on_breach(clock, audit))
    limits = RateLimits(
        strategy=limiter.limiter,
        clock=clock,
        code_exchange=settings.code_exchange,
        refresh=settings.refresh,
        introspect=settings.introspect,
        revoke=settings.revoke,
        client_auth_failures=settings.client_auth_failures,
    )
    app.extensions[EXTENSION] = limits
    return limits


def _limit_views(
    app: Flask,
    limiter: Limiter,
    endpoints: Sequence[str],
    limit: str | None,
    on_breach: Callable[[RequestLimit], Response],
) -> None:
    """Wrap this app's view functions (not the blueprints' shared ones: another app built in the
    same process keeps its own) in a limit per client address; each endpoint counts on its own."""
    if limit is None:
        return
    for endpoint in endpoints:
        view: Callable[..., Any] = app.view_functions[endpoint]
        app.view_functions[endpoint] = limiter.limit(limit, on_breach=on_breach)(view)


# The names the audit log gives the limits per client address.
REGISTER_LIMIT = "register"
BROWSER_LIMIT = "authorize"


def _json_on_breach(clock: Clock, audit: RateLimitAudit | None) -> Callable[[RequestLimit], Response]:
    def on_breach(limit: RequestLimit) -> Response:
        if audit is not None:
            audit.rate_limit_hit(REGISTER_LIMIT)
        retry_after = _retry_after(limit.limit, limit.window.reset_time, clock.now())
        return too_many_requests_json(retry_after, "too many requests from this address; try again later")

    return on_breach


def _page_on_breach(clock: Clock, audit: RateLimitAudit | None) -> Callable[[RequestLimit], Response]:
    def on_breach(limit: RequestLimit) -> Response:
        if audit is not None:
            audit.rate_limit_hit(BROWSER_LIMIT)
        return too_many_requests_page(_retry_after(limit.limit, limit.window.reset_time, clock.now()))

    return on_breach


def _rate_limited(audit: RateLimitAudit | None) -> Callable[[RateLimited], Response]:
    def handle(exc: RateLimited) -> Response:
        if audit is not None:
            audit.rate_limit_hit(exc.limit)
        return too_many_requests_json(exc.retry_after, exc.description)

    return handle

