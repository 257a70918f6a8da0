"""The application factory: settings → container → Flask app with the HTTP adapter's blueprints."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask
from flask_cors import CORS

from ..adapters.http import authorization, fake_idp, mcp, metadata, ratelimit, readiness, registration, security_headers, token
from ..adapters.http.errors import register_error_handlers
from .config import Settings, load_settings
from .container import Container, build_container

BLUEPRINT_MODULES = (metadata, registration, authorization, token, mcp)
# How long a start-up or retried schema migration waits for the database's write lock.
SCHEMA_BUSY_WAIT = 1.0
# Endpoints a browser-based client (MCP Inspector) calls without cookies: any origin.
PUBLIC_CORS_PATHS = r"^/(\.well-known/.*|oauth/(register|token|revoke)|register|token|revoke)$"


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> Flask:
    settings = settings or load_settings()
    container = container or build_container(settings)
    logging.getLogger("mcp_oauth_bridge").setLevel(settings.log_level)

    # No static files: the pages carry their styles inline.
    app = Flask("mcp_oauth_bridge.adapters.http", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    modules = list(BLUEPRINT_MODULES)
    if settings.idp_provider == "fake":
        modules.append(fake_idp)
    for module in modules:
        app.register_blueprint(module.bp)
    register_error_handlers(app)
    # This app's own limiter, on this app's view functions (after the blueprints are registered).
    ratelimit.install(app, settings.rate_limits, store=container.rate_limit_store(), clock=container.clock())
    security_headers.install(app)
    install_cors(app, settings)

    # Blueprints receive services through @inject; this binds them to this app's container.
    container.wire(modules=modules)
    # Never fail to start for the database: a worker whose schema check finds the file busy
    # (another process holding the write lock) or unreachable answers 503 and retries.
    admin = container.storage_admin()
    storage = readiness.StorageReadiness(lambda: admin.ensure_schema(busy_wait=SCHEMA_BUSY_WAIT))
    storage.ready()
    readiness.install(app, storage)
    app.extensions["container"] = container
    return app


def install_cors(app: Flask, settings: Settings) -> None:
    resources: dict[str | re.Pattern[str], dict[str, Any]] = {PUBLIC_CORS_PATHS: {"origins": "*"}}
    if settings.mcp_allowed_origins:
        resources[r"^/mcp$"] = {"origins": list(settings.mcp_allowed_origins)}
    # Scripts must be able to read the challenge that points them to the metadata.
    CORS(app, resources=resources, expose_headers=["WWW-Authenticate"], max_age=3600)
