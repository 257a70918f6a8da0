"""My connections: a person signs in through the upstream identity provider (the same
authorization code flow with PKCE and nonce the authorization endpoint uses, OIDC Core §3.1) and
sees, and can revoke, the grants made in their name (RFC 7009's effect, without a client)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ..audit import REVOKED_BY_USER, NoAuditTrail, grant_revoked
from ..errors import AccessDenied, InvalidRequest
from ..model import Client, Grant, UpstreamIdentity
from ..ports import AuditTrail, ClientRepository, Clock, GrantStore, IdentityProvider, TokenGenerator
from ..security import s256_challenge

# How long the sign-in at the identity provider may take.
SIGN_IN_TTL = 600


@dataclass(frozen=True)
class AccountSignIn:
    """An account sign-in under way: kept by the browser (signed by the adapter), checked at
    the callback."""

    state: str
    nonce: str
    code_verifier: str
    expires_at: int


@dataclass(frozen=True)
class Connection:
    """One grant of the person, with the client it was made to (None if the client is gone) and
    when tokens were last issued from it (GrantUsage)."""

    grant: Grant
    client: Client | None
    last_used_at: int | None


class ConnectionsService:
    def __init__(
        self,
        *,
        grants: GrantStore,
        clients: ClientRepository,
        identity_provider: IdentityProvider,
        clock: Clock,
        tokens: TokenGenerator,
        audit: AuditTrail | None = None,
    ) -> None:
        self._grants = grants
        self._clients = clients
        self._idp = identity_provider
        self._clock = clock
        self._tokens = tokens
        self._audit = audit or NoAuditTrail()

    def start_sign_in(self) -> tuple[AccountSignIn, str]:
        """A new sign-in and the identity provider's URL to send the browser to."""
        sign_in = AccountSignIn(
            state=self._tokens.generate("mob_as_"),
            nonce=self._tokens.generate("mob_n_"),
            code_verifier=self._tokens.generate("mob_pv_"),
            expires_at=self._clock.now() + SIGN_IN_TTL,
        )
        url = self._idp.authorization_url(
            state=sign_in.state, nonce=sign_in.nonce, code_challenge=s256_challenge(sign_in.code_verifier)
        )
        return sign_in, url

    @staticmethod
    def is_its_callback(sign_in: AccountSignIn | None, state: str | None) -> bool:
        """Whether a callback with ``state`` answers this browser's account sign-in (rather than
        an authorization request)."""
        return sign_in is not None and state is not None and hmac.compare_digest(sign_in.state, state)

    def finish_sign_in(
        self, sign_in: AccountSignIn, *, code: str | None, error: str | None
    ) -> UpstreamIdentity:
        """Who signed in. Raises ``InvalidRequest`` for an expired sign-in, ``AccessDenied`` when
        the identity provider says no, and the identity provider's own errors as they are."""
        if sign_in.expires_at <= self._clock.now():
            raise InvalidRequest("this sign-in has expired; start again")
        if error:
            raise AccessDenied(self._idp.describe_error(error, None))
        if not code:
            raise InvalidRequest("the identity provider returned no code")
        login = self._idp.exchange_code(code=code, code_verifier=sign_in.code_verifier, nonce=sign_in.nonce)
        return login.identity

    def connections(self, subject: str) -> list[Connection]:
        return [
            Connection(grant=usage.grant, client=self._clients.get(usage.grant.client_id), last_used_at=usage.last_used_at)
            for usage in self._grants.grant_usage(subject=subject)
        ]

    def revoke(self, subject: str, grant_id: str) -> bool:
        """Revoke one of the person's grants (and every token issued from it, at once); False if
        it is not theirs, unknown or already revoked — the same answer, so nothing is learnt of
        other people's grants."""
        grant = self._grants.get_grant(grant_id)
        if grant is None or grant.is_revoked or not hmac.compare_digest(grant.subject, subject):
            return False
        self._grants.revoke_grant(grant_id, self._clock.now())
        self._audit.record(grant_revoked(grant, REVOKED_BY_USER))
        return True
