"""The application factory: settings → container → Flask app with the HTTP adapter's blueprints."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Callable

from flask import Flask
from flask_cors import CORS

from ..adapters.http import authorization, connections, fake_idp, home, mcp, metadata, pages, ratelimit, readiness, registration, security_headers, services, token
from ..adapters import logs, metrics
from ..adapters.http.errors import register_error_handlers
from .config import Settings, load_settings
from .container import Container, build_container

BLUEPRINT_MODULES = (home, metadata, registration, authorization, connections, token, mcp)
# How long a start-up or retried schema migration waits for the database's write lock.
SCHEMA_BUSY_WAIT = 1.0
# Endpoints a browser-based client (MCP Inspector) calls without cookies: any origin.
PUBLIC_CORS_PATHS = r"^/(\.well-known/.*|oauth/(register|token|revoke)|register|token|revoke)$"


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> Flask:
    settings = settings or load_settings()
    container = container or build_container(settings)
    # Here, not in the CLI, so that `gunicorn wsgi:app` logs as `serve` does (LOG_LEVEL, LOG_FORMAT).
    logs.configure_logging(settings.log_level, settings.log_format)

    # No static files: the pages carry their styles inline.
    app = Flask("mcp_oauth_bridge.adapters.http", static_folder=None)
    # First, so that every later hook's log lines carry the request id.
    logs.install_request_ids(app, settings.rate_limits.forwarded_allow_ips)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    # Signs the connections page's cookies: keys of their own, derived from TOKEN_HASH_KEYS (the
    # first signs; the older ones still verify, as Flask's SECRET_KEY_FALLBACKS).
    cookie_keys = [hmac.new(key, b"mcp-oauth-bridge signed cookies", hashlib.sha256).digest() for key in settings.token_hash_keys]
    app.secret_key = cookie_keys[0]
    app.config["SECRET_KEY_FALLBACKS"] = cookie_keys[1:]
    modules = list(BLUEPRINT_MODULES)
    if settings.idp_provider == "fake":
        modules.append(fake_idp)
    for module in modules:
        app.register_blueprint(module.bp)
    register_error_handlers(app)
    # This app's own limiter, on this app's view functions (after the blueprints are registered).
    ratelimit.install(
        app,
        settings.rate_limits,
        store=container.rate_limit_store(),
        clock=container.clock(),
        audit=metrics.CountedRateLimitAudit(container.audit_log()),
    )
    security_headers.install(app)
    install_cors(app, settings)

    # The views look their services up in their own app, never in process-wide wiring.
    services.install(app, app_services(container))
    pages.install(app)
    # Never fail to start for the database: a worker whose schema check finds the file busy
    # (another process holding the write lock) or unreachable answers 503 and retries.
    admin = container.storage_admin()
    storage = readiness.StorageReadiness(lambda: admin.ensure_schema(busy_wait=SCHEMA_BUSY_WAIT))
    storage.ready()
    readiness.install(app, storage)
    readiness.install_probe(app, admin, certificate_readiness(settings))
    metrics.install(
        app,
        allowed_ips=settings.metrics_allowed_ips,
        token=settings.metrics_token,
        forwarded_allow_ips=settings.rate_limits.forwarded_allow_ips,
        live_grants=admin.live_grants,
    )
    app.extensions["container"] = container
    return app


def certificate_readiness(settings: Settings) -> Callable[[], dict[str, Any]] | None:
    """The Entra client certificate's expiry, for /readyz (when one is configured)."""
    certificate = settings.entra.client_certificate if settings.entra is not None else None
    if certificate is None:
        return None
    return lambda: {"certificate": certificate.readiness()}


def app_services(container: Container) -> services.Services:
    """This container's providers, called per request: nothing is built before it is used."""
    return services.Services(
        policy=container.policy,
        registration_service=container.registration_service,
        authorization_service=container.authorization_service,
        token_service=container.token_service,
        client_authenticator=container.client_authenticator,
        hasher=container.hasher,
        bearer_authenticator=container.bearer_authenticator,
        mcp_server=container.mcp_server,
        mcp_origins=container.mcp_origins,
        identity_provider=container.identity_provider,
        web_urls=container.web_urls,
        connections_service=container.connections_service,
    )


def install_cors(app: Flask, settings: Settings) -> None:
    resources: dict[str | re.Pattern[str], dict[str, Any]] = {PUBLIC_CORS_PATHS: {"origins": "*"}}
    if settings.mcp_allowed_origins:
        resources[r"^/mcp$"] = {"origins": list(settings.mcp_allowed_origins)}
    # Scripts must be able to read the challenge that points them to the metadata.
    CORS(app, resources=resources, expose_headers=["WWW-Authenticate"], max_age=3600)
