"""MeasuredIdentityProvider (issue 11 §4): every upstream call reported once, with a bounded
outcome and its duration, whatever the provider answered; the answer itself unchanged."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.telemetry import MeasuredIdentityProvider

from ..fakes import RecordingTelemetry, ScriptedIdentityProvider


class SteppingClock:
    """Each reading 0.25 s after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def measured() -> tuple[MeasuredIdentityProvider, ScriptedIdentityProvider, RecordingTelemetry]:
    inner, telemetry = ScriptedIdentityProvider(), RecordingTelemetry()
    return MeasuredIdentityProvider(inner, telemetry, monotonic=SteppingClock()), inner, telemetry


def test_a_successful_exchange_is_reported_ok_with_its_duration() -> None:
    idp, inner, telemetry = measured()
    assert idp.exchange_code(code="c", code_verifier="v", nonce="n") is inner.login
    assert telemetry.calls == [("scripted", "exchange_code", "ok", 0.25)]
    assert idp.name == "scripted"


@pytest.mark.parametrize(("temporary", "outcome"), [(True, "unavailable"), (False, "refused")])
def test_a_failed_refresh_is_reported_and_still_raised(temporary: bool, outcome: str) -> None:
    idp, inner, telemetry = measured()
    inner.failure = UpstreamIdentityError("no", temporary=temporary, upstream_error="anything the provider says")
    with pytest.raises(UpstreamIdentityError):
        idp.refresh("rt")
    # The provider's own error text never becomes a label.
    assert telemetry.calls == [("scripted", "refresh", outcome, 0.25)]


def test_calls_that_reach_no_upstream_are_not_reported() -> None:
    idp, _, telemetry = measured()
    assert idp.authorization_url(state="s", nonce="n", code_challenge="c").startswith("https://idp.example/")
    assert telemetry.calls == []


def test_the_claims_read_after_a_refresh_are_reported() -> None:
    idp, inner, telemetry = measured()
    assert idp.identity_after_refresh(inner.login.tokens) == inner.login.identity
    inner.identity_failure = UpstreamIdentityError("graph down", temporary=True)
    with pytest.raises(UpstreamIdentityError):
        idp.identity_after_refresh(inner.login.tokens)
    assert [call[1:3] for call in telemetry.calls] == [("identity_after_refresh", "ok"), ("identity_after_refresh", "unavailable")]
