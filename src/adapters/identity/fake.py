"""A fake upstream OpenID provider for development and offline tests: anyone signs in as anyone.

Its codes and tokens are self-contained, HMAC-signed and time-limited, so several gunicorn
workers share no state; it checks the PKCE verifier and nonce like a real provider would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Sequence
from urllib.parse import urlencode

from ...domain.model import UpstreamIdentity, UpstreamLogin, UpstreamTokens
from ...domain.ports import Clock, TokenGenerator, UpstreamIdentityError
from ...domain.security import verify_pkce

SIGN_IN_PATH = "/fake-idp/authorize"
CALLBACK_PATH = "/oauth/callback"
CODE_TTL = 120


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeIdentityProvider:
    name = "fake"

    def __init__(
        self,
        *,
        public_url: str,
        signing_keys: Sequence[bytes],
        clock: Clock,
        tokens: TokenGenerator,
        access_token_ttl: int = 3600,
    ) -> None:
        self._public_url = public_url
        # Keys of its own, derived so that fake tokens can never pass as ours; like the token hash
        # keys they come from, the first signs and every one verifies (key rotation).
        self._keys = tuple(hmac.new(key, b"fake-identity-provider", hashlib.sha256).digest() for key in signing_keys)
        self._clock = clock
        self._tokens = tokens
        self._access_token_ttl = access_token_ttl

    @property
    def callback_url(self) -> str:
        return self._public_url + CALLBACK_PATH

    # -- signed, self-contained values ----------------------------------------------------------

    def _sign(self, kind: str, payload: dict[str, Any], ttl: int) -> str:
        body = dict(payload, kind=kind, exp=self._clock.now() + ttl, jti=self._tokens.generate(""))
        encoded = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"fake_{kind}.{encoded}.{self._signature(self._keys[0], encoded)}"

    @staticmethod
    def _signature(key: bytes, encoded: str) -> str:
        return _b64(hmac.new(key, encoded.encode(), hashlib.sha256).digest())

    def _verify(self, kind: str, value: str) -> dict[str, Any]:
        try:
            prefix, encoded, signature = value.split(".")
        except ValueError:
            raise UpstreamIdentityError(f"malformed fake {kind}", temporary=False, upstream_error="invalid_grant") from None
        signed = any(hmac.compare_digest(signature, self._signature(key, encoded)) for key in self._keys)
        if prefix != f"fake_{kind}" or not signed:
            raise UpstreamIdentityError(f"bad fake {kind} signature", temporary=False, upstream_error="invalid_grant")
        payload: dict[str, Any] = json.loads(_unb64(encoded))
        if payload.get("exp", 0) <= self._clock.now():
            raise UpstreamIdentityError(f"fake {kind} expired", temporary=False, upstream_error="invalid_grant")
        return payload

    # -- the IdentityProvider port --------------------------------------------------------------

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "redirect_uri": self.callback_url,
                "state": state,
                "nonce": nonce,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self._public_url}{SIGN_IN_PATH}?{query}"

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        payload = self._verify("code", code)
        if not verify_pkce(code_verifier, str(payload.get("code_challenge", ""))):
            raise UpstreamIdentityError("fake IdP: PKCE verification failed", temporary=False, upstream_error="invalid_grant")
        if not hmac.compare_digest(str(payload.get("nonce", "")), nonce):
            raise UpstreamIdentityError("fake IdP: nonce mismatch", temporary=False, upstream_error="invalid_grant")
        claims = {key: payload[key] for key in ("preferred_username", "email", "name") if payload.get(key)}
        identity = UpstreamIdentity(subject="fake:" + str(payload["preferred_username"]), claims=claims, policy_claims=claims)
        return UpstreamLogin(identity=identity, tokens=self._token_set(claims))

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        claims = self.claims_for(tokens.access_token)
        return UpstreamIdentity(subject="fake:" + str(claims["preferred_username"]), claims=claims, policy_claims=claims)

    def describe_error(self, error: str, description: str | None) -> str:
        return f"The fake identity provider answered {error if error.isidentifier() else 'an error'}."

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        payload = self._verify("rt", refresh_token)
        return self._token_set(payload["claims"])

    def _token_set(self, claims: dict[str, Any]) -> UpstreamTokens:
        return UpstreamTokens(
            access_token=self._sign("at", {"claims": claims}, self._access_token_ttl),
            refresh_token=self._sign("rt", {"claims": claims}, 90 * 24 * 3600),
            expires_at=self._clock.now() + self._access_token_ttl,
            scope="openid profile email offline_access",
        )

    # -- used by the sign-in page ---------------------------------------------------------------

    def issue_code(self, *, username: str, email: str | None, name: str | None, nonce: str, code_challenge: str) -> str:
        payload = {
            "preferred_username": username,
            "email": email or None,
            "name": name or None,
            "nonce": nonce,
            "code_challenge": code_challenge,
        }
        return self._sign("code", payload, CODE_TTL)

    def claims_for(self, access_token: str) -> dict[str, Any]:
        """The userinfo of a fake upstream access token (what an API call would see)."""
        payload = self._verify("at", access_token)
        return dict(payload["claims"])
