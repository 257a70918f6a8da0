"""The token endpoint (RFC 6749 §3.2, §4.1.3, §6; RFC 7636 §4.6), revocation (RFC 7009) and
introspection (RFC 7662)."""

from __future__ import annotations

from dataclasses import dataclass

from ..audit import (
    CODE_REPLAY,
    REFRESH_TOKEN_REUSE,
    REVOKED_BY_CLIENT,
    REVOKED_FOR_CODE_REPLAY,
    REVOKED_FOR_REFRESH_TOKEN_REUSE,
    NoAuditTrail,
    grant_event,
    grant_revoked,
)
from ..errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    InvalidToken,
    UnauthorizedClient,
)
from ..model import AccessToken, Client, Grant, Introspection, IssuedTokens, RefreshToken
from ..policy import ServerPolicy
from ..ports import (
    AccessTokenStore,
    AuditTrail,
    AuthorizationStore,
    ClientRepository,
    Clock,
    GrantStore,
    RefreshTokenStore,
    Telemetry,
    TokenGenerator,
    UnitOfWork,
)
from ..refresh_tokens import parse_refresh_token, refresh_token_value
from ..security import TokenHasher, verify_pkce
from ..telemetry import NoTelemetry
from .authorization import parse_scope, resource_matches
from .clients import ClientDirectory
from .registration import rehash_when_outdated
from .housekeeping import Housekeeping
from .upstream import UpstreamTokenService

ACCESS_TOKEN_PREFIX = "mob_at_"


class _Replay(Exception):
    """A code or refresh token used again outside the rules (raised inside the transaction, so
    that nothing it wrote stays; the grant is revoked after the rollback)."""

    def __init__(self, grant: Grant) -> None:
        super().__init__(grant.grant_id)
        self.grant = grant


@dataclass(frozen=True)
class ClientCredentials:
    """How a client presented itself at the token, revocation or introspection endpoint."""

    client_id: str
    client_secret: str | None
    # client_secret_basic, client_secret_post or none (RFC 7591 §2 names).
    method: str


class ClientAuthenticator:
    """RFC 6749 §2.3: authenticate confidential clients; identify public ones."""

    def __init__(self, *, directory: ClientDirectory, clients: ClientRepository, hasher: TokenHasher) -> None:
        self._directory = directory
        self._clients = clients
        self._hasher = hasher

    def authenticate(self, credentials: ClientCredentials) -> Client:
        # Unknown, not accepted by the registration policy, or a document that cannot be used.
        client = self._directory.for_token(credentials.client_id)
        if client.is_public:
            if credentials.client_secret:
                raise InvalidClient("this client is registered as public and must not send a secret")
            return client
        if not credentials.client_secret or client.secret_hash is None:
            raise InvalidClient("client authentication is required")
        if not self._hasher.matches(credentials.client_secret, client.secret_hash):
            raise InvalidClient("client authentication failed")
        rehash_when_outdated(self._clients, self._hasher, client.client_id, "secret_hash", credentials.client_secret, client.secret_hash)
        return client


class TokenService:
    def __init__(
        self,
        *,
        clients: ClientRepository,
        authorizations: AuthorizationStore,
        grants: GrantStore,
        access_tokens: AccessTokenStore,
        refresh_tokens: RefreshTokenStore,
        unit_of_work: UnitOfWork,
        clock: Clock,
        tokens: TokenGenerator,
        hasher: TokenHasher,
        policy: ServerPolicy,
        housekeeping: Housekeeping,
        upstream: UpstreamTokenService | None = None,
        audit: AuditTrail | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        # The upstream session behind each grant, refreshed and re-checked against the access
        # policy when our refresh grant runs after the upstream token expired (None: no upstream
        # re-check, for services built without an identity provider).
        self._upstream = upstream
        self._clients = clients
        self._telemetry: Telemetry = telemetry or NoTelemetry()
        self._audit: AuditTrail = audit or NoAuditTrail()
        self._authorizations = authorizations
        self._grants = grants
        self._access_tokens = access_tokens
        self._refresh_tokens = refresh_tokens
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._tokens = tokens
        self._hasher = hasher
        self._policy = policy
        self._housekeeping = housekeeping

    # -- grant_type=authorization_code ----------------------------------------------------------

    def exchange_code(
        self,
        client: Client,
        *,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None,
        resource: str | None,
    ) -> IssuedTokens:
        if "authorization_code" not in client.grant_types:
            raise UnauthorizedClient("the client may not use the authorization_code grant")
        if not code:
            raise InvalidRequest("code is required")
        # OAuth 2.1 §4.1.3: the code_verifier is required (PKCE for every client).
        if not code_verifier:
            raise InvalidRequest("code_verifier is required")
        now = self._clock.now()
        found = self._hasher.find(code, self._authorizations.get_code)
        if found is None:
            raise InvalidGrant("unknown authorization code")
        code_hash, (issued, grant) = found
        # Checked before anything is marked: a code presented by another client (or with a wrong
        # verifier) stays usable by the client it was issued to.
        if issued.client_id != client.client_id:
            raise InvalidGrant("authorization code was issued to another client")
        if issued.redeemed_at is not None:
            raise self._code_replay(grant, now)
        if issued.expires_at <= now:
            raise InvalidGrant("authorization code expired")
        if grant.is_revoked:
            raise InvalidGrant("authorization was revoked")
        # RFC 6749 §4.1.3: if redirect_uri was sent it must be identical to the one authorized.
        if redirect_uri is not None and redirect_uri != issued.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the authorization request")
        if not verify_pkce(code_verifier, issued.code_challenge):
            raise InvalidGrant("PKCE verification failed (code_verifier does not match code_challenge)")
        if resource is not None and not resource_matches(resource, issued.resource):
            raise InvalidTarget("resource does not match the authorization request")

        try:
            with self._unit_of_work.atomic():
                # One conditional write decides which of several concurrent redemptions wins.
                if not self._authorizations.redeem_code(code_hash, now):
                    raise _Replay(grant)
                response = self._issue(client, grant, issued.scopes, issued.scopes, generation=0)
        except _Replay:
            raise self._code_replay(grant, now) from None
        self._telemetry.token_issued("authorization_code")
        self._clients.touch(client.client_id, now)
        self._housekeeping.tick()
        return response

    def _code_replay(self, grant: Grant, now: int) -> InvalidGrant:
        # OAuth 2.1 §4.1.3: a code used twice revokes the tokens issued from it.
        self._grants.revoke_grant(grant.grant_id, now)
        self._telemetry.code_replay()
        self._audit.record(grant_event(CODE_REPLAY, grant))
        if not grant.is_revoked:
            self._audit.record(grant_revoked(grant, REVOKED_FOR_CODE_REPLAY))
        return InvalidGrant("authorization code was already used; tokens issued from it are revoked")

    # -- grant_type=refresh_token ---------------------------------------------------------------

    def refresh(
        self,
        client: Client,
        *,
        refresh_token: str | None,
        scope: str | None,
        resource: str | None,
    ) -> IssuedTokens:
        """Rotation (OAuth 2.1 §4.3.1) with a grace for one retry:
        - the current token is exchanged for one of the next generation;
        - the token it replaced, presented again within ``refresh_grace_period`` while no token
          of the next generation has been used, is accepted once and gets a second successor;
          both successors are valid until one is used, which makes the other a replay;
        - any other presentation of an older token (a third one, after the grace, after a
          successor was used) is a replay and revokes the whole grant.
        """
        if "refresh_token" not in client.grant_types:
            raise UnauthorizedClient("the client may not use the refresh_token grant")
        if not refresh_token:
            raise InvalidRequest("refresh_token is required")
        now = self._clock.now()
        # Outside the transaction: an upstream call must not hold the database's write lock.
        self._recheck_upstream(client, refresh_token, now)
        try:
            # Read-then-write in one transaction, so two refreshes cannot both rotate one token.
            with self._unit_of_work.atomic():
                response = self._refresh_locked(client, refresh_token, parse_scope(scope), resource, now)
        except _Replay as replay:
            # Revoked outside the rolled-back transaction; tokens issued meanwhile die with the grant.
            self._grants.revoke_grant(replay.grant.grant_id, now)
            self._telemetry.refresh_reuse()
            self._audit.record(grant_event(REFRESH_TOKEN_REUSE, replay.grant))
            self._audit.record(grant_revoked(replay.grant, REVOKED_FOR_REFRESH_TOKEN_REUSE))
            raise InvalidGrant("refresh token was already used; the authorization is revoked") from None
        self._telemetry.token_issued("refresh_token")
        self._clients.touch(client.client_id, now)
        self._housekeeping.tick()
        return response

    def _recheck_upstream(self, client: Client, refresh_token: str, now: int) -> None:
        """Issue 11 §1: when the grant's upstream access token has expired, refresh it upstream
        and re-check the access policy first; a refused upstream refresh or a failed policy
        revokes the grant (``invalid_grant``), an outage answers ``temporarily_unavailable``
        and keeps it. Only for a token the transaction below would accept: nothing upstream
        happens for unknown, foreign, revoked, expired or replayed tokens."""
        if self._upstream is None:
            return
        found = self._find_refresh_token(refresh_token)
        if found is None:
            return
        token, grant = found
        try:
            self._check_usable(client, token, grant, now)
        except (InvalidGrant, _Replay):
            return  # the transaction below answers it
        try:
            self._upstream.ensure_current(grant.grant_id)
        except InvalidToken as exc:
            raise InvalidGrant(exc.description) from None

    def _check_usable(self, client: Client, token: RefreshToken, grant: Grant, now: int) -> None:
        """Why a refresh token that was found cannot be used (``InvalidGrant``), or ``_Replay``
        for a rotated one presented outside the grace for one retry."""
        if token.client_id != client.client_id:
            raise InvalidGrant("refresh token was issued to another client")
        if grant.is_revoked or token.revoked_at is not None:
            raise InvalidGrant("refresh token was revoked")
        if token.expires_at <= now:
            raise InvalidGrant("refresh token expired")
        if now >= grant.created_at + self._policy.grant_max_lifetime:
            # GRANT_MAX_LIFETIME: the person signs in again.
            raise InvalidGrant("the authorization reached its maximum lifetime; sign in again")
        if token.rotated_at is not None and not self._may_retry(token, now):
            # Replay detection comes first: whatever else the replaying request asks for, reuse of
            # a rotated token outside the grace rules revokes the whole grant.
            raise _Replay(grant)

    def _refresh_locked(
        self, client: Client, refresh_token: str, requested: tuple[str, ...], resource: str | None, now: int
    ) -> IssuedTokens:
        found = self._find_refresh_token(refresh_token)
        if found is None:
            self._check_forgotten_generation(client, refresh_token)
            raise InvalidGrant("unknown refresh token")
        token, grant = found
        self._check_usable(client, token, grant, now)
        retry = token.rotated_at is not None
        if resource is not None and not resource_matches(resource, grant.resource):
            raise InvalidTarget("resource does not match the authorization")
        # RFC 6749 §6: the new scope must not include any scope not originally granted.
        if requested and not set(requested) <= set(token.scopes):
            raise InvalidScope("scope exceeds what was granted")

        marked = (
            self._refresh_tokens.mark_refresh_retried(token.token_hash, now)
            if retry
            else self._refresh_tokens.rotate_refresh_token(token.token_hash, now)
        )
        if not marked:
            raise _Replay(grant)
        return self._issue(client, grant, token.scopes, requested or token.scopes, generation=token.generation + 1)

    def _may_retry(self, token: RefreshToken, now: int) -> bool:
        """A rotated token may be exchanged once more inside the grace window, while its grant's
        newest generation is still the one it was rotated to (no successor used yet)."""
        assert token.rotated_at is not None
        if token.retried_at is not None or now - token.rotated_at > self._policy.refresh_grace_period:
            return False
        return self._refresh_tokens.current_refresh_generation(token.grant_id) == token.generation + 1

    def _check_forgotten_generation(self, client: Client, refresh_token: str) -> None:
        """A genuine token of an older generation is no longer stored: recognise it by its tag
        and treat it as the replay it is."""
        name = parse_refresh_token(self._hasher, refresh_token)
        if name is None:
            return
        grant = self._grants.get_grant(name.grant_id)
        if grant is None or grant.is_revoked or grant.client_id != client.client_id:
            return
        current = self._refresh_tokens.current_refresh_generation(grant.grant_id)
        if current is not None and name.generation < current:
            raise _Replay(grant)

    def _issue(
        self,
        client: Client,
        grant: Grant,
        refresh_scopes: tuple[str, ...],
        access_scopes: tuple[str, ...],
        *,
        generation: int,
    ) -> IssuedTokens:
        now = self._clock.now()
        access_value = self._tokens.generate(ACCESS_TOKEN_PREFIX)
        self._access_tokens.add_access_token(
            AccessToken(
                token_hash=self._hasher.hash(access_value),
                grant_id=grant.grant_id,
                client_id=client.client_id,
                scopes=access_scopes,
                resource=grant.resource,
                issued_at=now,
                # The clock counts whole seconds and the token was issued somewhere inside second
                # `now`: it stays valid through second now+ttl, to live at least expires_in.
                expires_at=now + self._policy.access_token_ttl + 1,
            )
        )
        # `clients disable` may have committed since the client was authenticated: checked after
        # the token row is written, in its transaction (ClientRepository.is_disabled), so that
        # either the disable's revocation covers this token or this check sees the disable and
        # nothing is issued (the code or refresh token is not consumed either).
        if self._clients.is_disabled(client.client_id):
            raise InvalidClient("this client is disabled")
        refresh_value = None
        if "refresh_token" in client.grant_types:
            refresh_value = refresh_token_value(
                self._hasher, grant_id=grant.grant_id, generation=generation, secret=self._tokens.generate("")
            )
            self._refresh_tokens.add_refresh_token(
                RefreshToken(
                    token_hash=self._hasher.hash(refresh_value),
                    grant_id=grant.grant_id,
                    client_id=client.client_id,
                    generation=generation,
                    scopes=refresh_scopes,
                    resource=grant.resource,
                    issued_at=now,
                    # Never beyond the grant's maximum lifetime (GRANT_MAX_LIFETIME).
                    expires_at=min(now + self._policy.refresh_token_ttl, grant.created_at + self._policy.grant_max_lifetime),
                )
            )
        return IssuedTokens(
            access_token=access_value,
            expires_in=self._policy.access_token_ttl,
            scope=" ".join(access_scopes),
            refresh_token=refresh_value,
        )

    # -- RFC 7009 revocation --------------------------------------------------------------------

    def revoke(self, client: Client, *, token: str | None, token_type_hint: str | None) -> None:
        if not token:
            raise InvalidRequest("token is required")
        now = self._clock.now()
        for kind in self._lookup_order(token_type_hint):
            if kind == "access_token":
                access = self._find_access_token(token)
                if access is not None:
                    # RFC 7009 §2.1: only tokens issued to the requesting client are revoked;
                    # anything else is answered like an unknown token (§2.2), revealing nothing.
                    if access[0].client_id == client.client_id:
                        self._access_tokens.revoke_access_token(access[0].token_hash, now)
                    return
            else:
                refresh = self._find_refresh_token(token)
                if refresh is not None:
                    # RFC 7009 §2.1: revoking a refresh token invalidates the whole grant.
                    if refresh[0].client_id == client.client_id:
                        self._grants.revoke_grant(refresh[1].grant_id, now)
                        if not refresh[1].is_revoked:
                            self._audit.record(grant_revoked(refresh[1], REVOKED_BY_CLIENT))
                    return

    # Under whichever token hash key the token was issued (the current one first).
    def _find_access_token(self, token: str) -> tuple[AccessToken, Grant] | None:
        found = self._hasher.find(token, self._access_tokens.get_access_token)
        return None if found is None else found[1]

    def _find_refresh_token(self, token: str) -> tuple[RefreshToken, Grant] | None:
        found = self._hasher.find(token, self._refresh_tokens.get_refresh_token)
        return None if found is None else found[1]

    @staticmethod
    def _lookup_order(hint: str | None) -> tuple[str, str]:
        # RFC 7009 §2.1: the hint only speeds up the lookup; the other kind is tried too.
        if hint == "refresh_token":
            return ("refresh_token", "access_token")
        return ("access_token", "refresh_token")

    # -- RFC 7662 introspection -----------------------------------------------------------------

    def introspect(self, client: Client, *, token: str | None, token_type_hint: str | None) -> Introspection:
        if not token:
            raise InvalidRequest("token is required")
        now = self._clock.now()
        for kind in self._lookup_order(token_type_hint):
            if kind == "access_token":
                access = self._find_access_token(token)
                if access is not None:
                    at, grant = access
                    active = at.revoked_at is None and at.expires_at > now
                    return self._introspection(client, grant, active, at.scopes, at.issued_at, at.expires_at, "Bearer")
            else:
                refresh = self._find_refresh_token(token)
                if refresh is not None:
                    rt, grant = refresh
                    active = rt.revoked_at is None and rt.rotated_at is None and rt.expires_at > now
                    return self._introspection(
                        client, grant, active, rt.scopes, rt.issued_at, rt.expires_at, "refresh_token"
                    )
        return Introspection(active=False)

    def _introspection(
        self,
        client: Client,
        grant: Grant,
        active: bool,
        scopes: tuple[str, ...],
        issued_at: int,
        expires_at: int,
        token_type: str,
    ) -> Introspection:
        # Tokens are described only to the client they were issued to.
        if not active or grant.is_revoked or grant.client_id != client.client_id:
            return Introspection(active=False)
        claims = grant.claims
        username = claims.get("preferred_username") or claims.get("email")
        return Introspection(
            active=True,
            scope=" ".join(scopes),
            client_id=grant.client_id,
            username=str(username) if username else None,
            token_type=token_type,
            exp=expires_at,
            iat=issued_at,
            sub=grant.subject,
            aud=grant.resource,
            iss=self._policy.issuer,
        )
