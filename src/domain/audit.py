"""Security events for the audit log (issue 11 §3): who registered, consented, signed in, lost a
grant and why.

An event names the client, the person by the upstream identity provider's stable subject
(``sub``/``oid``, never a name or an e-mail address) and the grant; it never carries a token, a
code, a secret, a PKCE verifier, a state, a nonce or an upstream token. The HTTP facts of the
moment (client address, request id) and the time are added by the adapter that writes the event.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Grant

# -- event names ----------------------------------------------------------------------------------

CLIENT_REGISTERED = "client_registered"
CLIENT_UPDATED = "client_updated"
CLIENT_DELETED = "client_deleted"
CLIENT_DISABLED = "client_disabled"
CLIENT_ENABLED = "client_enabled"
CONSENT_APPROVED = "consent_approved"
CONSENT_DENIED = "consent_denied"
UPSTREAM_SIGN_IN_SUCCEEDED = "upstream_sign_in_succeeded"
UPSTREAM_SIGN_IN_FAILED = "upstream_sign_in_failed"
UPSTREAM_SIGN_IN_DENIED_BY_POLICY = "upstream_sign_in_denied_by_policy"
GRANT_CREATED = "grant_created"
GRANT_REVOKED = "grant_revoked"
REFRESH_TOKEN_REUSE = "refresh_token_reuse"
CODE_REPLAY = "code_replay"
# Written by the HTTP adapter (a limit is an HTTP matter), listed here with the others.
RATE_LIMIT_HIT = "rate_limit_hit"

# -- why a grant was revoked (the ``reason`` of GRANT_REVOKED) ----------------------------------

# The client revoked its refresh token (RFC 7009 §2.1: the whole grant goes).
REVOKED_BY_CLIENT = "client_revocation"
# An operator (the administration CLI).
REVOKED_BY_OPERATOR = "operator"
# The person, on their connections page (/connections).
REVOKED_BY_USER = "user"
# A rotated refresh token was presented again (OAuth 2.1 §4.3.1).
REVOKED_FOR_REFRESH_TOKEN_REUSE = "refresh_token_reuse"
# An authorization code was redeemed twice (OAuth 2.1 §4.1.3).
REVOKED_FOR_CODE_REPLAY = "code_replay"
# The person no longer satisfies the access policy.
REVOKED_BY_POLICY = "policy"
# The upstream identity provider answered invalid_grant to a refresh: the upstream session ended.
REVOKED_UPSTREAM_INVALID_GRANT = "upstream_invalid_grant"
# The upstream access token expired and there is no upstream refresh token to renew it.
REVOKED_UPSTREAM_SESSION_EXPIRED = "upstream_session_expired"


@dataclass(frozen=True)
class AuditEvent:
    """One security event. Only identifiers and short machine-readable words: nothing secret."""

    event: str
    client_id: str | None = None
    # The upstream subject (sub/oid) the grant belongs to.
    subject: str | None = None
    grant_id: str | None = None
    # Why (a revocation reason, a policy's word).
    reason: str | None = None
    # The error code the upstream identity provider answered (OAuth error codes such as invalid_grant).
    upstream_error: str | None = None


class NoAuditTrail:
    """An audit trail that keeps nothing: the default where no one looks."""

    def record(self, event: AuditEvent) -> None:
        return None


# -- events about a grant -------------------------------------------------------------------------


def grant_event(name: str, grant: Grant, *, reason: str | None = None, upstream_error: str | None = None) -> AuditEvent:
    return AuditEvent(
        event=name,
        client_id=grant.client_id,
        subject=grant.subject,
        grant_id=grant.grant_id,
        reason=reason,
        upstream_error=upstream_error,
    )


def grant_revoked(grant: Grant, reason: str, *, upstream_error: str | None = None) -> AuditEvent:
    """GRANT_REVOKED; ``reason`` is one of the REVOKED_* words."""
    return grant_event(GRANT_REVOKED, grant, reason=reason, upstream_error=upstream_error)


def client_event(name: str, client_id: str, *, reason: str | None = None) -> AuditEvent:
    return AuditEvent(event=name, client_id=client_id, reason=reason)


def client_disabled(client_id: str) -> AuditEvent:
    """For the administration CLI's ``clients disable``."""
    return client_event(CLIENT_DISABLED, client_id)


def client_enabled(client_id: str) -> AuditEvent:
    """For the administration CLI's ``clients enable``."""
    return client_event(CLIENT_ENABLED, client_id)


def sign_in_denied_by_policy(client_id: str, subject: str, *, reason: str | None = None) -> AuditEvent:
    """For the access policy's check at sign-in; ``reason`` a short word (e.g. ``not_in_group``),
    never a claim value such as a name or an address."""
    return AuditEvent(event=UPSTREAM_SIGN_IN_DENIED_BY_POLICY, client_id=client_id, subject=subject, reason=reason)
