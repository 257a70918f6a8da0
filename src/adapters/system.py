"""The real clock and the real source of randomness behind the Clock and TokenGenerator ports."""

from __future__ import annotations

import secrets
import time

# 32 bytes = 256 bits of randomness in every token, code and secret.
TOKEN_BYTES = 32


class SystemClock:
    def now(self) -> int:
        return int(time.time())

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class SecretsTokenGenerator:
    def generate(self, prefix: str) -> str:
        return prefix + secrets.token_urlsafe(TOKEN_BYTES)
