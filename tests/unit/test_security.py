"""Keyed token hashing and PKCE S256 (RFC 7636 §4.2, §4.6, Appendix B); policy limits."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.security import TokenHasher, key_id, s256_challenge, verify_pkce

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


def test_hash_is_the_truncated_hmac_sha256_then_the_key_id() -> None:
    key = b"k" * 32
    hashed = TokenHasher(key).hash("mob_at_1")
    assert hashed == hmac.new(key, b"mob_at_1", hashlib.sha256).hexdigest()[:56] + key_id(key)
    assert len(hashed) == 64


def test_a_key_id_is_a_keyed_digest_that_reveals_nothing_of_the_key() -> None:
    key = b"k" * 32
    assert key_id(key) == hmac.new(key, b"mcp-oauth-bridge key id\x00", hashlib.sha256).hexdigest()[:8]
    assert key_id(key) != key_id(b"j" * 32)
    assert key_id(key) not in key.hex()


OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32


def _legacy(key: bytes, value: str) -> str:
    """How a hash was stored before keys had ids: the whole HMAC."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_new_values_are_hashed_under_the_first_key_only() -> None:
    rotated = TokenHasher(NEW, OLD)
    assert rotated.hash("v") == TokenHasher(NEW).hash("v")
    assert rotated.hash("v") != TokenHasher(OLD).hash("v")
    assert rotated.key_ids == (key_id(NEW), key_id(OLD))


def test_a_value_hashed_under_an_older_key_or_before_key_ids_still_matches() -> None:
    rotated = TokenHasher(NEW, OLD)
    assert rotated.matches("v", TokenHasher(OLD).hash("v"))
    assert rotated.matches("v", _legacy(OLD, "v"))
    assert rotated.matches("v", _legacy(NEW, "v"))
    # Not under a key no longer listed, nor another value.
    assert not rotated.matches("v", TokenHasher(OTHER).hash("v"))
    assert not rotated.matches("v", _legacy(OTHER, "v"))
    assert not rotated.matches("w", TokenHasher(OLD).hash("v"))
    # Once the old key is removed, what it hashed no longer matches.
    assert not TokenHasher(NEW).matches("v", TokenHasher(OLD).hash("v"))


def test_the_hashes_of_a_value_come_current_first_then_older_keys_then_legacy() -> None:
    assert list(TokenHasher(NEW, OLD).hashes("v")) == [
        TokenHasher(NEW).hash("v"),
        TokenHasher(OLD).hash("v"),
        _legacy(NEW, "v"),
        _legacy(OLD, "v"),
    ]


def test_find_reads_once_for_a_value_under_the_current_key() -> None:
    rotated = TokenHasher(NEW, OLD)
    stored = {TokenHasher(NEW).hash("current"): "a", TokenHasher(OLD).hash("older"): "b", _legacy(OLD, "legacy"): "c"}
    probes: list[str] = []

    def lookup(candidate: str) -> str | None:
        probes.append(candidate)
        return stored.get(candidate)

    assert rotated.find("current", lookup) == (TokenHasher(NEW).hash("current"), "a")
    assert len(probes) == 1
    assert rotated.find("older", lookup) == (TokenHasher(OLD).hash("older"), "b")
    assert rotated.find("legacy", lookup) == (_legacy(OLD, "legacy"), "c")
    probes.clear()
    assert rotated.find("unknown", lookup) is None
    assert len(probes) == 4


def test_only_a_hash_under_the_first_key_is_current() -> None:
    rotated = TokenHasher(NEW, OLD)
    assert rotated.is_current(rotated.hash("v"))
    assert not rotated.is_current(TokenHasher(OLD).hash("v"))
    assert not rotated.is_current(_legacy(NEW, "v")[:56] + "0" * 8)
    assert not TokenHasher(OLD).is_current(TokenHasher(NEW).hash("v"))


def test_a_tag_is_made_under_the_first_key_and_accepted_under_any() -> None:
    rotated = TokenHasher(NEW, OLD)
    assert rotated.mac("m") == TokenHasher(NEW).mac("m") != TokenHasher(OLD).mac("m")
    assert rotated.mac_matches("m", TokenHasher(OLD).mac("m"))
    assert not rotated.mac_matches("m", TokenHasher(OTHER).mac("m"))
    assert not rotated.mac_matches("n", TokenHasher(OLD).mac("m"))


def test_the_same_key_twice_and_no_key_are_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        TokenHasher(NEW, OLD, NEW)
    with pytest.raises(ValueError, match="at least one"):
        TokenHasher()


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
