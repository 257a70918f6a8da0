"""The application factory: settings → container → Flask app with the HTTP adapter's blueprints."""

from __future__ import annotations

import logging

from flask import Flask

from ..adapters.http import authorization, fake_idp, metadata, registration, security_headers, token
from ..adapters.http.errors import register_error_handlers
from .config import Settings, load_settings
from .container import Container, build_container

BLUEPRINT_MODULES = (metadata, registration, authorization, token)


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> Flask:
    settings = settings or load_settings()
    container = container or build_container(settings)
    logging.getLogger("mcp_oauth_bridge").setLevel(settings.log_level)

    app = Flask("mcp_oauth_bridge.adapters.http")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    modules = list(BLUEPRINT_MODULES)
    if settings.idp_provider == "fake":
        modules.append(fake_idp)
    for module in modules:
        app.register_blueprint(module.bp)
    register_error_handlers(app)
    security_headers.install(app)

    # Blueprints receive services through @inject; this binds them to this app's container.
    container.wire(modules=modules)
    container.database().migrate()
    app.extensions["container"] = container
    return app
