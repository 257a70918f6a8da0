"""Prometheus metrics (issue 11 §4; the text exposition format of Prometheus/OpenMetrics).

Under gunicorn every worker counts into files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, set up and wiped by the gunicorn configuration's hooks) and ``/metrics``
adds up every worker's files, the exited ones' included; without that variable (Flask's test
client, one process) the default in-process registry serves.

prometheus_client decides between the two when it is first imported, so it is imported here
only when a metric is first used, in a worker, after the gunicorn master has set the variable:
importing this module imports nothing of it.

Labels are bounded: Flask's endpoint name (never the raw path), the method, the status code,
the grant type, the identity provider and a fixed set of outcomes.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from flask import Flask, Response, g, request

from .http.ratelimit import ClientAddresses, RateLimitAudit

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
PREFIX = "mcp_oauth_bridge_"
# Seconds: from a cached lookup to an upstream call at its 15 s timeout.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
# Requests no view answered (404s for any path) share one label value.
UNMATCHED_ENDPOINT = "unmatched"


class _Metrics:
    """The metric objects, made once per process on first use."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.http_requests: Histogram = Histogram(
            PREFIX + "http_request_duration_seconds",
            "HTTP requests by endpoint, method and status, and how long they took",
            ("endpoint", "method", "status"),
            buckets=HTTP_BUCKETS,
        )
        self.tokens_issued: Counter = Counter(PREFIX + "tokens_issued", "Token responses issued, by grant type", ("grant_type",))
        self.refresh_reuse: Counter = Counter(
            PREFIX + "refresh_token_reuse", "Rotated refresh tokens presented again (each revokes its grant)"
        )
        self.code_replay: Counter = Counter(
            PREFIX + "code_replay", "Redeemed authorization codes presented again (each revokes its grant)"
        )
        self.upstream_calls: Histogram = Histogram(
            PREFIX + "upstream_request_duration_seconds",
            "Calls to the upstream identity provider by provider, operation and outcome, and how long they took",
            ("provider", "operation", "outcome"),
            buckets=UPSTREAM_BUCKETS,
        )
        self.rate_limit_hits: Counter = Counter(PREFIX + "rate_limit_hits", "Requests refused by a rate limit", ("limit",))


_made: list[_Metrics] = []
_making = threading.Lock()


def metrics() -> _Metrics:
    """This process's metrics, made by the first request that needs them. Under a lock: a new
    worker's first requests arrive together on several threads, and registering a metric twice
    fails."""
    if _made:
        return _made[0]
    with _making:
        if not _made:
            _made.append(_Metrics())
        return _made[0]


class PrometheusTelemetry:
    """ports.Telemetry into this process's Prometheus metrics."""

    def token_issued(self, grant_type: str) -> None:
        metrics().tokens_issued.labels(grant_type).inc()

    def refresh_reuse(self) -> None:
        metrics().refresh_reuse.inc()

    def code_replay(self) -> None:
        metrics().code_replay.inc()

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        metrics().upstream_calls.labels(provider, operation, outcome).observe(seconds)


class CountedRateLimitAudit:
    """Counts each rate-limit refusal, then reports it to the audit trail it wraps."""

    def __init__(self, inner: RateLimitAudit | None) -> None:
        self._inner = inner

    def rate_limit_hit(self, limit: str, *, client_id: str | None = None) -> None:
        metrics().rate_limit_hits.labels(limit).inc()
        if self._inner is not None:
            self._inner.rate_limit_hit(limit, client_id=client_id)


# -- exposition ---------------------------------------------------------------------------------


def exposition(live_grants: Callable[[], int]) -> bytes:
    """Every process's metrics (multiprocess mode) or this one's, and the live grants read now."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector

    metrics()  # every family is listed from the first scrape on, zero until counted
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)

    class LiveGrants(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            try:
                value = live_grants()
            except Exception:  # storage down: /readyz says so; the other metrics still serve
                log.warning("live grants could not be counted for /metrics", exc_info=True)
                return
            yield GaugeMetricFamily(PREFIX + "live_grants", "Grants not revoked (read from storage at scrape time)", value=value)

    live = CollectorRegistry()
    live.register(LiveGrants())
    return body + generate_latest(live)


# -- access -------------------------------------------------------------------------------------


class MetricsAccess:
    """Who may read /metrics: a client whose real address (after trusted X-Forwarded-For, as the
    rate limits judge it) is in ``allowed``, or anyone with the bearer ``token``."""

    def __init__(self, allowed: Sequence[str], token: str | None, addresses: ClientAddresses) -> None:
        self._allowed = tuple(ipaddress.ip_network(entry) for entry in allowed)
        self._token = token.encode() if token else None
        self._addresses = addresses

    def decide(self, environ: dict[str, Any]) -> int | None:
        """None when allowed; otherwise the status to refuse with (401: a wrong token)."""
        authorization = str(environ.get("HTTP_AUTHORIZATION") or "")
        if authorization:
            scheme, _, presented = authorization.partition(" ")
            if self._token is not None and scheme.lower() == "bearer":
                if hmac.compare_digest(presented.strip().encode(), self._token):
                    return None
            return 401
        address = self._addresses.address(environ)
        if address is not None and any(address in network for network in self._allowed if network.version == address.version):
            return None
        # An IPv4 client seen through an IPv6 socket as ::ffff:a.b.c.d.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(mapped in network for network in self._allowed if network.version == 4):
                return None
        return 403


def install(
    app: Flask,
    *,
    allowed_ips: Sequence[str],
    token: str | None,
    forwarded_allow_ips: Sequence[str],
    live_grants: Callable[[], int],
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Count every request of ``app`` and serve ``/metrics`` under the access rule."""
    access = MetricsAccess(allowed_ips, token, ClientAddresses(forwarded_allow_ips))

    def start_timer() -> None:
        g.metrics_started = monotonic()

    # First of the app's hooks, so that a request another hook answers (the storage-readiness
    # gate's 503) is counted too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)

    @app.after_request
    def count_request(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            endpoint = request.endpoint or UNMATCHED_ENDPOINT
            metrics().http_requests.labels(endpoint, request.method, str(response.status_code)).observe(monotonic() - started)
        return response

    def metrics_view() -> Response:
        refused = access.decide(request.environ)
        if refused is not None:
            response = Response("forbidden\n" if refused == 403 else "unauthorized\n", status=refused, mimetype="text/plain")
            if refused == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        from prometheus_client import CONTENT_TYPE_LATEST

        response = Response(exposition(live_grants), mimetype=None)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule(METRICS_PATH, "metrics", metrics_view, methods=["GET"])
