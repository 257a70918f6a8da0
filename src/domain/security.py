"""Keyed token hashing and PKCE S256 (RFC 7636 §4.2, §4.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

SUPPORTED_CODE_CHALLENGE_METHODS = ("S256",)
MAC_DOMAIN = b"mcp-oauth-bridge mac\x00"
MAC_BYTES = 16

# RFC 7636 §4.1: code-verifier = 43*128unreserved
CODE_VERIFIER_PATTERN = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# RFC 7636 §4.2: the S256 challenge is BASE64URL(SHA256(verifier)) without padding: 43 chars.
CODE_CHALLENGE_PATTERN = re.compile(r"^[A-Za-z0-9\-_]{43}$")


class TokenHasher:
    """HMAC-SHA256 under a server key: tokens, codes and secrets are stored only this way.

    A keyed hash (not encryption) lets a token be found by primary key in O(1), and a stolen
    database yields nothing a client could present.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the token hash key must be at least 32 bytes")
        self._key = key

    def hash(self, value: str) -> str:
        # The one-shot hmac.digest (OpenSSL's HMAC in one call) costs about half of hmac.new().
        return hmac.digest(self._key, value.encode("utf-8"), "sha256").hex()

    def matches(self, value: str, expected_hash: str) -> bool:
        return hmac.compare_digest(self.hash(value), expected_hash)

    def mac(self, message: str) -> str:
        """A 128-bit tag (base64url) authenticating ``message`` under the same key: lets a value
        carry facts (a refresh token's grant and generation) the server can trust without a
        lookup. The domain-separation prefix keeps tags apart from the stored hashes."""
        digest = hmac.digest(self._key, MAC_DOMAIN + message.encode("utf-8"), "sha256")
        return base64.urlsafe_b64encode(digest[:MAC_BYTES]).rstrip(b"=").decode("ascii")


def s256_challenge(code_verifier: str) -> str:
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_pkce(code_verifier: str, code_challenge: str) -> bool:
    # RFC 7636 §4.6: compare BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) with code_challenge.
    if not CODE_VERIFIER_PATTERN.fullmatch(code_verifier):
        return False
    return hmac.compare_digest(s256_challenge(code_verifier), code_challenge)
