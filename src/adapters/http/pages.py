"""What every HTML page of the server (consent, sign-in, error and status pages) names: the
organisation or service (SERVICE_NAME), by default the public host."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask

from ...domain.policy import ServerPolicy
from .services import services


def service_name(policy: ServerPolicy) -> str:
    return policy.service_name or urlsplit(policy.issuer).hostname or policy.issuer


def served_over_https(policy: ServerPolicy) -> bool:
    """Whether browsers reach this server over https: its cookies are then Secure."""
    return policy.issuer.startswith("https://")


def cookie_name(name: str, policy: ServerPolicy) -> str:
    """A browser cookie's name: over https with the __Host- prefix (RFC 6265bis §4.1.3.2),
    which pins it to this host and to secure connections."""
    return f"__Host-{name}" if served_over_https(policy) else name


def install(app: Flask) -> None:
    @app.context_processor
    def page_context() -> dict[str, str]:
        return {"service_name": service_name(services().policy())}
