"""Discovery documents: authorization server metadata (RFC 8414 §2, RFC 9207 §3) and protected
resource metadata (RFC 9728 §2)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from ...domain.policy import ServerPolicy
from ...domain.security import SUPPORTED_CODE_CHALLENGE_METHODS
from ...domain.services.registration import SUPPORTED_GRANT_TYPES, SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS
from .errors import json_response
from .services import services

bp = Blueprint("metadata", __name__)

AUTHORIZATION_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"
REGISTRATION_PATH = "/oauth/register"
REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
MCP_PATH = "/mcp"
AUTHORIZATION_SERVER_METADATA_PATH = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"
METADATA_MAX_AGE = 300


def authorization_server_metadata(policy: ServerPolicy) -> dict[str, Any]:
    issuer = policy.issuer
    document: dict[str, Any] = {
        # RFC 8414 §3.3: clients compare this with the URL they used, as strings.
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(SUPPORTED_GRANT_TYPES),
        # MCP clients refuse to continue without S256 listed here.
        "code_challenge_methods_supported": list(SUPPORTED_CODE_CHALLENGE_METHODS),
        "token_endpoint_auth_methods_supported": list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": list(SUPPORTED_TOKEN_ENDPOINT_AUTH_METHODS),
        "scopes_supported": list(policy.scopes_supported),
        # RFC 9207 §3: every authorization response carries iss.
        "authorization_response_iss_parameter_supported": True,
    }
    if policy.dynamic_registration_open:
        # RFC 8414 §2: advertised only while registration is open (CLIENT_REGISTRATION).
        document["registration_endpoint"] = issuer + REGISTRATION_PATH
    # draft-ietf-oauth-client-id-metadata-document-02 §6: an https URL may be the client_id
    # (clients such as Claude then use it instead of registering).
    document["client_id_metadata_document_supported"] = policy.metadata_documents_accepted
    return document


def protected_resource_metadata(policy: ServerPolicy) -> dict[str, Any]:
    return {
        "resource": policy.resource,
        "authorization_servers": [policy.issuer],
        "scopes_supported": list(policy.scopes_supported),
        # RFC 9728 §2: tokens only in the Authorization header.
        "bearer_methods_supported": ["header"],
        # RFC 9728 §2: the name people see for it (SERVICE_NAME).
        "resource_name": policy.service_name or "mcp-oauth-bridge",
    }


def _document(document: dict[str, Any]) -> Response:
    response = json_response(document)
    response.headers["Cache-Control"] = f"public, max-age={METADATA_MAX_AGE}"
    return response


@bp.get(AUTHORIZATION_SERVER_METADATA_PATH)
@bp.get("/.well-known/openid-configuration")
def authorization_server() -> Response:
    return _document(authorization_server_metadata(services().policy()))


@bp.get(PROTECTED_RESOURCE_METADATA_PATH)
@bp.get(PROTECTED_RESOURCE_METADATA_PATH + MCP_PATH)
def protected_resource() -> Response:
    return _document(protected_resource_metadata(services().policy()))


@bp.get("/healthz")
def health() -> Response:
    return json_response({"status": "ok"})
