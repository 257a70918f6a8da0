"""The upstream access token a tool calls its API with: refreshed shortly before it expires,
under a per-grant lease in storage so that concurrent requests (any worker, any instance) spend
a single-use upstream refresh token once."""

from __future__ import annotations

from ..audit import REVOKED_UPSTREAM_INVALID_GRANT, REVOKED_UPSTREAM_SESSION_EXPIRED, NoAuditTrail, grant_revoked
from ..errors import InvalidToken, TemporarilyUnavailable
from ..model import UpstreamTokens
from ..ports import AuditTrail, Clock, GrantStore, IdentityProvider, TokenGenerator, UpstreamIdentityError, UpstreamTokenStore

# Refresh when the upstream token expires within this many seconds.
REFRESH_MARGIN = 120
# A refresh holds the lease at most this long (an upstream call has a shorter timeout).
LEASE_SECONDS = 30
# How long a request waits for another one's refresh before answering 503.
WAIT_SECONDS = 15
WAIT_STEP = 0.1


class UpstreamTokenService:
    def __init__(
        self,
        *,
        grants: GrantStore,
        upstream_tokens: UpstreamTokenStore,
        identity_provider: IdentityProvider,
        clock: Clock,
        tokens: TokenGenerator,
        audit: AuditTrail | None = None,
    ) -> None:
        self._grants = grants
        self._audit: AuditTrail = audit or NoAuditTrail()
        self._upstream_tokens = upstream_tokens
        self._idp = identity_provider
        self._clock = clock
        self._tokens = tokens

    def access_token(self, grant_id: str, *, rejected: str | None = None) -> str:
        """A usable upstream access token for the grant.

        ``rejected``: a token the upstream API just refused (401); a different one is needed.
        Raises ``InvalidToken`` when the upstream session is over (the grant is revoked, the
        client must sign in again) and ``TemporarilyUnavailable`` when the provider is down.
        """
        current = self._usable(grant_id, rejected)
        if current is not None:
            return current.access_token
        holder = self._tokens.generate("mob_lease_")
        deadline = self._clock.now() + WAIT_SECONDS
        while True:
            now = self._clock.now()
            if self._upstream_tokens.acquire_upstream_refresh_lock(grant_id, holder, now, now + LEASE_SECONDS):
                try:
                    return self._refresh(grant_id, rejected)
                finally:
                    self._upstream_tokens.release_upstream_refresh_lock(grant_id, holder)
            # Someone else is refreshing: use their result as soon as it is stored.
            self._clock.sleep(WAIT_STEP)
            current = self._usable(grant_id, rejected)
            if current is not None:
                return current.access_token
            if self._clock.now() > deadline:
                raise TemporarilyUnavailable("the upstream token is being refreshed; try again")

    def _stored(self, grant_id: str) -> UpstreamTokens:
        tokens = self._upstream_tokens.get_upstream_tokens(grant_id)
        if tokens is None:
            raise InvalidToken("no upstream session for this authorization; sign in again")
        return tokens

    def _usable(self, grant_id: str, rejected: str | None) -> UpstreamTokens | None:
        tokens = self._stored(grant_id)
        fresh = tokens.expires_at - self._clock.now() > REFRESH_MARGIN
        return tokens if fresh and tokens.access_token != rejected else None

    def _refresh(self, grant_id: str, rejected: str | None) -> str:
        # Another request may have refreshed between our first look and taking the lease.
        current = self._usable(grant_id, rejected)
        if current is not None:
            return current.access_token
        stored = self._stored(grant_id)
        if not stored.refresh_token:
            self._revoke(grant_id, REVOKED_UPSTREAM_SESSION_EXPIRED)
            raise InvalidToken("the upstream session expired; sign in again")
        try:
            refreshed = self._idp.refresh(stored.refresh_token)
        except UpstreamIdentityError as exc:
            # Only invalid_grant ends the upstream session; a misconfiguration or an outage
            # must not revoke every grant.
            if exc.upstream_error == "invalid_grant":
                self._revoke(grant_id, REVOKED_UPSTREAM_INVALID_GRANT, upstream_error=exc.upstream_error)
                raise InvalidToken("the upstream session ended; sign in again") from exc
            raise TemporarilyUnavailable("the identity provider is unavailable") from exc
        if refreshed.refresh_token is None:
            # Providers that do not rotate refresh tokens omit them from the response.
            refreshed = UpstreamTokens(
                access_token=refreshed.access_token,
                expires_at=refreshed.expires_at,
                refresh_token=stored.refresh_token,
                scope=refreshed.scope,
                id_token=refreshed.id_token,
            )
        self._upstream_tokens.update_upstream_tokens(grant_id, refreshed)
        return refreshed.access_token

    def _revoke(self, grant_id: str, reason: str, *, upstream_error: str | None = None) -> None:
        # Read before revoking, for the audit event's client and subject.
        grant = self._grants.get_grant(grant_id)
        self._grants.revoke_grant(grant_id, self._clock.now())
        if grant is not None and not grant.is_revoked:
            self._audit.record(grant_revoked(grant, reason, upstream_error=upstream_error))
