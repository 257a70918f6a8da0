"""Keyed token hashing and PKCE S256 (RFC 7636 §4.2, §4.6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

SUPPORTED_CODE_CHALLENGE_METHODS = ("S256",)
MAC_DOMAIN = b"mcp-oauth-bridge mac\x00"
MAC_BYTES = 16
KEY_ID_DOMAIN = b"mcp-oauth-bridge key id\x00"
# A stored hash: HMAC_BYTES of the value's HMAC, then the KEY_ID_BYTES of the key's id.
HASH_BYTES = 32
KEY_ID_BYTES = 4
HMAC_BYTES = HASH_BYTES - KEY_ID_BYTES

# RFC 7636 §4.1: code-verifier = 43*128unreserved
CODE_VERIFIER_PATTERN = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# RFC 7636 §4.2: the S256 challenge is BASE64URL(SHA256(verifier)) without padding: 43 chars.
CODE_CHALLENGE_PATTERN = re.compile(r"^[A-Za-z0-9\-_]{43}$")

T = TypeVar("T")


class TokenHasher:
    """HMAC-SHA256 under server keys: tokens, codes and secrets are stored only this way.

    A keyed hash (not encryption) lets a token be found by primary key in O(1), and a stolen
    database yields nothing a client could present.

    Key rotation (``TOKEN_HASH_KEYS``, newest first): new values are hashed under the first key
    only; a value is found or matched under any of the keys, so nothing issued under an older key
    stops working while that key is listed. A stored hash says which key made it: its last
    KEY_ID_BYTES are the key's id (a keyed digest of the key, which reveals nothing about it) and
    the first 28 are the value's HMAC, so that ``keys status`` can count what still depends on an
    older key. Hashes stored before key ids existed are the whole 32-byte HMAC ("legacy"); they
    are still found and matched, under any key, until they expire or are re-hashed.
    """

    def __init__(self, *keys: bytes) -> None:
        if not keys:
            raise ValueError("at least one token hash key is required")
        if any(len(key) < 32 for key in keys):
            raise ValueError("the token hash key must be at least 32 bytes")
        ids = tuple(key_id(key) for key in keys)
        if len(set(ids)) != len(ids):
            raise ValueError("the token hash keys must all differ")
        self._keys = keys
        self.key_ids: tuple[str, ...] = ids

    def hash(self, value: str) -> str:
        """The hash to store for a new value: under the first key, ending with its id."""
        return self._keyed_hash(self._keys[0], self.key_ids[0], value)

    @staticmethod
    def _keyed_hash(key: bytes, identifier: str, value: str) -> str:
        # On every request (the bearer check): one OpenSSL call (the one-shot hmac.digest costs
        # about half of hmac.new()), then text, nothing else.
        return hmac.digest(key, value.encode("utf-8"), "sha256").hex()[: 2 * HMAC_BYTES] + identifier

    def hashes(self, value: str) -> Iterator[str]:
        """Every hash ``value`` may be stored under, the current one first: under each key in
        turn, then the legacy forms (the whole HMAC). Computed lazily, as they are needed."""
        for key, identifier in zip(self._keys, self.key_ids):
            yield self._keyed_hash(key, identifier, value)
        for key in self._keys:
            yield hmac.digest(key, value.encode("utf-8"), "sha256").hex()

    def find(self, value: str, lookup: Callable[[str], T | None]) -> tuple[str, T] | None:
        """The first of ``value``'s hashes that ``lookup`` finds, with what it found: one HMAC
        and one read for a value issued under the current key (nearly every request); at most
        two more per key for anything else."""
        for candidate in self.hashes(value):
            found = lookup(candidate)
            if found is not None:
                return candidate, found
        return None

    def matches(self, value: str, expected_hash: str) -> bool:
        """Whether ``expected_hash`` is a hash of ``value`` under any of the keys (constant time
        per comparison; a value that matches is compared under the current key first)."""
        return any(hmac.compare_digest(candidate, expected_hash) for candidate in self.hashes(value))

    def is_current(self, stored_hash: str) -> bool:
        """Whether a stored hash was made under the first key (else a matching value is re-hashed
        at its next use, for values that never expire: client secrets, registration tokens)."""
        return stored_hash.endswith(self.key_ids[0]) and len(stored_hash) == 2 * HASH_BYTES

    def mac(self, message: str) -> str:
        """A 128-bit tag (base64url) authenticating ``message`` under the first key: lets a value
        carry facts (a refresh token's grant and generation) the server can trust without a
        lookup. The domain-separation prefix keeps tags apart from the stored hashes."""
        return self._mac(self._keys[0], message)

    def mac_matches(self, message: str, tag: str) -> bool:
        """Whether ``tag`` is ``message``'s tag under any of the keys."""
        return any(hmac.compare_digest(self._mac(key, message), tag) for key in self._keys)

    @staticmethod
    def _mac(key: bytes, message: str) -> str:
        digest = hmac.digest(key, MAC_DOMAIN + message.encode("utf-8"), "sha256")
        return base64.urlsafe_b64encode(digest[:MAC_BYTES]).rstrip(b"=").decode("ascii")


def key_id(key: bytes) -> str:
    """A token hash key's public id: 8 hex digits, the same on every instance given that key."""
    return hmac.digest(key, KEY_ID_DOMAIN, "sha256")[:KEY_ID_BYTES].hex()


def s256_challenge(code_verifier: str) -> str:
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_pkce(code_verifier: str, code_challenge: str) -> bool:
    # RFC 7636 §4.6: compare BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) with code_challenge.
    if not CODE_VERIFIER_PATTERN.fullmatch(code_verifier):
        return False
    return hmac.compare_digest(s256_challenge(code_verifier), code_challenge)
