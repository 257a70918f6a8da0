"""Dynamic Client Registration endpoint (RFC 7591 §3)."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from ...domain.errors import InvalidClientMetadata
from ...domain.services.registration import MAX_METADATA_DOCUMENT_BYTES
from .errors import json_response
from .schemas import read_body
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("registration", __name__)

# 8 KiB: Claude's registration is under 1 KiB, and one with ten ordinary redirect URIs and every
# informational URL stays well under; a larger body is refused before it is parsed. The
# per-field caps (domain.services.registration) bound each field within it.
MAX_REGISTRATION_BYTES = MAX_METADATA_DOCUMENT_BYTES
LOGGED_TEXT = 200


def _read_metadata() -> dict[str, object]:
    # The domain validates every field (the same rules serve client ID metadata documents);
    # here the body only has to be one small JSON object.
    if (request.content_length or 0) > MAX_REGISTRATION_BYTES:
        raise InvalidClientMetadata(f"registration body larger than {MAX_REGISTRATION_BYTES} bytes")
    body = read_body(request.stream, MAX_REGISTRATION_BYTES + 1)
    if len(body) > MAX_REGISTRATION_BYTES:
        raise InvalidClientMetadata(f"registration body larger than {MAX_REGISTRATION_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidClientMetadata("the body must be a JSON object of client metadata") from None
    if not isinstance(document, dict):
        raise InvalidClientMetadata("the body must be a JSON object of client metadata")
    return document


@bp.post("/oauth/register")
@bp.post("/register")
def register() -> Response:
    registered = services().registration_service().register(_read_metadata())
    # Bounded: a stranger chooses these values, and must not be able to flood the log.
    client = registered.client
    log.info(
        "registered client %s (%r) redirecting to %d URI(s) on %r",
        client.client_id,
        client.display_name[:LOGGED_TEXT],
        len(client.redirect_uris),
        ", ".join(sorted({urlsplit(uri).netloc or urlsplit(uri).scheme for uri in client.redirect_uris}))[:LOGGED_TEXT],
    )
    return json_response(registered.response(), 201, no_store=True)
