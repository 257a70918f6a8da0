"""Bearer token validation for the protected resource (RFC 6750 §3.1, RFC 8707 audience)."""

from __future__ import annotations

from ..errors import InsufficientScope, InvalidToken
from ..model import AccessContext
from ..policy import ServerPolicy
from ..ports import AccessTokenStore, Clock
from ..security import TokenHasher
from .tokens import ACCESS_TOKEN_PREFIX


class BearerAuthenticator:
    def __init__(self, *, access_tokens: AccessTokenStore, clock: Clock, hasher: TokenHasher, policy: ServerPolicy) -> None:
        self._access_tokens = access_tokens
        self._clock = clock
        self._hasher = hasher
        self._policy = policy

    def authenticate(self, token: str | None) -> AccessContext:
        """Look the token up by its keyed hash (one primary-key read) and check it is usable here."""
        if not token:
            raise InvalidToken("no access token")
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            raise InvalidToken("not an access token issued by this server")
        # Under the current token hash key first: one read for every token issued since.
        found = self._hasher.find(token, self._access_tokens.get_access_token)
        if found is None:
            raise InvalidToken("unknown access token")
        access, grant = found[1]
        if access.revoked_at is not None or grant.is_revoked:
            raise InvalidToken("the access token was revoked")
        if access.expires_at <= self._clock.now():
            raise InvalidToken("the access token expired")
        # RFC 8707 §2 / MCP authorization: accept only tokens issued for this resource.
        if access.resource != self._policy.resource:
            raise InvalidToken("the access token was not issued for this resource")
        return AccessContext(
            grant=grant,
            client_id=access.client_id,
            scopes=access.scopes,
            resource=access.resource,
            expires_at=access.expires_at,
        )

    @staticmethod
    def require_scopes(context: AccessContext, required: tuple[str, ...], *, what: str = "this request") -> None:
        """RFC 6750 §3.1: the token is valid but lacks a scope ``what`` needs."""
        missing = [scope for scope in required if scope not in context.scopes]
        if missing:
            raise InsufficientScope(f"{what} requires scope: {' '.join(required)}", required_scopes=required)
