"""One place mapping domain errors to HTTP (RFC 6749 §5.2, RFC 6750 §3, RFC 7591 §3.2.2; 503 with
Retry-After, RFC 9110 §15.6.4 and §10.2.3, when storage fails)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response as BaseResponse

from ...domain.errors import OAuthError, TemporarilyUnavailable
from ...domain.ports import StorageError, UpstreamIdentityError
from .mcp_protocol import INTERNAL_ERROR, INVALID_REQUEST, error_body

log = logging.getLogger(__name__)

STATUS_BY_ERROR = {
    # RFC 6749 §5.2: invalid_client may be 401; it MUST be when the client used HTTP auth.
    "invalid_client": 401,
    # RFC 6750 §3.1
    "invalid_token": 401,
    "insufficient_scope": 403,
    "temporarily_unavailable": 503,
    "server_error": 500,
}
CLIENT_AUTH_CHALLENGE = 'Basic realm="mcp-oauth-bridge"'
# Blueprints whose clients read JSON: an HTTP-level error there (a method the path does not
# take, a body cut short) is an OAuth error object (RFC 6749 §5.2), or JSON-RPC on /mcp.
OAUTH_JSON_BLUEPRINTS = frozenset({"token", "registration", "metadata"})
JSONRPC_BLUEPRINT = "mcp"
# Blueprints of the pages a person's browser opens (authorize, consent, the upstream callback,
# the fake IdP's sign-in): a failure there is shown as the error page, not as JSON.
BROWSER_BLUEPRINTS = frozenset({"authorization", "fake_idp", "connections", "home"})
# Seconds a client should wait before retrying a 503 of ours.
RETRY_AFTER_SECONDS = 2


# RFC 6749 §5.1: responses with tokens or credentials must not be cached.
NO_STORE_HEADERS = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def json_response(body: Any, status: int = 200, *, no_store: bool = False) -> Response:
    # json.dumps and the headers given whole: jsonify's provider machinery, and setting headers
    # one by one on a built response, are a measurable share of a token request.
    headers = [("Content-Type", "application/json"), *(NO_STORE_HEADERS if no_store else ())]
    return Response(json.dumps(body, separators=(",", ":")), status=status, headers=headers)


def oauth_error_response(error: OAuthError) -> Response:
    body = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    response = json_response(body, STATUS_BY_ERROR.get(error.error, 400), no_store=True)
    if error.error == "invalid_client":
        response.headers["WWW-Authenticate"] = CLIENT_AUTH_CHALLENGE
    elif error.error == TemporarilyUnavailable.error:
        # RFC 9110 §10.2.3: when to try again (an outage of ours or of the identity provider).
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


# A lone UTF-16 surrogate: valid in a Python str (JSON's "\ud800"), not encodable as UTF-8.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def render_page(template: str, **context: Any) -> bytes:
    """A page as UTF-8 bytes. Registration refuses text that UTF-8 cannot encode; should any
    still reach a page (a row stored before that rule), it shows as U+FFFD instead of failing
    the response."""
    return LONE_SURROGATE.sub("\ufffd", render_template(template, **context)).encode("utf-8")


def error_page(
    title: str, message: str, status: int, *, return_url: str | None = None, destination: Any = None
) -> Response:
    """An HTML error page: where redirecting to the client would be unsafe, or where the person
    must read what went wrong (``return_url``: a validated way back to the client, leading to
    ``destination``, a ``RedirectDestination``)."""
    page = render_page("error.html", title=title, message=message, return_url=return_url, destination=destination)
    response = Response(page, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def service_unavailable(description: str, *, title: str, message: str) -> Response:
    """503 with Retry-After: on a browser step the error page (``title``, ``message``), elsewhere
    the OAuth error ``temporarily_unavailable`` (RFC 6749 §4.1.2.1, §5.2) with ``description``."""
    if request.blueprint in BROWSER_BLUEPRINTS:
        response = error_page(title, message, 503)
    else:
        response = oauth_error_response(TemporarilyUnavailable(description))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _endpoint_of(error: HTTPException) -> str | None:
    """The endpoint of the request's path, also when routing failed on the method alone."""
    if request.url_rule is not None:
        return str(request.url_rule.endpoint)
    if not isinstance(error, MethodNotAllowed):
        return None
    adapter = current_app.url_map.bind("localhost")
    for method in error.valid_methods or ():
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        return str(endpoint)
    return None


def http_error_response(error: HTTPException) -> BaseResponse:
    """werkzeug's HTML error page, except on the JSON endpoints, which answer in their own shape."""
    if error.response is not None:
        # An answer prepared with the exception (e.g. by an extension) is sent as it is.
        return error.get_response()
    endpoint = _endpoint_of(error)
    blueprint = endpoint.partition(".")[0] if endpoint else None
    status = error.code or 400
    description = f"{error.name}: {error.description}" if error.description else error.name
    # An unhandled exception reaches here too, as InternalServerError: a fault of ours.
    ours = status >= 500
    if blueprint == JSONRPC_BLUEPRINT:
        response = json_response(error_body(None, INTERNAL_ERROR if ours else INVALID_REQUEST, description), status)
    elif blueprint in OAUTH_JSON_BLUEPRINTS:
        code = "server_error" if ours else "invalid_request"
        response = json_response({"error": code, "error_description": description}, status, no_store=True)
    else:
        return error.get_response()
    # The exception's own headers (Allow on a 405, Retry-After on a 429), but not its HTML's.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(OAuthError, oauth_error_response)
    app.register_error_handler(HTTPException, http_error_response)

    @app.errorhandler(StorageError)
    def storage_failed(exc: StorageError) -> Response:
        # The adapters' messages name what failed, never a value that was bound or stored.
        log.error("storage failure in %s: %s", request.endpoint, exc)
        return service_unavailable(
            "storage is unavailable; retry shortly",
            title="The service is unavailable",
            message="Its database could not be reached. Try again in a moment.",
        )

    @app.errorhandler(UpstreamIdentityError)
    def upstream_failed(exc: UpstreamIdentityError) -> Response:
        log.error("identity provider failure: %s", exc)
        return oauth_error_response(TemporarilyUnavailable("the identity provider is unavailable"))

