"""Facts of the HTTP request being served that more than one adapter needs.

``request_id()``: the id that ties a request's log lines and audit events together. Generated
here and kept in ``flask.g`` for the length of the request; a request-id middleware (taking a
trusted proxy's ``X-Request-ID``) sets ``g.request_id`` first and this returns its value.
"""

from __future__ import annotations

import secrets

from flask import g

# 128 bits: unique across every instance without coordination.
REQUEST_ID_BYTES = 16


def request_id() -> str:
    """The current request's id (call inside a request context)."""
    current = g.get("request_id")
    if isinstance(current, str) and current:
        return current
    generated = secrets.token_hex(REQUEST_ID_BYTES)
    g.request_id = generated
    return generated
