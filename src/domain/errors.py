"""OAuth error codes (RFC 6749 §4.1.2.1 and §5.2, RFC 7009, RFC 7591 §3.2.2, RFC 6750 §3.1, RFC 8707).

Domain errors carry the error code and a description only; the HTTP adapter maps them
to status codes, JSON bodies and redirects in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .uris import RedirectDestination


class OAuthError(Exception):
    """Base of every error the protocol lets us tell a client about."""

    error: str = "server_error"

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.error)
        self.description = description


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2: missing or malformed parameter, or a parameter repeated."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: client authentication failed (unknown client, bad secret, wrong method)."""

    error = "invalid_client"


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2: the code or refresh token is invalid, expired, revoked, or was issued to
    another client, or the redirect URI or PKCE verifier does not match."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §4.1.2.1 / §5.2: the client may not use this grant or response type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2: the grant type is not supported by this server."""

    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    """RFC 6749 §4.1.2.1: the server does not issue codes for this response type."""

    error = "unsupported_response_type"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1: the server does not support revoking this token type."""

    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    """RFC 6749 §4.1.2.1 / §5.2: the scope is unknown, malformed, or exceeds what was granted."""

    error = "invalid_scope"


class AccessDenied(OAuthError):
    """RFC 6749 §4.1.2.1: the resource owner or the server denied the request."""

    error = "access_denied"


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource is not one this server issues tokens for."""

    error = "invalid_target"


class InvalidRedirectUri(OAuthError):
    """RFC 7591 §3.2.2: one or more redirect URIs are invalid."""

    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2: a client metadata field is invalid."""

    error = "invalid_client_metadata"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: the access token is missing, expired, revoked, malformed or for another
    resource."""

    error = "invalid_token"


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the access token lacks the scope the request needs."""

    error = "insufficient_scope"

    def __init__(self, description: str = "", *, required_scopes: tuple[str, ...] = ()) -> None:
        super().__init__(description)
        self.required_scopes = required_scopes


class TemporarilyUnavailable(OAuthError):
    """RFC 6749 §4.1.2.1: the server (or the upstream identity provider) cannot handle the
    request right now."""

    error = "temporarily_unavailable"


class ServerError(OAuthError):
    """RFC 6749 §4.1.2.1: an unexpected condition prevented the server from fulfilling the
    request."""

    error = "server_error"


class AuthorizationRedirect(Exception):
    """An authorization error sent back to the client's redirect URI after the person acted
    (denied, or signed in upstream and it failed).

    RFC 6749 §4.1.2.1: errors go to the validated redirect URI with ``error`` and ``state``.
    Before the person has seen the consent page see ``RefusedAuthorizationRequest``.
    """

    def __init__(self, error: OAuthError, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


class RefusedAuthorizationRequest(Exception):
    """An authorization request with a valid client and redirect URI but an error in the rest,
    refused before anyone saw the consent page: shown as a page with a link back to the client
    carrying ``error``, ``state`` and ``iss``, never as an automatic redirect (RFC 9700 §4.11.2:
    a redirect nobody chose would make the server an open redirector for self-registered
    clients). ``state`` is None when it was absent or is itself the invalid parameter."""

    def __init__(self, error: OAuthError, *, redirect_uri: str, state: str | None, destination: RedirectDestination) -> None:
        super().__init__(error.error)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state
        # Where the link leads, as a browser parses it.
        self.destination = destination


class SignInNotAllowed(Exception):
    """The person signed in upstream but is outside the access policy: shown as a page that says
    so and whom to ask, with a link back to the client carrying ``access_denied``."""

    def __init__(self, explanation: str, *, return_url: str) -> None:
        super().__init__(explanation)
        self.explanation = explanation
        self.return_url = return_url


class UpstreamSignInFailed(Exception):
    """The upstream sign-in failed for a reason the person or the operator must act on: shown as a
    page that says what to fix, with a link back to the client carrying ``server_error``."""

    def __init__(self, explanation: str, *, return_url: str) -> None:
        super().__init__(explanation)
        self.explanation = explanation
        self.return_url = return_url
