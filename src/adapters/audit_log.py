"""The audit log (issue 11 §3): security events as one JSON object per line on the logger
``mcp_oauth_bridge.audit``, to stderr or appended to the file AUDIT_LOG_FILE.

Each line: ``time`` (ISO 8601, UTC), ``event``, ``client_id``, ``subject`` (the upstream sub/oid),
``grant_id``, ``client_address`` and ``request_id`` (null outside an HTTP request, e.g. from the
CLI), then ``reason``, ``upstream_error``, ``limit`` or ``endpoint`` where the event has them. The
client address is the one the rate limits count (X-Forwarded-For only from FORWARDED_ALLOW_IPS).
The domain's events carry no secret; the adapter adds only what it computes itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from flask import has_request_context, request

from ..domain.audit import RATE_LIMIT_HIT, AuditEvent
from .http.ratelimit import ClientAddresses
from .http.request_context import request_id
from .logs import StderrHandler, json_line, utc_time

AUDIT_LOGGER = "mcp_oauth_bridge.audit"

log = logging.getLogger(__name__)


def _handler(path: str | None) -> logging.Handler:
    handler: logging.Handler
    if path:
        # Appended to, never truncated; each line is one write, so workers sharing the file
        # (O_APPEND) do not interleave within a line.
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    else:
        handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def configure_audit_logger(path: str | None) -> logging.Logger:
    """The audit logger with one handler of ours (replacing one installed before: the last app
    configured wins, which matters only to tests that build several). It does not propagate:
    root handlers (LOG_FORMAT, gunicorn's) must not write audit events a second time."""
    logger = logging.getLogger(AUDIT_LOGGER)
    for old in [handler for handler in logger.handlers if getattr(handler, "_mcp_oauth_bridge_audit", False)]:
        logger.removeHandler(old)
        old.close()
    handler = _handler(path)
    setattr(handler, "_mcp_oauth_bridge_audit", True)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class JsonAuditLog:
    """The ``AuditTrail`` port, written as JSON lines."""

    def __init__(self, *, path: str | None, forwarded_allow_ips: Sequence[str]) -> None:
        self._logger = configure_audit_logger(path)
        self._addresses = ClientAddresses(forwarded_allow_ips)

    def record(self, event: AuditEvent) -> None:
        self._write(
            event.event,
            client_id=event.client_id,
            subject=event.subject,
            grant_id=event.grant_id,
            reason=event.reason,
            upstream_error=event.upstream_error,
        )

    def rate_limit_hit(self, limit: str, *, client_id: str | None = None) -> None:
        """A request refused by the rate limit ``limit`` (its name: an endpoint group or a
        per-client limit such as ``refresh``)."""
        endpoint = request.endpoint if has_request_context() else None
        self._write(RATE_LIMIT_HIT, client_id=client_id, subject=None, grant_id=None, limit=limit, endpoint=endpoint)

    def _write(self, event: str, *, client_id: str | None, subject: str | None, grant_id: str | None, **extra: Any) -> None:
        line: dict[str, Any] = {
            "time": utc_time(time.time()),
            "event": event,
            "client_id": client_id,
            "subject": subject,
            "grant_id": grant_id,
            "client_address": None,
            "request_id": None,
        }
        if has_request_context():
            line["client_address"] = self._addresses.resolve(request.environ)
            line["request_id"] = request_id()
        line.update({name: value for name, value in extra.items() if value is not None})
        try:
            self._logger.info(json_line(line))
        except Exception:  # noqa: BLE001 - an audit line lost must not fail the request it records
            log.exception("could not write the audit event %s", event)
