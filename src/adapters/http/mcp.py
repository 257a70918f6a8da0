"""The protected MCP endpoint (Streamable HTTP, JSON responses), guarded by bearer tokens
(RFC 6750, RFC 9728 ``resource_metadata``, RFC 8707 audience) and an Origin check."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from ...domain.errors import InsufficientScope, InvalidRequest, InvalidToken, OAuthError, TemporarilyUnavailable
from ...domain.model import AccessContext
from ...domain.policy import ServerPolicy
from .errors import json_response, oauth_error_response
from .metadata import MCP_PATH
from .schemas import read_body
from .mcp_protocol import INTERNAL_ERROR, INVALID_REQUEST, McpError, McpReply, McpServer, error_body, parse_request
from .services import services

log = logging.getLogger(__name__)
bp = Blueprint("mcp", __name__)

MAX_MCP_BODY = 1024 * 1024
PROTECTED_RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource" + MCP_PATH


@dataclass(frozen=True)
class OriginPolicy:
    """Origins whose pages may call /mcp (besides the server's own)."""

    public_origin: str
    allowed: tuple[str, ...] = ()

    def allows(self, origin: str) -> bool:
        return origin == self.public_origin or "*" in self.allowed or origin in self.allowed


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(policy: ServerPolicy, error: OAuthError | None = None, scopes: tuple[str, ...] = ()) -> str:
    """RFC 6750 §3 challenge with the RFC 9728 §5.1 ``resource_metadata`` pointer."""
    params = []
    if error is not None:
        params.append(f"error={_quoted(error.error)}")
        if error.description:
            params.append(f"error_description={_quoted(error.description)}")
    params.append(f"resource_metadata={_quoted(policy.issuer + PROTECTED_RESOURCE_METADATA_PATH)}")
    params.append(f"scope={_quoted(' '.join(scopes or policy.scopes_supported))}")
    return "Bearer " + ", ".join(params)


def _challenge(policy: ServerPolicy, error: OAuthError, *, named: bool = True, scopes: tuple[str, ...] = ()) -> Response:
    response = oauth_error_response(error)
    response.headers["WWW-Authenticate"] = bearer_challenge(policy, error if named else None, scopes)
    return response


def _bearer_token() -> str | None:
    # RFC 6750 §2.1 only: tokens in the query string or the body are ignored (MCP authorization).
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _json_reply(reply: McpReply) -> Response:
    if reply.body is None:
        return Response(status=reply.status)
    return json_response(reply.body, reply.status)


def _jsonrpc_error(status: int, code: int, message: str) -> Response:
    return json_response(error_body(None, code, message), status)


@bp.route(MCP_PATH, methods=["GET", "DELETE", "PUT", "PATCH"])
def method_not_allowed() -> Response:
    # 2026-07-28 Streamable HTTP: no GET stream and no sessions; stateless servers answer 405.
    response = _jsonrpc_error(405, INVALID_REQUEST, "Method Not Allowed: the MCP endpoint accepts POST only")
    response.headers["Allow"] = "POST"
    return response


@bp.post(MCP_PATH)
def mcp_endpoint() -> Response:
    app_services = services()
    origin = request.headers.get("Origin")
    # Streamable HTTP: servers MUST validate Origin (DNS rebinding); an invalid one is a 403.
    if origin is not None and not app_services.mcp_origins().allows(origin):
        return _jsonrpc_error(403, INVALID_REQUEST, f"Forbidden: origin {origin!r} is not allowed")

    policy = app_services.policy()
    token = _bearer_token()
    try:
        access = app_services.bearer_authenticator().authenticate(token)
    except InvalidToken as error:
        # No token: a bare challenge (RFC 6750 §3.1); a bad one says invalid_token.
        return _challenge(policy, error, named=token is not None)

    try:
        body = _read_body()
    except InvalidRequest as error:
        return _jsonrpc_error(400, INVALID_REQUEST, f"Invalid Request: {error.description}")
    if body is None:
        return _jsonrpc_error(413, INVALID_REQUEST, f"Invalid Request: body larger than {MAX_MCP_BODY} bytes")
    return _answer(app_services.mcp_server(), policy, access, body)


def _read_body() -> bytes | None:
    """The request body, or None when it is larger than MAX_MCP_BODY.

    A body without Content-Length (chunked) is cut at the read limit without an error, so read
    one byte more than allowed: getting it means the body was too large.
    """
    try:
        body = read_body(get_input_stream(request.environ, max_content_length=MAX_MCP_BODY + 1))
    except RequestEntityTooLarge:
        return None
    return body if len(body) <= MAX_MCP_BODY else None


def _answer(server: McpServer, policy: ServerPolicy, access: AccessContext, body: bytes) -> Response:
    try:
        mcp_request = parse_request(body, request.headers.getlist)
    except McpError as error:
        return json_response(error_body(error.request_id, error.code, error.message, error.data), error.status)
    try:
        reply = server.handle(mcp_request, access)
    except InvalidToken as error:
        # The upstream session ended while calling a tool: the grant is revoked, sign in again.
        return _challenge(policy, error)
    except TemporarilyUnavailable as error:
        response = json_response(error_body(mcp_request.id, INTERNAL_ERROR, f"Temporarily unavailable: {error.description}"), 503)
        response.headers["Retry-After"] = "5"
        return response
    except InsufficientScope as error:
        log.info("client %s lacks scope for %s", access.client_id, mcp_request.method)
        # MCP scope challenge: 403 naming the scopes the call needs, with what was granted.
        needed = tuple(dict.fromkeys(error.required_scopes + access.scopes))
        return _challenge(policy, error, scopes=needed)
    return _json_reply(reply)
