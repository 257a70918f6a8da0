"""The upstream access token a tool calls its API with: refreshed shortly before it expires,
under a per-grant lease in storage so that concurrent requests (any worker, any instance) spend
a single-use upstream refresh token once.

Every upstream refresh also re-checks the person against the access policy on fresh claims
(issue 11 §1): a person removed from the allowed groups, or deleted, loses the grant at the first
upstream refresh after the upstream access token expired, whether a tool or our own refresh
grant (``ensure_current``) triggered it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..access_policy import AccessPolicy
from ..audit import (
    REVOKED_BY_POLICY,
    REVOKED_UPSTREAM_INVALID_GRANT,
    REVOKED_UPSTREAM_SESSION_EXPIRED,
    NoAuditTrail,
    grant_revoked,
)
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

log = logging.getLogger(__name__)


class UpstreamTokenService:
    def __init__(
        self,
        *,
        grants: GrantStore,
        upstream_tokens: UpstreamTokenStore,
        identity_provider: IdentityProvider,
        clock: Clock,
        tokens: TokenGenerator,
        access_policy: AccessPolicy | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self._access_policy = access_policy or AccessPolicy()
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

    def ensure_current(self, grant_id: str) -> None:
        """Before our refresh grant issues new tokens: when the grant's upstream access token
        has expired, refresh it upstream, which re-checks the access policy on fresh claims.

        Raises ``InvalidToken`` when the grant was revoked (upstream ``invalid_grant``, policy no
        longer met, claims unreadable) and ``TemporarilyUnavailable`` when the provider is down
        (the grant is kept: an outage of the identity provider disconnects nobody).
        """
        tokens = self._upstream_tokens.get_upstream_tokens(grant_id)
        if tokens is None:
            if self._access_policy.restricts:
                # Nothing to re-check the person with: fail closed.
                self._revoke(grant_id, REVOKED_BY_POLICY)
                raise InvalidToken("no upstream session to check this authorization with; sign in again")
            return
        if tokens.expires_at > self._clock.now():
            return
        if not tokens.refresh_token and not self._access_policy.restricts:
            # A provider without refresh tokens and no policy to re-check: the grant lives on
            # until its own limits (refresh-token lifetime, GRANT_MAX_LIFETIME).
            return
        self.access_token(grant_id)

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
        try:
            self._recheck(grant_id, refreshed)
        except TemporarilyUnavailable:
            # Keep the rotated refresh token, but as expired, so the check runs again next time.
            expired = replace(refreshed, expires_at=min(refreshed.expires_at, self._clock.now()))
            self._upstream_tokens.update_upstream_tokens(grant_id, expired)
            raise
        self._upstream_tokens.update_upstream_tokens(grant_id, refreshed)
        return refreshed.access_token

    def _recheck(self, grant_id: str, refreshed: UpstreamTokens) -> None:
        """The access policy on the claims the fresh tokens carry (or the provider serves)."""
        if not self._access_policy.restricts:
            return
        grant = self._grants.get_grant(grant_id)
        if grant is None:
            raise InvalidToken("this authorization no longer exists; sign in again")
        try:
            identity = self._idp.identity_after_refresh(refreshed)
        except UpstreamIdentityError as exc:
            if exc.temporary:
                log.warning("cannot re-check authorization %s against the access policy now: %s", grant_id, exc)
                raise TemporarilyUnavailable("the identity provider is unavailable") from exc
            log.warning("cannot read the claims of authorization %s: %s", grant_id, exc)
            self._revoke(grant_id, REVOKED_BY_POLICY)
            raise InvalidToken("your account could not be checked against the access policy; sign in again") from exc
        if identity.subject != grant.subject:
            self._revoke(grant_id, REVOKED_BY_POLICY)
            raise InvalidToken("the upstream session belongs to another account; sign in again")
        decision = self._access_policy.evaluate(identity.policy_claims)
        if not decision.allowed:
            log.info("authorization %s no longer meets the access policy (%s)", grant_id, ", ".join(decision.unmet))
            self._revoke(grant_id, REVOKED_BY_POLICY)
            raise InvalidToken("your account is no longer allowed to connect; sign in again")

    def _revoke(self, grant_id: str, reason: str, *, upstream_error: str | None = None) -> None:
        # Read before revoking, for the audit event's client and subject.
        grant = self._grants.get_grant(grant_id)
        self._grants.revoke_grant(grant_id, self._clock.now())
        if grant is not None and not grant.is_revoked:
            self._audit.record(grant_revoked(grant, reason, upstream_error=upstream_error))
