"""The authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2): request validation,
consent, and the upstream login that ends in a one-time code (RFC 9207 ``iss``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..audit import (
    CONSENT_APPROVED,
    CONSENT_DENIED,
    GRANT_CREATED,
    UPSTREAM_SIGN_IN_FAILED,
    UPSTREAM_SIGN_IN_SUCCEEDED,
    AuditEvent,
    NoAuditTrail,
    grant_event,
    sign_in_denied_by_policy,
)
from ..errors import (
    AccessDenied,
    AuthorizationRedirect,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    RefusedAuthorizationRequest,
    ServerError,
    SignInNotAllowed,
    TemporarilyUnavailable,
    UnsupportedResponseType,
    UpstreamSignInFailed,
)
from ..model import (
    AuthorizationCode,
    AuthorizationRequest,
    Client,
    Grant,
    PendingAuthorization,
    UpstreamTransaction,
)
from ..policy import ServerPolicy
from ..ports import (
    AuditTrail,
    AuthorizationStore,
    Clock,
    GrantStore,
    IdentityProvider,
    TokenGenerator,
    UnitOfWork,
    UpstreamIdentityError,
    WebUrlParser,
)
from ..security import CODE_CHALLENGE_PATTERN, SUPPORTED_CODE_CHALLENGE_METHODS, TokenHasher, s256_challenge
from ..refresh_tokens import GRANT_ID_PREFIX
from ..uris import MAX_REDIRECT_URI_LENGTH, RedirectDestination, canonical_redirect_uri, redirect_destination
from .clients import ClientDirectory
from .housekeeping import Housekeeping
from .redirects import ClientRedirect, redirect_uri_matches

# Caps on the authorization request (each stored in a pending authorization, so they bound its
# row). Claude's state is under 100 characters and generated ones are usually 32 to 64; 1024
# leaves room for clients that pack a return path into state.
MAX_STATE_LENGTH = 1024
# The scopes offered are a handful of short names.
MAX_SCOPE_LENGTH = 1024
# The resource must be this server's MCP URL anyway.
MAX_RESOURCE_LENGTH = 2048
# Our client ids are 54 characters; a URL client id (client ID metadata document) is bounded too.
MAX_CLIENT_ID_LENGTH = 512
# A loopback redirect URI may be requested with a port its registration lacks (RFC 8252 §7.3).
MAX_REQUESTED_REDIRECT_URI_LENGTH = MAX_REDIRECT_URI_LENGTH + len(":65535")
# Upstream errors that are the person's (or their organisation's) answer: safe to pass on as is.
UPSTREAM_DENIALS = frozenset({"access_denied"})
# Upstream errors that a retry may cure.
UPSTREAM_OUTAGES = frozenset({"temporarily_unavailable", "server_error"})


def parse_scope(scope: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys((scope or "").split()))


def resource_matches(requested: str, resource: str) -> bool:
    # RFC 9728 §3.3 canonical resource URL; a trailing slash some clients add is the same resource.
    return requested == resource or requested == resource + "/"


@dataclass(frozen=True)
class ConsentPrompt:
    """What the consent page shows, and what the browser must send back to approve."""

    pending_id: str
    csrf_token: str
    browser_id: str
    client: Client
    request: AuthorizationRequest
    # Where the browser will be sent back to, from the parse a browser makes of the redirect URI.
    destination: RedirectDestination


class AuthorizationService:
    def __init__(
        self,
        *,
        directory: ClientDirectory,
        authorizations: AuthorizationStore,
        grants: GrantStore,
        unit_of_work: UnitOfWork,
        identity_provider: IdentityProvider,
        clock: Clock,
        tokens: TokenGenerator,
        hasher: TokenHasher,
        policy: ServerPolicy,
        web_urls: WebUrlParser,
        housekeeping: Housekeeping,
        audit: AuditTrail | None = None,
    ) -> None:
        self._directory = directory
        self._audit: AuditTrail = audit or NoAuditTrail()
        self._authorizations = authorizations
        self._web_urls = web_urls
        self._grants = grants
        self._unit_of_work = unit_of_work
        self._idp = identity_provider
        self._clock = clock
        self._tokens = tokens
        self._hasher = hasher
        self._policy = policy
        self._housekeeping = housekeeping

    # -- GET /authorize -------------------------------------------------------------------------

    def start(self, params: Mapping[str, str], *, browser_id: str | None) -> ConsentPrompt:
        """Validate an authorization request and remember it until the person decides.

        Raises ``OAuthError`` (an error page with no way on) while the client or redirect URI is
        not established, and ``RefusedAuthorizationRequest`` (an error page with a link back to
        the client) after that: nobody has chosen to go anywhere yet (RFC 9700 §4.11.2).
        """
        client, redirect_uri = self._client_and_redirect_uri(params)
        destination = redirect_destination(redirect_uri, self._web_urls)
        state = params.get("state")
        try:
            request = self._validate_request(params, client, redirect_uri)
        except OAuthError as error:
            # An overlong state is not sent back: it is the parameter in error.
            returned_state = state if state is not None and len(state) <= MAX_STATE_LENGTH else None
            if client.is_operator_created:
                # A client the operator created is trusted with an automatic error redirect
                # (RFC 6749 §4.1.2.1); every other one gets the page with a link back.
                raise AuthorizationRedirect(error, redirect_uri=redirect_uri, state=returned_state) from None
            raise RefusedAuthorizationRequest(
                error, redirect_uri=redirect_uri, state=returned_state, destination=destination
            ) from None

        now = self._clock.now()
        browser_id = browser_id or self._tokens.generate("mob_br_")
        csrf_token = self._tokens.generate("mob_csrf_")
        pending = PendingAuthorization(
            pending_id=self._tokens.generate("mob_tx_"),
            request=request,
            csrf_token_hash=self._hasher.hash(csrf_token),
            browser_binding_hash=self._hasher.hash(browser_id),
            created_at=now,
            expires_at=now + self._policy.pending_authorization_ttl,
        )
        self._authorizations.add_pending(pending)
        # New authorizations are what makes the tables grow, so they pay for the cleaning.
        self._housekeeping.tick()
        return ConsentPrompt(
            pending_id=pending.pending_id,
            csrf_token=csrf_token,
            browser_id=browser_id,
            client=client,
            request=request,
            destination=destination,
        )

    def _client_and_redirect_uri(self, params: Mapping[str, str]) -> tuple[Client, str]:
        client_id = params.get("client_id")
        if not client_id:
            raise InvalidRequest("client_id is required")
        if len(client_id) > MAX_CLIENT_ID_LENGTH:
            raise InvalidRequest(f"client_id is longer than {MAX_CLIENT_ID_LENGTH} characters")
        client = self._directory.for_authorization(client_id)
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            # RFC 6749 §3.1.2.3: may be omitted only if exactly one redirect URI is registered.
            if len(client.redirect_uris) != 1:
                raise InvalidRequest("redirect_uri is required")
            redirect_uri = client.redirect_uris[0]
        elif len(redirect_uri) > MAX_REQUESTED_REDIRECT_URI_LENGTH:
            raise InvalidRequest(f"redirect_uri is longer than {MAX_REQUESTED_REDIRECT_URI_LENGTH} characters")
        # RFC 6749 §3.1.2.3 / OAuth 2.1 §4.1.1: compare with the registered URIs exactly. An
        # internationalised host is registered in punycode and must be sent that way too: the
        # token endpoint compares redirect_uri as an exact string (RFC 6749 §4.1.3).
        elif not any(redirect_uri_matches(redirect_uri, registered) for registered in client.redirect_uris):
            hint = "" if redirect_uri.isascii() else " (send it as registered: internationalised hosts in punycode)"
            raise InvalidRequest(f"redirect_uri is not registered for this client{hint}")
        self._require_acceptable(redirect_uri)
        # REDIRECT_URI_ALLOWLIST binds self-declared clients, also those registered before it.
        if not client.is_operator_created and not self._policy.redirect_uri_allowlist.admits(redirect_uri):
            raise InvalidRequest("this redirect URI is not among those this server allows")
        return client, redirect_uri

    def _require_acceptable(self, redirect_uri: str) -> None:
        """A client registered under older, looser rules is held to today's: a redirect URI that
        registration would refuse (or store differently) is never a destination."""
        try:
            canonical = canonical_redirect_uri(
                redirect_uri, self._web_urls, extra_schemes=frozenset(self._policy.extra_redirect_schemes)
            )
        except InvalidRedirectUri as exc:
            reason = exc.description
        else:
            if canonical == redirect_uri:
                return
            reason = f"its canonical form is {canonical}"
        raise InvalidRequest(f"this redirect URI is no longer accepted ({reason}); register the client again")

    def _validate_request(self, params: Mapping[str, str], client: Client, redirect_uri: str) -> AuthorizationRequest:
        response_type = params.get("response_type")
        if not response_type:
            raise InvalidRequest("response_type is required")
        if response_type != "code":
            raise UnsupportedResponseType("only response_type=code is supported")

        state = params.get("state")
        if state is not None and len(state) > MAX_STATE_LENGTH:
            raise InvalidRequest(f"state is longer than {MAX_STATE_LENGTH} characters")

        code_challenge = params.get("code_challenge")
        # OAuth 2.1 §4.1.1: PKCE is required; RFC 7636 §4.3: a missing method means "plain".
        if not code_challenge:
            raise InvalidRequest("code_challenge is required (PKCE with S256)")
        method = params.get("code_challenge_method") or "plain"
        if method not in SUPPORTED_CODE_CHALLENGE_METHODS:
            raise InvalidRequest("code_challenge_method must be S256")
        if not CODE_CHALLENGE_PATTERN.fullmatch(code_challenge):
            raise InvalidRequest("code_challenge is not a valid S256 challenge")

        scope = params.get("scope")
        if scope is not None and len(scope) > MAX_SCOPE_LENGTH:
            raise InvalidRequest(f"scope is longer than {MAX_SCOPE_LENGTH} characters")
        scopes = self._requested_scopes(scope, client)

        resource = params.get("resource")
        if resource is not None and len(resource) > MAX_RESOURCE_LENGTH:
            raise InvalidRequest(f"resource is longer than {MAX_RESOURCE_LENGTH} characters")
        if resource is None:
            resource = self._policy.resource
        elif not resource_matches(resource, self._policy.resource):
            # RFC 8707 §2: reject a resource this server does not issue tokens for.
            raise InvalidTarget(f"resource must be {self._policy.resource}")

        return AuthorizationRequest(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            resource=self._policy.resource,
            code_challenge=code_challenge,
            code_challenge_method=method,
            state=state,
        )

    def _requested_scopes(self, scope: str | None, client: Client) -> tuple[str, ...]:
        allowed = parse_scope(client.scope) or self._policy.scopes_supported
        requested = parse_scope(scope)
        if not requested:
            return allowed
        unknown = [s for s in requested if s not in allowed]
        if unknown:
            raise InvalidScope(f"scope not allowed: {' '.join(unknown)}")
        return requested

    # -- POST /consent --------------------------------------------------------------------------

    def decide(self, *, pending_id: str, csrf_token: str, browser_id: str | None, approved: bool) -> str:
        """The person approved or denied; return the URL to send the browser to."""
        pending = self._authorizations.get_pending(pending_id)
        now = self._clock.now()
        if pending is None or pending.expires_at <= now or pending.consumed_at is not None:
            raise InvalidRequest("this authorization request has expired; start again from the application")
        # CSRF: the form token and the browser cookie must both belong to this request.
        if not self._hasher.matches(csrf_token, pending.csrf_token_hash):
            raise InvalidRequest("the consent form is invalid (CSRF check failed)")
        if not browser_id or not self._hasher.matches(browser_id, pending.browser_binding_hash):
            raise InvalidRequest("the consent form was not opened in this browser")
        request = pending.request
        # The person answers once: after approval the upstream sign-in is under way.
        if pending.upstream is not None:
            raise InvalidRequest("this authorization request was already answered")
        if not approved:
            self._authorizations.delete_pending(pending_id)
            self._audit.record(AuditEvent(event=CONSENT_DENIED, client_id=request.client_id))
            return self._error_url(request, AccessDenied.error, "the user denied the request")

        state = self._tokens.generate("mob_st_")
        code_verifier = self._tokens.generate("mob_pv_")
        nonce = self._tokens.generate("mob_n_")
        upstream = UpstreamTransaction(
            state_hash=self._hasher.hash(state), code_verifier=code_verifier, nonce=nonce
        )
        if not self._authorizations.attach_upstream(pending_id, upstream):
            raise InvalidRequest("this authorization request was already answered")
        self._audit.record(AuditEvent(event=CONSENT_APPROVED, client_id=request.client_id))
        return self._idp.authorization_url(state=state, nonce=nonce, code_challenge=s256_challenge(code_verifier))

    # -- GET /oauth/callback --------------------------------------------------------------------

    def complete_upstream_login(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_id: str | None,
        error_description: str | None = None,
    ) -> str:
        """Finish the upstream login: create the grant and send the client its one-time code."""
        if not state:
            raise InvalidRequest("the identity provider's response has no state")
        now = self._clock.now()
        # Single use: the transaction is consumed atomically before anything else happens.
        consumed = self._hasher.find(state, lambda state_hash: self._authorizations.consume_upstream(state_hash, now))
        pending = None if consumed is None else consumed[1]
        if pending is None or pending.upstream is None:
            raise InvalidRequest("this sign-in has expired or was already completed; start again from the application")
        if not browser_id or not self._hasher.matches(browser_id, pending.browser_binding_hash):
            raise InvalidRequest("this sign-in was started in another browser")
        request = pending.request

        def redirect_error(err: OAuthError) -> AuthorizationRedirect:
            return AuthorizationRedirect(err, redirect_uri=request.redirect_uri, state=request.state)

        def failure_page(explanation: str) -> UpstreamSignInFailed:
            back = self._error_url(request, ServerError.error, "sign-in at the identity provider failed")
            return UpstreamSignInFailed(explanation, return_url=back)

        def sign_in_failed(upstream_error: str | None) -> None:
            self._audit.record(
                AuditEvent(event=UPSTREAM_SIGN_IN_FAILED, client_id=request.client_id, upstream_error=upstream_error)
            )

        if error:
            # The provider's error code only: its description is free text from elsewhere.
            sign_in_failed(error)
            if error in UPSTREAM_DENIALS:
                raise redirect_error(AccessDenied("sign-in at the identity provider was not completed"))
            if error in UPSTREAM_OUTAGES:
                raise redirect_error(TemporarilyUnavailable("the identity provider is unavailable"))
            # Misconfiguration (consent, redirect URI, client): a page that says what to fix.
            raise failure_page(self._idp.describe_error(error, error_description))
        if not code:
            sign_in_failed(None)
            raise redirect_error(ServerError("the identity provider returned no code"))
        try:
            login = self._idp.exchange_code(
                code=code, code_verifier=pending.upstream.code_verifier, nonce=pending.upstream.nonce
            )
        except UpstreamIdentityError as exc:
            sign_in_failed(exc.upstream_error)
            if exc.temporary:
                raise redirect_error(TemporarilyUnavailable("the identity provider is unavailable")) from exc
            # A rejected code or ID token, or a misconfigured upstream app: the adapter's message
            # (free of secrets) says what to fix.
            raise failure_page(str(exc)) from exc

        decision = self._policy.access_policy.evaluate(login.identity.policy_claims)
        if not decision.allowed:
            # The unmet requirements by claim name only (never a claim's value).
            reason = "unmet:" + ",".join(decision.unmet)
            self._audit.record(sign_in_denied_by_policy(request.client_id, login.identity.subject, reason=reason))
            raise self._not_allowed(request)

        grant = Grant(
            grant_id=self._tokens.generate(GRANT_ID_PREFIX),
            client_id=request.client_id,
            subject=login.identity.subject,
            claims=dict(login.identity.claims),
            scopes=request.scopes,
            resource=request.resource,
            created_at=now,
        )
        code_value = self._tokens.generate("mob_ac_")
        authorization_code = AuthorizationCode(
            code_hash=self._hasher.hash(code_value),
            grant_id=grant.grant_id,
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            resource=request.resource,
            scopes=request.scopes,
            issued_at=now,
            expires_at=now + self._policy.authorization_code_ttl,
        )
        with self._unit_of_work.atomic():
            self._grants.add_grant(grant, login.tokens)
            self._authorizations.add_code(authorization_code)
        self._audit.record(grant_event(UPSTREAM_SIGN_IN_SUCCEEDED, grant))
        self._audit.record(grant_event(GRANT_CREATED, grant))
        return ClientRedirect.build(
            request.redirect_uri, issuer=self._policy.issuer, state=request.state, code=code_value
        ).url()

    def _error_url(self, request: AuthorizationRequest, error: str, description: str) -> str:
        """The client's redirect URI carrying an error (RFC 6749 §4.1.2.1), its state and our
        issuer (RFC 9207): where a page sends the person back when the authorization ends."""
        return ClientRedirect.build(
            request.redirect_uri, issuer=self._policy.issuer, state=request.state, error=error, error_description=description
        ).url()

    def _not_allowed(self, request: AuthorizationRequest) -> SignInNotAllowed:
        """The page for a person outside the access policy, with a way back carrying
        ``access_denied`` (RFC 6749 §4.1.2.1) so the client stops waiting."""
        back = self._error_url(request, AccessDenied.error, "this account is not allowed to connect")
        contact = self._policy.access_denied_contact or f"the administrators of {self._policy.service_name or self._policy.issuer}"
        return SignInNotAllowed(
            f"You signed in, but your account is not allowed to connect applications to this service. "
            f"If you need access, ask {contact}.",
            return_url=back,
        )
