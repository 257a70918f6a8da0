"""Serving while storage is not ready: until the schema check succeeds, every request but the
probes gets 503 with Retry-After (RFC 9110 §15.6.4), and the check is retried, so that a
busy or unreachable database at start-up never stops the server.

``/readyz`` (issue 11 §4): 200 when storage answers a query and its schema is current, else 503
with a JSON body saying which; it and ``/metrics`` answer for themselves, outside that gate."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from ...domain.ports import StorageAdministration

from flask import Flask, jsonify, request
from werkzeug.wrappers import Response as BaseResponse

from .errors import RETRY_AFTER_SECONDS, service_unavailable

log = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
# Paths that answer for themselves while storage is not ready.
UNGATED_PATHS = frozenset({LIVENESS_PATH, READINESS_PATH, "/metrics"})


class StorageReadiness:
    """Remembers whether the schema check succeeded; retries it at most every ``retry_every``
    seconds, in one thread at a time (the others answer 503 meanwhile)."""

    def __init__(self, check: Callable[[], bool], *, retry_every: float = RETRY_AFTER_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._retry_every = retry_every
        self._monotonic = monotonic
        self._ready = False
        self._next_check = 0.0
        self._lock = threading.Lock()

    def ready(self) -> bool:
        if self._ready:
            return True
        if self._monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return False
        try:
            if not self._ready:
                self._ready = self._check()
                self._next_check = self._monotonic() + self._retry_every
                if self._ready:
                    log.info("storage is ready")
            return self._ready
        finally:
            self._lock.release()


def storage_unavailable() -> BaseResponse:
    return service_unavailable(
        "storage is not available yet; retry shortly",
        title="The service is starting",
        message="Its database is not available yet. Try again in a moment.",
    )


def install(app: Flask, readiness: StorageReadiness) -> None:
    @app.before_request
    def require_storage() -> BaseResponse | None:
        if request.path in UNGATED_PATHS or readiness.ready():
            return None
        return storage_unavailable()


def readiness_report(admin: StorageAdministration, extra: Callable[[], Mapping[str, Any]] | None = None) -> tuple[dict[str, Any], bool]:
    """What /readyz answers: storage reachable (it answers the query for the applied schema
    versions) and migrations current. Nothing that grows with the data: probes come often."""
    report: dict[str, Any] = {}
    ready = True
    try:
        pending = admin.pending_migrations()
    except Exception as exc:  # any storage failure means not ready; the log says which
        log.warning("readiness: storage is not reachable: %s", type(exc).__name__)
        report["storage"] = {"reachable": False}
        ready = False
    else:
        report["storage"] = {"reachable": True, "pending_migrations": pending}
        if pending:
            ready = False
    if extra is not None:
        report.update(extra())
    report["status"] = "ready" if ready else "not ready"
    return report, ready


def install_probe(app: Flask, admin: StorageAdministration, extra: Callable[[], Mapping[str, Any]] | None = None) -> None:
    def readyz() -> BaseResponse:
        report, ready = readiness_report(admin, extra)
        response = jsonify(report)
        response.status_code = 200 if ready else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule(READINESS_PATH, "readyz", readyz, methods=["GET"])
