"""Keyed token hashing and PKCE S256 (RFC 7636 §4.2, §4.6, Appendix B); policy limits."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.security import TokenHasher, s256_challenge, verify_pkce

from .conftest import CHALLENGE, VERIFIER

# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_harness_uses_the_rfc_example() -> None:
    assert (VERIFIER, CHALLENGE) == (RFC_VERIFIER, RFC_CHALLENGE)


def test_s256_challenge_matches_rfc_7636_appendix_b() -> None:
    assert s256_challenge(RFC_VERIFIER) == RFC_CHALLENGE


def test_verify_pkce_accepts_the_rfc_example() -> None:
    assert verify_pkce(RFC_VERIFIER, RFC_CHALLENGE)


@pytest.mark.parametrize(
    "verifier",
    [
        RFC_VERIFIER[:-1] + "l",
        RFC_VERIFIER + "A",
        RFC_CHALLENGE,  # "plain": the challenge itself is not the verifier
    ],
)
def test_verify_pkce_rejects_another_verifier(verifier: str) -> None:
    assert not verify_pkce(verifier, RFC_CHALLENGE)


@pytest.mark.parametrize(
    "verifier",
    [
        "a" * 42,  # too short
        "a" * 129,  # too long
        "a" * 42 + " ",  # space
        "a" * 42 + "+",  # not unreserved
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + "é",  # non-ASCII
        "a" * 43 + "\n",
        "",
    ],
)
def test_verify_pkce_rejects_a_malformed_verifier_even_if_it_hashes_to_the_challenge(verifier: str) -> None:
    # Compute the challenge of the malformed verifier itself: only the format rule can reject it.
    challenge = s256_challenge(verifier) if verifier.isascii() else RFC_CHALLENGE
    assert not verify_pkce(verifier, challenge)


@pytest.mark.parametrize("verifier", ["a" * 43, "Z" * 128, "0-._~" * 9])
def test_verify_pkce_accepts_every_well_formed_verifier(verifier: str) -> None:
    assert verify_pkce(verifier, s256_challenge(verifier))


def test_s256_challenge_is_unpadded_base64url() -> None:
    challenge = s256_challenge("a" * 43)
    assert len(challenge) == 43
    assert "=" not in challenge and "+" not in challenge and "/" not in challenge


# -- TokenHasher ---------------------------------------------------------------------------------


def test_hash_is_hmac_sha256_hex() -> None:
    import hashlib
    import hmac

    key = b"k" * 32
    assert TokenHasher(key).hash("mob_at_1") == hmac.new(key, b"mob_at_1", hashlib.sha256).hexdigest()


def test_hash_is_deterministic_and_not_the_value() -> None:
    hasher = TokenHasher(b"k" * 32)
    assert hasher.hash("token") == hasher.hash("token")
    assert hasher.hash("token") != "token"
    assert hasher.hash("token") != hasher.hash("token2")
    assert len(hasher.hash("token")) == 64


def test_hash_is_keyed() -> None:
    assert TokenHasher(b"k" * 32).hash("token") != TokenHasher(b"j" * 32).hash("token")


def test_matches() -> None:
    hasher = TokenHasher(b"k" * 32)
    assert hasher.matches("token", hasher.hash("token"))
    assert not hasher.matches("token", hasher.hash("other"))
    assert not hasher.matches("token", TokenHasher(b"j" * 32).hash("token"))
    assert not hasher.matches("token", "")


@pytest.mark.parametrize("key", [b"", b"short", b"k" * 31])
def test_short_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(ValueError):
        TokenHasher(key)


def test_32_byte_key_is_accepted() -> None:
    assert TokenHasher(b"k" * 32).hash("x")


# -- ServerPolicy --------------------------------------------------------------------------------


def policy(**kwargs: int) -> ServerPolicy:
    return ServerPolicy(issuer="https://as.example", resource="https://as.example/mcp", scopes_supported=("a",), **kwargs)


@pytest.mark.parametrize(
    "name", ["access_token_ttl", "refresh_token_ttl", "authorization_code_ttl", "pending_authorization_ttl"]
)
@pytest.mark.parametrize("value", [0, -1])
def test_lifetimes_must_be_positive(name: str, value: int) -> None:
    with pytest.raises(ValueError):
        policy(**{name: value})


def test_grace_period_may_be_zero_but_not_negative() -> None:
    assert policy(refresh_grace_period=0).refresh_grace_period == 0
    with pytest.raises(ValueError):
        policy(refresh_grace_period=-1)


def test_policy_defaults() -> None:
    p = policy()
    assert (p.access_token_ttl, p.refresh_token_ttl, p.authorization_code_ttl, p.pending_authorization_ttl, p.refresh_grace_period) == (
        3600,
        30 * 24 * 3600,
        60,
        600,
        60,
    )
