"""Who may connect: an access policy evaluated on the upstream identity's claims (OIDC Core 1.0
§5.1 standard claims and provider-specific ones such as Entra ID's ``groups`` and ``roles``).

The policy is a conjunction of claim requirements; each requirement names one claim and the
values it accepts (any one of them). A claim whose value is a list matches when the list
contains an accepted value; booleans compare as ``true``/``false`` and numbers as their decimal
text, so configuration written as text (``email_verified=true``) means what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class ClaimRequirement:
    """One claim that must hold one of ``accepted`` values."""

    claim: str
    accepted: frozenset[str]
    # Entra ID group object ids are GUIDs, compared without regard to case.
    case_insensitive: bool = False

    def __post_init__(self) -> None:
        if not self.claim:
            raise ValueError("a claim requirement needs a claim name")
        if not self.accepted:
            raise ValueError(f"the requirement on {self.claim} accepts no value")

    def _normal(self, value: str) -> str:
        return value.lower() if self.case_insensitive else value

    def satisfied_by(self, claims: Mapping[str, Any]) -> bool:
        accepted = {self._normal(value) for value in self.accepted}
        return any(self._normal(value) in accepted for value in claim_values(claims.get(self.claim)))


def claim_values(value: object) -> list[str]:
    """A claim's values as text: a list's scalar members, or the scalar itself; objects and
    absent claims have none."""
    members = value if isinstance(value, list) else [value]
    texts = []
    for member in members:
        if isinstance(member, bool):
            texts.append("true" if member else "false")
        elif isinstance(member, (str, int, float)):
            texts.append(str(member))
    return texts


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    # For the operator's log: which requirements failed (claim names only, never values).
    unmet: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessPolicy:
    """Every requirement must be satisfied; no requirement admits everyone who signs in."""

    requirements: tuple[ClaimRequirement, ...] = ()

    @classmethod
    def of(cls, requirements: Iterable[ClaimRequirement]) -> AccessPolicy:
        return cls(tuple(requirements))

    @property
    def restricts(self) -> bool:
        return bool(self.requirements)

    @property
    def claims(self) -> tuple[str, ...]:
        """The claim names the policy reads (what an identity adapter must provide)."""
        return tuple(dict.fromkeys(requirement.claim for requirement in self.requirements))

    def evaluate(self, claims: Mapping[str, Any]) -> AccessDecision:
        unmet = tuple(r.claim for r in self.requirements if not r.satisfied_by(claims))
        return AccessDecision(allowed=not unmet, unmet=unmet)


def parse_required_claims(text: str) -> AccessPolicy:
    """``claim=value,claim=value``: comma-separated pairs, all claims required, several values
    for one claim meaning any of them (``groups=a,groups=b,email_verified=true``).

    ValueError names the malformed pair."""
    accepted: dict[str, set[str]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        claim, sep, value = item.partition("=")
        claim, value = claim.strip(), value.strip()
        if not sep or not claim or not value:
            raise ValueError(f"expected claim=value pairs separated by commas, got {item!r}")
        accepted.setdefault(claim, set()).add(value)
    return AccessPolicy.of(ClaimRequirement(claim, frozenset(values)) for claim, values in accepted.items())
