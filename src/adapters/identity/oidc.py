"""A generic OpenID Connect provider: authorization code flow with PKCE (OIDC Core 1.0 §3.1,
RFC 6749 §4.1, RFC 7636), discovery (OIDC Discovery 1.0 §4) and ID-token validation
(OIDC Core 1.0 §3.1.3.7) against the provider's JWKS (RFC 7517).

JOSE is joserfc, Authlib's typed successor to the deprecated ``authlib.jose`` (and a dependency
of Authlib itself). Secrets and tokens never appear in messages or logs: every message is built
here, and upstream ``error_description`` text is scrubbed of the values we sent.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests
import urllib3
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, RSAKey, import_key
from joserfc.jws import extract_compact

from ...domain.model import UpstreamIdentity, UpstreamLogin, UpstreamTokens
from .certificate import CLIENT_ASSERTION_TYPE, CertificateCredential
from ...domain.ports import Clock, UpstreamIdentityError
from ...domain.uris import is_loopback_host

log = logging.getLogger(__name__)

# OIDC Discovery 1.0 §4: "/.well-known/openid-configuration" appended to the issuer.
DISCOVERY_PATH = "/.well-known/openid-configuration"
DEFAULT_SCOPES = ("openid", "profile", "email")
# Seconds a whole exchange with the provider may take (connecting at most CONNECT_TIMEOUT of it).
DEFAULT_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# Discovery documents, key sets and token responses are a few KB.
MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_LEEWAY = 120
# RFC 6749 §5.1: expires_in is only RECOMMENDED; assume an hour when a provider omits it.
DEFAULT_EXPIRES_IN = 3600
# Keys are refetched at once on an unknown kid; this bounds how long a withdrawn key stays trusted.
JWKS_MAX_AGE = 24 * 3600
CODE_CHALLENGE_METHOD = "S256"
# Asymmetric algorithms only: "none" and HS* (keyed with the client secret) are refused.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
KEY_TYPE_FOR_ALGORITHM = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
# OIDC Discovery 1.0 §3: when token_endpoint_auth_methods_supported is omitted, the default is
# client_secret_basic.
DEFAULT_CLIENT_AUTH_METHOD = "client_secret_basic"
SUPPORTED_CLIENT_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
# Parameters the adapter sets itself; `resource` is never sent upstream (Entra answers AADSTS901002).
RESERVED_AUTHORIZATION_PARAMETERS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "resource",
    }
)
# Errors that mean "try again later" rather than "this session is over".
TEMPORARY_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
INVALID_ID_TOKEN = "invalid_id_token"
# Google documents both forms for its ID tokens' iss ("accounts.google.com" is the legacy one).
ISSUER_ALIASES: Mapping[str, tuple[str, ...]] = {"https://accounts.google.com": ("accounts.google.com",)}
IDENTITY_CLAIMS = ("preferred_username", "email", "name")
# OIDC_PROMPT_CONSENT: OIDC Core 1.0 §11: a provider may ignore offline_access unless the request
# carries prompt=consent (panva's oidc-provider does by default, so no refresh token is issued).
PROMPT_CONSENT_MODES = ("auto", "always", "never")
MAX_DESCRIPTION_LENGTH = 300
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


# -- configuration checks ------------------------------------------------------------------------


def require_secure_url(url: str, *, what: str, allow_query: bool = False) -> str:
    """``url`` without a trailing slash; ValueError unless it is https (or http on loopback).

    OIDC Discovery 1.0 §3: the issuer "MUST be a URL that uses the https scheme"; plain http is
    tolerated only for local test doubles on loopback.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{what} must use https (http is accepted only for loopback hosts), got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not contain credentials")
    if parts.fragment or (parts.query and not allow_query):
        raise ValueError(f"{what} must not have a query or fragment, got {url!r}")
    return url


def normalize_oidc_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in order without duplicates, ``openid`` first (OIDC Core 1.0 §3.1.2.1: the
    request "MUST contain the openid scope value")."""
    result = ["openid"]
    for scope in scopes:
        if not SCOPE_TOKEN.match(scope):
            raise ValueError(f"invalid scope {scope!r} (RFC 6749 §3.3)")
        if scope not in result:
            result.append(scope)
    return tuple(result)


def choose_client_auth_method(supported: tuple[str, ...] | None) -> str:
    """client_secret_post unless the provider advertises only client_secret_basic (RFC 6749
    §2.3.1); the Discovery default applies when nothing is advertised."""
    if supported is None:
        return DEFAULT_CLIENT_AUTH_METHOD
    for method in SUPPORTED_CLIENT_AUTH_METHODS:
        if method in supported:
            return method
    raise ValueError(f"the provider supports neither client_secret_post nor client_secret_basic ({', '.join(supported)})")


# -- discovery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an OpenID Provider's metadata (OIDC Discovery 1.0 §3) this adapter uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    client_auth_method: str
    # OIDC Discovery 1.0 §3: RECOMMENDED; None when the provider has none.
    userinfo_endpoint: str | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ProviderMetadata:
        """Validate the REQUIRED members; ValueError names the one that is missing or unsafe."""
        values: dict[str, str] = {}
        for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"discovery document has no {name}")
            values[name] = require_secure_url(value, what=name, allow_query=name != "issuer")
        methods = document.get("token_endpoint_auth_methods_supported")
        supported = tuple(str(method) for method in methods) if isinstance(methods, list) else None
        userinfo = document.get("userinfo_endpoint")
        userinfo_endpoint = (
            require_secure_url(userinfo, what="userinfo_endpoint", allow_query=True)
            if isinstance(userinfo, str) and userinfo
            else None
        )
        return cls(client_auth_method=choose_client_auth_method(supported), userinfo_endpoint=userinfo_endpoint, **values)


# -- small helpers --------------------------------------------------------------------------------


def _form_encode(value: str) -> str:
    return quote(value, safe="")


def basic_authorization(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding."""
    pair = f"{_form_encode(client_id)}:{_form_encode(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Upstream text made safe for a message: known secret values removed, control characters
    flattened (no log injection), length capped."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    if len(text) > MAX_DESCRIPTION_LENGTH:
        text = text[: MAX_DESCRIPTION_LENGTH - 3] + "..."
    return text


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _expires_in(value: object) -> int:
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    if isinstance(value, int):
        return max(value, 0)
    # Some providers (Azure AD v1 among them) send the number as a string.
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return DEFAULT_EXPIRES_IN


def invalid_id_token(reason: str) -> UpstreamIdentityError:
    """OIDC Core 1.0 §3.1.3.7: a failed check means the ID token MUST be rejected."""
    return UpstreamIdentityError(f"ID token rejected: {reason}", temporary=False, upstream_error=INVALID_ID_TOKEN)


def _unavailable(message: str) -> UpstreamIdentityError:
    return UpstreamIdentityError(message, temporary=True)


# -- ID-token checks (OIDC Core 1.0 §3.1.3.7), each a function of the claims -----------------------


def check_audience(claims: Mapping[str, Any], client_id: str) -> None:
    """Steps 3-5: aud contains the client id; with several audiences azp is present; azp, when
    present, is the client id."""
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise invalid_id_token(f"aud {aud!r} does not contain this client's id")
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise invalid_id_token("several audiences but no azp claim")
    if azp is not None and azp != client_id:
        raise invalid_id_token(f"azp {azp!r} is not this client's id")


def _numeric_date(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid_id_token(f"{name} claim missing or not a number")
    return int(value)


def check_times(claims: Mapping[str, Any], *, now: int, leeway: int) -> None:
    """Steps 9-10: the current time is before exp; iat (and nbf) are not in the future, each
    with ``leeway`` seconds of clock skew."""
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
    if now >= exp + leeway:
        raise invalid_id_token(f"expired (exp is {now - exp} s in the past)")
    if iat > now + leeway:
        raise invalid_id_token(f"iat is {iat - now} s in the future")
    if nbf is not None and nbf > now + leeway:
        raise invalid_id_token(f"not valid before nbf, {nbf - now} s in the future")


def check_nonce(claims: Mapping[str, Any], nonce: str) -> None:
    """Step 11: the nonce claim equals the value sent in the authentication request."""
    value = claims.get("nonce")
    if not isinstance(value, str):
        raise invalid_id_token("nonce claim missing")
    if not hmac.compare_digest(value.encode(), nonce.encode()):
        raise invalid_id_token("nonce does not match the one sent with the authorization request")


def check_subject(claims: Mapping[str, Any]) -> str:
    """OIDC Core 1.0 §2: sub is REQUIRED, a locally unique identifier of the end-user."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise invalid_id_token("sub claim missing")
    return sub


# -- JWKS ------------------------------------------------------------------------------------------

SigningKey = RSAKey | ECKey


def import_signing_keys(document: Mapping[str, Any]) -> list[SigningKey]:
    """The signature keys of a JWK Set (RFC 7517 §5): keys for encryption, of other types, or
    that fail to import are skipped, as §5 allows for keys that are not understood."""
    raw_keys = document.get("keys")
    keys: list[SigningKey] = []
    for data in raw_keys if isinstance(raw_keys, list) else []:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig" or data.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = import_key(data)
        except (JoseError, ValueError, TypeError):
            log.warning("skipping a JWKS key that could not be imported (kid %r)", data.get("kid"))
            continue
        if isinstance(key, (RSAKey, ECKey)):
            keys.append(key)
    return keys


def find_key(keys: list[SigningKey], *, kid: str | None, alg: str) -> SigningKey | None:
    """The key for a JWS header: matching kid, type for alg, and alg when the key states one.

    OIDC Core 1.0 §10.1: with several keys in the set, a kid MUST be in the header; without one
    the only key of the right type is used.
    """
    key_type = KEY_TYPE_FOR_ALGORITHM.get(alg[:2])
    candidates = [
        key for key in keys if key.key_type == key_type and key.get("alg") in (None, alg)
    ]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
    elif len(candidates) != 1:
        return None
    return candidates[0] if candidates else None


# -- the adapter -----------------------------------------------------------------------------------


OAUTH_ERROR_NAME = re.compile(r"^[a-z_]{1,64}$")
OAUTH_ERROR_HINTS = {
    "invalid_request": "The identity provider rejected the sign-in request: check that this "
    "server's redirect URI (PUBLIC_URL/oauth/callback) is registered for the client.",
    "unauthorized_client": "The identity provider does not let this client sign people in with "
    "the authorization code flow: check OIDC_CLIENT_ID and the client's settings.",
    "invalid_scope": "The identity provider rejected the requested scopes: check OIDC_SCOPES.",
    "unsupported_response_type": "The client is not allowed the authorization code flow at the "
    "identity provider.",
    "consent_required": "The identity provider needs consent for the requested scopes.",
    "interaction_required": "The identity provider needs an interactive sign-in: start the "
    "connection again.",
    "login_required": "The identity provider needs you to sign in again: start the connection again.",
}


class OidcIdentityProvider:
    """Any OpenID Provider with discovery (Google, Okta, Auth0, Keycloak, ...) behind the
    ``IdentityProvider`` port, as a confidential client."""

    name = "oidc"

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str = "",
        redirect_uri: str,
        clock: Clock,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        leeway: int = DEFAULT_LEEWAY,
        authorization_params: Mapping[str, str] | None = None,
        client_certificate: CertificateCredential | None = None,
        prompt_consent: str = "never",
        policy_claims: Iterable[str] = (),
    ) -> None:
        if prompt_consent not in PROMPT_CONSENT_MODES:
            raise ValueError(f"prompt_consent must be one of {', '.join(PROMPT_CONSENT_MODES)}")
        if not client_id:
            raise ValueError("client_id is required")
        if bool(client_secret) == (client_certificate is not None):
            raise ValueError("exactly one of client_secret and client_certificate is required")
        if timeout <= 0 or leeway < 0:
            raise ValueError("timeout must be positive and leeway not negative")
        extra = dict(authorization_params or {})
        reserved = sorted(RESERVED_AUTHORIZATION_PARAMETERS.intersection(extra))
        if reserved:
            raise ValueError(f"authorization_params may not set {', '.join(reserved)}")
        self._issuer = require_secure_url(issuer, what="issuer")
        self._client_id = client_id
        self._client_secret = client_secret
        self._client_certificate = client_certificate
        self._redirect_uri = require_secure_url(redirect_uri, what="redirect_uri")
        self._clock = clock
        self._scopes = normalize_oidc_scopes(scopes)
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout
        self._leeway = leeway
        self._authorization_params = extra
        self._prompt_consent = prompt_consent
        # The claims the access policy reads: read from userinfo when the ID token lacks them.
        self._policy_claim_names = tuple(policy_claims)
        self._metadata: ProviderMetadata | None = None
        self._keys: list[SigningKey] = []
        self._keys_fetched_at: int | None = None

    # -- configuration, for the composition root and messages -----------------------------------

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def timeout(self) -> float:
        """Seconds an exchange with the provider may take (see ``_call``)."""
        return self._timeout

    @property
    def discovery_url(self) -> str:
        """OIDC Discovery 1.0 §4: "any terminating / MUST be removed before appending"."""
        return self._issuer.rstrip("/") + DISCOVERY_PATH

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._scopes

    @property
    def scope(self) -> str:
        return " ".join(self._scopes)

    @property
    def redirect_uri(self) -> str:
        return self._redirect_uri

    # -- the IdentityProvider port --------------------------------------------------------------

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """The authentication request (OIDC Core 1.0 §3.1.2.1) with PKCE S256 (RFC 7636 §4.3)."""
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": self._redirect_uri,
            "scope": self.scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": CODE_CHALLENGE_METHOD,
            **self._authorization_params,
        }
        if self._asks_consent() and "prompt" not in params:
            params["prompt"] = "consent"
        return _with_query(self.metadata().authorization_endpoint, params)

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        """The token request (OIDC Core 1.0 §3.1.3.1, RFC 7636 §4.5) and ID-token validation
        (§3.1.3.7)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri,
            "code_verifier": code_verifier,
        }
        body = self._token_request(form, sent_secrets=(code, code_verifier))
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise invalid_id_token("the token response has no id_token")
        claims = self.validate_id_token(id_token, nonce=nonce)
        tokens = self._upstream_tokens(body, id_token=id_token, previous_refresh_token=None)
        return UpstreamLogin(identity=self._identity_with_policy_claims(claims, tokens), tokens=tokens)

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        """The refreshed ID token's claims (validated again, without nonce: OIDC Core 1.0 §12.2),
        completed from userinfo; with no ID token, the userinfo response alone (§5.3)."""
        if tokens.id_token:
            claims = self.validate_id_token(tokens.id_token, nonce=None)
            return self._identity_with_policy_claims(claims, tokens)
        # Userinfo's answer is all there is: nothing to complete it from (no second request).
        return self._policy_identity(self._userinfo(tokens.access_token, expected_subject=None), tokens)

    def _asks_consent(self) -> bool:
        if self._prompt_consent == "always":
            return True
        return self._prompt_consent == "auto" and "offline_access" in self._scopes

    def _identity_with_policy_claims(self, claims: Mapping[str, Any], tokens: UpstreamTokens) -> UpstreamIdentity:
        return self._policy_identity(self._completed_claims(claims, tokens.access_token), tokens)

    def _policy_identity(self, claims: Mapping[str, Any], tokens: UpstreamTokens) -> UpstreamIdentity:
        return replace(self._identity(claims), policy_claims=self._policy_claims(claims, tokens))

    def _policy_claims(self, claims: Mapping[str, Any], tokens: UpstreamTokens) -> Mapping[str, Any]:
        """What the access policy reads: every claim, userinfo's included."""
        return dict(claims)

    def _completed_claims(self, claims: Mapping[str, Any], access_token: str) -> Mapping[str, Any]:
        """OIDC Core 1.0 §5.4: with default settings some providers return profile and email
        claims only from the userinfo endpoint. Missing ones are read from it; its sub must be
        the ID token's (§5.3.2). A claim the access policy needs makes the call mandatory."""
        missing_display = [name for name in IDENTITY_CLAIMS if name not in claims]
        missing_policy = [name for name in self._policy_claim_names if name not in claims]
        if not (missing_display or missing_policy) or self.metadata().userinfo_endpoint is None:
            return claims
        try:
            userinfo = self._userinfo(access_token, expected_subject=check_subject(claims))
        except UpstreamIdentityError as exc:
            if missing_policy:
                raise
            log.warning("keeping the ID token's claims only: %s", exc)
            return claims
        # The ID token's own claims win: they are signed.
        return {**userinfo, **claims}

    def _userinfo(self, access_token: str, *, expected_subject: str | None) -> dict[str, Any]:
        """The userinfo request (OIDC Core 1.0 §5.3.1) with the access token as a bearer."""
        endpoint = self.metadata().userinfo_endpoint
        if endpoint is None:
            raise UpstreamIdentityError("the provider has no userinfo endpoint to read claims from", temporary=False)
        try:
            status, body = self._call("GET", endpoint, headers={"Authorization": f"Bearer {access_token}"})
        except requests.RequestException as exc:
            raise _unavailable(f"userinfo endpoint unreachable ({type(exc).__name__})") from None
        if status >= 500 or status == 429:
            raise _unavailable(f"userinfo endpoint answered HTTP {status}")
        if status != 200 or not isinstance(body, dict):
            # 401 (RFC 6750 §3.1 invalid_token): the access token no longer works.
            raise UpstreamIdentityError(f"userinfo endpoint answered HTTP {status} without claims", temporary=False)
        subject = body.get("sub")
        if not isinstance(subject, str) or not subject:
            raise UpstreamIdentityError("userinfo response has no sub", temporary=False)
        # §5.3.2: "the sub Claim in the UserInfo Response MUST be verified to exactly match the
        # sub Claim in the ID Token; if they do not match, the UserInfo Response values MUST NOT
        # be used."
        if expected_subject is not None and not hmac.compare_digest(subject.encode(), expected_subject.encode()):
            raise UpstreamIdentityError("userinfo sub does not match the ID token's sub", temporary=False)
        return body

    def describe_error(self, error: str, description: str | None) -> str:
        """RFC 6749 §4.1.2.1 errors in words; the description's free text is not repeated."""
        shown = error if OAUTH_ERROR_NAME.fullmatch(error) else "an unknown error"
        return OAUTH_ERROR_HINTS.get(error, f"The identity provider refused the sign-in ({shown}).")

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        """The refresh request (RFC 6749 §6) with the same scopes; the old refresh token is kept
        when the provider does not rotate it (§5.1: refresh_token is OPTIONAL)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "scope": self.scope}
        body = self._token_request(form, sent_secrets=(refresh_token,))
        return self._upstream_tokens(
            body, id_token=self._refreshed_id_token(body), previous_refresh_token=refresh_token
        )

    # -- discovery and keys ----------------------------------------------------------------------

    def metadata(self) -> ProviderMetadata:
        """The provider's metadata, fetched on first use and cached (OIDC Discovery 1.0 §4)."""
        if self._metadata is None:
            document = self._get_json(self.discovery_url, what="discovery document")
            try:
                metadata = ProviderMetadata.from_document(document)
                self._check_discovered_issuer(metadata.issuer)
            except ValueError as exc:
                raise _unavailable(f"unusable discovery document at {self.discovery_url}: {exc}") from None
            log.info("discovered OpenID provider %s", metadata.issuer)
            self._metadata = metadata
        return self._metadata

    def _check_discovered_issuer(self, discovered: str) -> None:
        """OIDC Discovery 1.0 §4.3: the issuer returned MUST be identical to the issuer URL used
        for discovery (a trailing slash in the configuration is forgiven)."""
        if discovered.rstrip("/") != self._issuer.rstrip("/"):
            raise ValueError(f"issuer {discovered!r} is not the configured issuer {self._issuer!r}")

    def _signing_keys(self, *, refetch: bool) -> tuple[list[SigningKey], bool]:
        """The cached JWKS (fetched when missing or older than JWKS_MAX_AGE) and whether it was
        fetched just now."""
        now = self._clock.now()
        stale = self._keys_fetched_at is None or now - self._keys_fetched_at >= JWKS_MAX_AGE
        if not (refetch or stale):
            return self._keys, False
        document = self._get_json(self.metadata().jwks_uri, what="JWKS")
        keys = import_signing_keys(document)
        if not keys:
            raise _unavailable("the provider's JWKS has no usable signing keys")
        self._keys, self._keys_fetched_at = keys, now
        return keys, True

    def _key_for(self, header: Mapping[str, Any]) -> SigningKey:
        """The key named by the header; on an unknown kid the JWKS is refetched once (key
        rotation, OIDC Core 1.0 §10.1.1), then the token is refused."""
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise invalid_id_token("kid header is not a string")
        alg = str(header["alg"])
        keys, fresh = self._signing_keys(refetch=False)
        key = find_key(keys, kid=kid, alg=alg)
        if key is None and not fresh:
            log.info("no JWKS key for kid %r: refetching the provider's keys", kid)
            keys, _ = self._signing_keys(refetch=True)
            key = find_key(keys, kid=kid, alg=alg)
        if key is None:
            raise invalid_id_token(f"no {alg} key with kid {kid!r} in the provider's JWKS")
        return key

    # -- ID-token validation ---------------------------------------------------------------------

    def validate_id_token(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        """OIDC Core 1.0 §3.1.3.7: signature (step 6) against the provider's JWKS with an
        asymmetric alg, iss (2), aud/azp (3-5), exp/iat (9-10), nonce (11) when one was sent."""
        header = self._unverified_header(id_token)
        key = self._key_for(header)
        try:
            claims = jwt.decode(id_token, key, algorithms=[header["alg"]]).claims
        except BadSignatureError:
            raise invalid_id_token("bad signature") from None
        except JoseError as exc:
            raise invalid_id_token(f"undecodable ({exc.error})") from None
        self._check_issuer(claims)
        check_audience(claims, self._client_id)
        check_times(claims, now=self._clock.now(), leeway=self._leeway)
        if nonce is not None:
            check_nonce(claims, nonce)
        check_subject(claims)
        return claims

    @staticmethod
    def _unverified_header(id_token: str) -> dict[str, Any]:
        try:
            header = dict(extract_compact(id_token.encode("ascii")).headers())
        except (JoseError, ValueError, UnicodeError):
            raise invalid_id_token("not a compact JWS") from None
        alg = header.get("alg")
        # Step 7: the alg is the one expected (an asymmetric signature, never "none" or HS*).
        if alg not in SIGNING_ALGORITHMS:
            raise invalid_id_token(f"unsupported alg {alg!r}")
        return header

    def _check_issuer(self, claims: Mapping[str, Any]) -> None:
        """Step 2: iss MUST exactly match the discovered issuer."""
        expected = self.metadata().issuer
        iss = claims.get("iss")
        if iss != expected and iss not in ISSUER_ALIASES.get(expected, ()):
            raise invalid_id_token(f"iss {iss!r} is not the provider's issuer {expected!r}")

    def _identity(self, claims: Mapping[str, Any]) -> UpstreamIdentity:
        """The subject is sub (OIDC Core 1.0 §5.7: the only stable identifier); display claims
        come along when present."""
        shown = {name: claims[name] for name in IDENTITY_CLAIMS if isinstance(claims.get(name), str)}
        return UpstreamIdentity(subject=check_subject(claims), claims=shown)

    def _refreshed_id_token(self, body: Mapping[str, Any]) -> str | None:
        """OIDC Core 1.0 §12.2: an ID token in a refresh response is validated like the first
        (without nonce); one that fails is dropped, since the access token stands on its own."""
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            return None
        try:
            self.validate_id_token(id_token, nonce=None)
        except UpstreamIdentityError as exc:
            log.warning("dropping the ID token of a refresh response: %s", exc)
            return None
        return id_token

    # -- HTTP ------------------------------------------------------------------------------------

    def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """One HTTP exchange with the provider, finished within ``timeout`` seconds (plus at
        most one read's wait): a slow or trickling answer cannot outlast the per-grant lease an
        upstream refresh runs under (UpstreamTokenService.LEASE_SECONDS, 30 s), so no other
        request spends the same refresh token meanwhile. Returns the status and the JSON body
        (None if the body is not JSON)."""
        deadline = time.monotonic() + self._timeout
        response = self._session.request(
            method,
            url,
            stream=True,
            timeout=(min(CONNECT_TIMEOUT, self._timeout), self._timeout),
            headers={"Accept": "application/json", **kwargs.pop("headers", {})},
            **kwargs,
        )
        with response:
            body = bytearray()
            # read1: whatever has arrived (at least a byte), so the deadline is checked as the
            # answer trickles in, not only once a whole buffer is full.
            while chunk := self._read_some(response):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise requests.ConnectionError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"answer not complete within {self._timeout:g} s")
        try:
            return response.status_code, json.loads(bytes(body))
        except ValueError:
            return response.status_code, None

    @staticmethod
    def _read_some(response: requests.Response) -> bytes:
        try:
            return bytes(response.raw.read1(16384, decode_content=True))
        except urllib3.exceptions.HTTPError as exc:
            # What requests would have raised had it read the body itself.
            raise requests.ConnectionError(str(exc)) from exc

    def _get_json(self, url: str, *, what: str) -> Mapping[str, Any]:
        try:
            status, document = self._call("GET", url)
        except requests.RequestException as exc:
            raise _unavailable(f"{what} at {url} unreachable ({type(exc).__name__})") from None
        if status != 200:
            raise _unavailable(f"{what} at {url} answered HTTP {status}")
        if not isinstance(document, dict):
            raise _unavailable(f"{what} at {url} is not a JSON object")
        return document

    def _token_request(self, form: dict[str, str], *, sent_secrets: tuple[str, ...]) -> Mapping[str, Any]:
        """POST to the token endpoint with client authentication (RFC 6749 §2.3.1, §3.2)."""
        metadata = self.metadata()
        headers = {"Accept": "application/json"}
        if self._client_certificate is not None:
            # RFC 7523 §2.2 (private_key_jwt): a fresh assertion whose audience is this endpoint.
            assertion = self._client_certificate.client_assertion(
                client_id=self._client_id, audience=metadata.token_endpoint, now=self._clock.now()
            )
            form = {**form, "client_id": self._client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}
            sent_secrets = (assertion, *sent_secrets)
        elif metadata.client_auth_method == "client_secret_basic":
            headers["Authorization"] = basic_authorization(self._client_id, self._client_secret)
        else:
            form = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
        try:
            status, body = self._call("POST", metadata.token_endpoint, data=form, headers=headers)
        except requests.RequestException as exc:
            # A timeout may come after the provider acted (rotated a refresh token): temporary,
            # so the grant is kept and the client gets 503, never a revocation.
            raise _unavailable(f"token endpoint unreachable ({type(exc).__name__})") from None
        if not isinstance(body, dict):
            body = {}
        if status != 200 or "error" in body:
            raise self._token_error(status, body, sent_secrets=(self._client_secret, *sent_secrets))
        return body

    def _token_error(self, status: int, body: Mapping[str, Any], *, sent_secrets: tuple[str, ...]) -> UpstreamIdentityError:
        """RFC 6749 §5.2 errors: outages (5xx, 429, temporarily_unavailable) are temporary; an
        OAuth error such as invalid_grant ends the upstream session."""
        error = body.get("error")
        raw_description = body.get("error_description")
        description = scrub(raw_description, sent_secrets) if isinstance(raw_description, str) else None
        if not isinstance(error, str) or not error:
            return _unavailable(f"token endpoint answered HTTP {status} without an OAuth error")
        error = scrub(error, sent_secrets)
        if status >= 500 or status == 429 or error in TEMPORARY_ERRORS:
            return _unavailable(f"token endpoint answered HTTP {status} {error}: {description or 'no description'}")
        return UpstreamIdentityError(
            self._describe_token_error(error, description), temporary=False, upstream_error=error
        )

    def _describe_token_error(self, error: str, description: str | None) -> str:
        return f"token endpoint refused the request: {error}" + (f" ({description})" if description else "")

    def _upstream_tokens(
        self, body: Mapping[str, Any], *, id_token: str | None, previous_refresh_token: str | None
    ) -> UpstreamTokens:
        """A successful token response (RFC 6749 §5.1); scope defaults to the requested one."""
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise _unavailable("token endpoint answered without an access_token")
        refresh_token = body.get("refresh_token")
        scope = body.get("scope")
        return UpstreamTokens(
            access_token=access_token,
            expires_at=self._clock.now() + _expires_in(body.get("expires_in")),
            refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else previous_refresh_token,
            scope=scope if isinstance(scope, str) else self.scope,
            id_token=id_token,
        )
