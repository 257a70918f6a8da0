"""Serving while storage is not ready: until the schema check succeeds, every request but the
liveness probe gets 503 with Retry-After (RFC 9110 §15.6.4), and the check is retried, so that a
busy or unreachable database at start-up never stops the server."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from flask import Flask, request
from werkzeug.wrappers import Response as BaseResponse

from .errors import RETRY_AFTER_SECONDS, service_unavailable

log = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"


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
        if request.path == LIVENESS_PATH or readiness.ready():
            return None
        return storage_unavailable()
