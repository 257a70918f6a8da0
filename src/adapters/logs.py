"""Log lines (issue 11 §4): LOG_FORMAT=text (human-readable) or json (one JSON object per line:
time, level, logger, message, request_id and the exception, if any), and a request id per HTTP
request, returned in ``X-Request-ID``.

The id is taken from the request's ``X-Request-ID`` only when the direct peer is a trusted proxy
(FORWARDED_ALLOW_IPS) and the value is short and of a safe charset (it goes into every log line
and the audit log); otherwise one is generated (``http.request_context.request_id``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone
from typing import Any, Sequence, TextIO

from flask import Flask, Response, g, has_request_context, request

from .http.ratelimit import ClientAddresses
from .http.request_context import request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Enough for a UUID, a W3C trace id or an AWS trace header; nothing that could break a log line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=-]{1,128}")
# The format `serve` has always used; a request's lines end with its id.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives every record the current request's id (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id() if has_request_context() else None
        return True


def utc_time(timestamp: float) -> str:
    """A log line's ``time``: ISO 8601 in UTC, to the millisecond (``2026-11-30T20:19:49.273Z``)."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line(fields: dict[str, Any]) -> str:
    """One JSON object on one line, compact, non-ASCII kept as it is."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json_line(line)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        current = getattr(record, "request_id", None)
        return line if current is None else f"{line} [request {current}]"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at each line (a test runner swaps it, a redirect), not
    to the stream that was current when the handler was made."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, log_format: str, *, stream: TextIO | None = None) -> logging.Handler:
    """The root logger's one handler for the application's lines (gunicorn's access log keeps its
    own); called by the app factory, so `gunicorn wsgi:app` and `serve` log alike. Calling it
    again replaces the handler it installed before."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_mcp_oauth_bridge", False):
            root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else StderrHandler()
    handler._mcp_oauth_bridge = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else _TextFormatter(TEXT_FORMAT))
    root.addHandler(handler)
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(level)
    logging.getLogger("mcp_oauth_bridge").setLevel(level)
    return handler


def install_request_ids(app: Flask, forwarded_allow_ips: Sequence[str]) -> None:
    addresses = ClientAddresses(forwarded_allow_ips)

    @app.before_request
    def take_request_id() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER)
        if offered and addresses.peer_is_trusted(request.environ) and SANE_REQUEST_ID.fullmatch(offered):
            g.request_id = offered

    @app.after_request
    def return_request_id(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id()
        return response
