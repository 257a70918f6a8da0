"""Refresh token values that name their grant and generation (RFC 6749 §6, §10.4; OAuth 2.1 §4.3.1).

A refresh token is ``mob_rt_<grant>.<generation>.<secret>.<tag>``: the tag authenticates the
grant and generation under the token hash key. A presented token that is no longer stored can
then still be recognised as a genuine older generation of its grant (a replay, which revokes the
grant), so only the grant's current generation and the token it replaced need to be kept: a
forged value naming someone's grant has no valid tag and revokes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .security import TokenHasher

REFRESH_TOKEN_PREFIX = "mob_rt_"
GRANT_ID_PREFIX = "mob_gr_"
# Generations are counted from 0 at the code exchange; ten digits last for ever.
_NAME = re.compile(r"^(?P<grant>[A-Za-z0-9_\-]{1,128})\.(?P<generation>0|[1-9][0-9]{0,9})\.(?P<secret>[A-Za-z0-9_\-]{16,128})\.(?P<tag>[A-Za-z0-9_\-]{22})$")


@dataclass(frozen=True)
class RefreshTokenName:
    """What a refresh token says about itself, once its tag is verified."""

    grant_id: str
    generation: int


def _tagged(grant_id: str, generation: int, secret: str) -> str:
    return f"refresh_token|{grant_id}|{generation}|{secret}"


def _grant_part(grant_id: str) -> str:
    return grant_id[len(GRANT_ID_PREFIX):] if grant_id.startswith(GRANT_ID_PREFIX) else grant_id


def refresh_token_value(hasher: TokenHasher, *, grant_id: str, generation: int, secret: str) -> str:
    """A new refresh token of ``grant_id`` at ``generation``; ``secret`` is fresh randomness."""
    grant = _grant_part(grant_id)
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,128}", grant) or not re.fullmatch(r"[A-Za-z0-9_\-]{16,128}", secret):
        raise ValueError("grant ids and secrets are URL-safe base64 text")
    return f"{REFRESH_TOKEN_PREFIX}{grant}.{generation}.{secret}.{hasher.mac(_tagged(grant_id, generation, secret))}"


def parse_refresh_token(hasher: TokenHasher, value: str) -> RefreshTokenName | None:
    """The grant and generation a refresh token names, if its tag is ours; None for anything else
    (a value of another form, an older token format, or a forgery)."""
    if not value.startswith(REFRESH_TOKEN_PREFIX):
        return None
    match = _NAME.fullmatch(value[len(REFRESH_TOKEN_PREFIX):])
    if match is None:
        return None
    grant_part, generation = match["grant"], int(match["generation"])
    # The service names grants mob_gr_…; the prefix is left out of the token to keep it short.
    for grant_id in (GRANT_ID_PREFIX + grant_part, grant_part):
        # Under any of the token hash keys: a token issued before a key rotation is still ours.
        if hasher.mac_matches(_tagged(grant_id, generation, match["secret"]), match["tag"]):
            return RefreshTokenName(grant_id=grant_id, generation=generation)
    return None
