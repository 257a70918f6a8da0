"""The services each Flask app's views use, carried by that app (``app.extensions``) and looked up
per request: never process-wide wiring, so two apps built in one process (two ``PUBLIC_URL``s,
two databases) stay independent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, cast

from flask import Flask, current_app

from ...domain.policy import ServerPolicy
from ...domain.ports import IdentityProvider, WebUrlParser
from ...domain.security import TokenHasher
from ...domain.services.authorization import AuthorizationService
from ...domain.services.bearer import BearerAuthenticator
from ...domain.services.connections import ConnectionsService
from ...domain.services.registration import RegistrationService
from ...domain.services.tokens import ClientAuthenticator, TokenService

if TYPE_CHECKING:
    # Only for the annotations: the mcp module itself looks its services up here.
    from .mcp import OriginPolicy
    from .mcp_protocol import McpServer

EXTENSION = "mcp_oauth_bridge.services"


@dataclass(frozen=True)
class Services:
    """What the views call, each as a provider called per request (the composition root passes
    its container's singletons, so a call after the first is a lookup). Nothing is built before
    a request needs it: an identity provider may fetch its discovery document, a database pool
    must open after gunicorn forks."""

    policy: Callable[[], ServerPolicy]
    registration_service: Callable[[], RegistrationService]
    authorization_service: Callable[[], AuthorizationService]
    token_service: Callable[[], TokenService]
    client_authenticator: Callable[[], ClientAuthenticator]
    hasher: Callable[[], TokenHasher]
    bearer_authenticator: Callable[[], BearerAuthenticator]
    mcp_server: Callable[[], McpServer]
    mcp_origins: Callable[[], OriginPolicy]
    identity_provider: Callable[[], IdentityProvider]
    # The WHATWG parse browsers make: what the consent page shows of a URL client_id's host.
    web_urls: Callable[[], WebUrlParser]
    connections_service: Callable[[], ConnectionsService]


def install(app: Flask, app_services: Services) -> None:
    app.extensions[EXTENSION] = app_services


def services() -> Services:
    """The current app's services."""
    return cast(Services, current_app.extensions[EXTENSION])
