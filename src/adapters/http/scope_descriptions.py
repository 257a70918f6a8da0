"""Scopes (RFC 6749 §3.3) in plain words for the consent page: what each lets the application do
on the person's behalf. The raw scope name is shown beside it in small print.

The descriptions are of the scopes this server offers (the toolsets' ``required_scopes``, e.g.
``User.Read`` for ``whoami`` and ``Mail.Read`` for the mail tools, plus the OpenID Connect scopes an
operator may add with SCOPES). Scope names are case-sensitive (RFC 6749 §3.3) and compared exactly;
a scope without a description here is shown as such, never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

SCOPE_DESCRIPTIONS: Mapping[str, str] = {
    # Microsoft Graph delegated permissions (the names Entra ID grants).
    "User.Read": "Read your basic profile (name, username and email address)",
    "Mail.Read": "Read your mail",
    "Mail.ReadWrite": "Read, change and delete your mail",
    "Mail.Send": "Send mail as you",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadWrite": "Read and change your calendars",
    "Contacts.Read": "Read your contacts",
    "Files.Read": "Read your files",
    # OpenID Connect Core §5.4 and §11.
    "openid": "Confirm who you are when you sign in",
    "profile": "See your name and username",
    "email": "See your email address",
    "offline_access": "Stay connected (refresh access without asking again)",
}
# Said of a scope this page has no words for: what it allows is not known here.
UNDESCRIBED_SCOPE = "A permission without a description here: ask the administrators what it allows"


@dataclass(frozen=True)
class ScopeDescription:
    scope: str
    description: str
    # False when the description is the generic one (the scope is not described here).
    described: bool


def describe_scope(scope: str) -> ScopeDescription:
    description = SCOPE_DESCRIPTIONS.get(scope)
    if description is None:
        return ScopeDescription(scope=scope, description=UNDESCRIBED_SCOPE, described=False)
    return ScopeDescription(scope=scope, description=description, described=True)


def describe_scopes(scopes: Iterable[str]) -> tuple[ScopeDescription, ...]:
    return tuple(describe_scope(scope) for scope in scopes)
