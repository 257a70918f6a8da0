"""``/``: a small status page for a person who opens the server's address in a browser: which
service this is, that it is an OAuth 2.1 authorization server (RFC 8414 metadata) and an MCP
endpoint (RFC 9728 protected resource metadata), and the MCP URL to give Claude."""

from __future__ import annotations

from flask import Blueprint, Response

from .errors import render_page
from .metadata import AUTHORIZATION_SERVER_METADATA_PATH, PROTECTED_RESOURCE_METADATA_PATH
from .services import services

bp = Blueprint("home", __name__)

# Nothing on it is secret or personal, and it changes only with the configuration.
HOME_MAX_AGE = 300


@bp.get("/")
def home() -> Response:
    policy = services().policy()
    page = render_page(
        "home.html",
        mcp_url=policy.resource,
        authorization_server_metadata=policy.issuer + AUTHORIZATION_SERVER_METADATA_PATH,
        protected_resource_metadata=policy.issuer + PROTECTED_RESOURCE_METADATA_PATH,
    )
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = f"public, max-age={HOME_MAX_AGE}"
    return response
