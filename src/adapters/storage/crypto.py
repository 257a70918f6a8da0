"""Encryption of stored upstream secrets with rotating Fernet keys (MultiFernet)."""

from __future__ import annotations

import binascii
from typing import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ...domain.ports import StorageError


def generate_key() -> str:
    """A new random Fernet key (urlsafe base64 text)."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Encrypts under the first key and decrypts under any, so keys rotate without downtime."""

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str):
            # A lone string would be iterated character by character.
            raise ValueError("encryption keys must be a sequence of Fernet keys, not a single string")
        if not keys:
            raise ValueError("at least one encryption key is required")
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.strip().encode("ascii")))
            except (ValueError, binascii.Error, UnicodeEncodeError, AttributeError):
                # The key itself is never echoed: error messages end up in logs.
                raise ValueError(
                    f"encryption key #{position} is not a Fernet key (32 url-safe base64-encoded bytes)"
                ) from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise StorageError("a stored value cannot be decrypted with the configured keys") from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt under the newest key (the original timestamp is kept)."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise StorageError("a stored value cannot be decrypted with the configured keys") from exc
