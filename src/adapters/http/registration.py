"""Dynamic Client Registration endpoint (RFC 7591 §3) and the client configuration endpoint
(RFC 7592 §2: read, replace and delete with the registration access token)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from ...domain.client_documents import json_object
from ...domain.errors import InvalidClientMetadata, InvalidToken
from ...domain.model import Client
from ...domain.services.registration import CLIENT_CONFIGURATION_PATH
from ...domain.services.registration import MAX_METADATA_DOCUMENT_BYTES
from .errors import json_response, oauth_error_response
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
    not_metadata = "the body must be a JSON object of client metadata"
    return json_object(body, invalid=not_metadata, not_object=not_metadata)


def _log_client(action: str, client: Client) -> None:
    # Bounded: a stranger chooses these values, and must not be able to flood the log.
    log.info(
        "%s client %s (%r) redirecting to %d URI(s) on %r",
        action,
        client.client_id,
        client.display_name[:LOGGED_TEXT],
        len(client.redirect_uris),
        ", ".join(sorted({urlsplit(uri).netloc or urlsplit(uri).scheme for uri in client.redirect_uris}))[:LOGGED_TEXT],
    )


@bp.post("/oauth/register")
@bp.post("/register")
def register() -> Response:
    registered = services().registration_service().register(_read_metadata())
    _log_client("registered", registered.client)
    return json_response(registered.response(), 201, no_store=True)


@bp.errorhandler(InvalidToken)
def invalid_registration_token(error: InvalidToken) -> Response:
    # RFC 7592 §2 / RFC 6750 §3.1: the registration access token is a bearer token.
    response = oauth_error_response(error)
    response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _registration_token() -> str | None:
    """RFC 6750 §2.1: the bearer token in the Authorization header (the only place RFC 7592
    uses)."""
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@bp.route(CLIENT_CONFIGURATION_PATH + "<client_id>", methods=["GET", "PUT", "DELETE"])
def configuration(client_id: str) -> Response:
    service, token = services().registration_service(), _registration_token()
    if request.method == "GET":
        return json_response(service.read(client_id, token).response(), no_store=True)
    if request.method == "PUT":
        # Authenticated before the body is read: a stranger's body is never parsed.
        service.read(client_id, token)
        updated = service.replace(client_id, token, _read_metadata())
        _log_client("updated", updated.client)
        return json_response(updated.response(), no_store=True)
    service.delete(client_id, token)
    log.info("deleted client %s at its own request (RFC 7592)", client_id)
    return Response(status=204, headers={"Cache-Control": "no-store"})
