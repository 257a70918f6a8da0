"""The fake IdP answers the access policy's questions like a real one: the claims after an
upstream refresh are the signed-in person's (issue 11 §1)."""

from __future__ import annotations

from mcp_oauth_bridge.adapters.identity.fake import FakeIdentityProvider
from mcp_oauth_bridge.domain.security import s256_challenge
from tests.fakes import FixedClock, SequentialTokenGenerator

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def test_claims_after_a_refresh_are_the_signed_in_persons() -> None:
    clock = FixedClock(1_700_000_000)
    idp = FakeIdentityProvider(
        public_url="http://127.0.0.1:8000", signing_keys=[b"k" * 32], clock=clock, tokens=SequentialTokenGenerator()
    )
    code = idp.issue_code(username="alice", email="alice@example.com", name=None, nonce="n", code_challenge=s256_challenge(VERIFIER))
    login = idp.exchange_code(code=code, code_verifier=VERIFIER, nonce="n")
    assert login.identity.policy_claims == {"preferred_username": "alice", "email": "alice@example.com"}
    assert login.tokens.refresh_token is not None
    clock.advance(4000)
    refreshed = idp.refresh(login.tokens.refresh_token)
    identity = idp.identity_after_refresh(refreshed)
    assert identity.subject == login.identity.subject == "fake:alice"
    assert identity.policy_claims == login.identity.policy_claims
