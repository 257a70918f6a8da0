"""Telemetry (ports.Telemetry, issue 11 §4): the default that counts nothing, and an identity
provider decorator that reports each upstream call."""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from .model import UpstreamIdentity, UpstreamLogin, UpstreamTokens
from .ports import IdentityProvider, Telemetry, UpstreamIdentityError

_T = TypeVar("_T")


class NoTelemetry:
    def token_issued(self, grant_type: str) -> None:
        return None

    def refresh_reuse(self) -> None:
        return None

    def code_replay(self) -> None:
        return None

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        return None


# The outcomes an upstream call is counted under: a fixed set, whatever the provider answers
# (its error codes are free text and would make a label without bound).
OUTCOME_OK = "ok"
OUTCOME_REFUSED = "refused"  # the provider ended the session or refused the code (not temporary)
OUTCOME_UNAVAILABLE = "unavailable"  # outage, timeout, unusable answer (temporary)
OUTCOME_ERROR = "error"  # anything else that escaped the adapter


class MeasuredIdentityProvider:
    """An IdentityProvider that reports each upstream call (code exchange, refresh, the claims
    read after a refresh) with its
    outcome and duration to ``telemetry``; everything else passes through."""

    def __init__(self, inner: IdentityProvider, telemetry: Telemetry, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._monotonic = monotonic
        self.name = inner.name

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        return self._inner.authorization_url(state=state, nonce=nonce, code_challenge=code_challenge)

    def describe_error(self, error: str, description: str | None) -> str:
        return self._inner.describe_error(error, description)

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        return self._measured("exchange_code", lambda: self._inner.exchange_code(code=code, code_verifier=code_verifier, nonce=nonce))

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        return self._measured("refresh", lambda: self._inner.refresh(refresh_token))

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        # The access policy's re-check: an ID token, userinfo or Microsoft Graph call upstream.
        return self._measured("identity_after_refresh", lambda: self._inner.identity_after_refresh(tokens))

    def __getattr__(self, name: str) -> Any:
        # Optional capabilities of a particular adapter (e.g. an Entra credential's readiness).
        return getattr(self._inner, name)

    def _measured(self, operation: str, call: Callable[[], _T]) -> _T:
        started = self._monotonic()
        outcome = OUTCOME_ERROR
        try:
            result = call()
            outcome = OUTCOME_OK
            return result
        except UpstreamIdentityError as exc:
            outcome = OUTCOME_UNAVAILABLE if exc.temporary else OUTCOME_REFUSED
            raise
        finally:
            self._telemetry.upstream_call(self.name, operation, outcome, self._monotonic() - started)
