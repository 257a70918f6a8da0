"""What an operator does to clients and grants from the command line (issue 11 §2): list, show,
disable, enable and delete clients; list who is connected and revoke grants (offboarding).

Disabling a client (RFC 6749 §2.3 leaves it to the server to decide whom it serves) blocks it
without destroying anything: its live access tokens are revoked at once (the bearer lookup
stays one probe of the token row), and ClientDirectory refuses it at /authorize and /token, so
it can neither start an authorization nor refresh. Its grants and refresh tokens are kept:
once enabled again the client refreshes as before and nobody signs in again. Deleting a client
removes it with everything issued to it; revoking a grant revokes it and its tokens at once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..audit import (
    CLIENT_DELETED,
    REVOKED_BY_OPERATOR,
    NoAuditTrail,
    client_disabled,
    client_enabled,
    client_event,
    grant_revoked,
)
from ..model import Client
from ..ports import AuditTrail, ClientRepository, Clock, GrantStore, GrantUsage, UnitOfWork


class UnknownRecord(Exception):
    """No client or grant with the id the operator named; the message says which."""


@dataclass(frozen=True)
class ClientSummary:
    client: Client
    # Grants of the client that are not revoked.
    live_grants: int


class AdministrationService:
    def __init__(
        self,
        *,
        clients: ClientRepository,
        grants: GrantStore,
        unit_of_work: UnitOfWork,
        clock: Clock,
        audit: AuditTrail | None = None,
    ) -> None:
        self._clients = clients
        self._grants = grants
        self._unit_of_work = unit_of_work
        self._clock = clock
        self._audit = audit or NoAuditTrail()

    # -- clients ----------------------------------------------------------------------------

    def list_clients(self) -> list[ClientSummary]:
        live = Counter(usage.grant.client_id for usage in self._grants.grant_usage())
        return [ClientSummary(client, live[client.client_id]) for client in self._clients.list()]

    def show_client(self, client_id: str) -> ClientSummary:
        client = self._client(client_id)
        return ClientSummary(client, len(self._grants.grant_usage(client_id=client_id)))

    def disable_client(self, client_id: str) -> Client:
        if not self._clients.disable(client_id, self._clock.now()):
            raise UnknownRecord(f"no client {client_id}")
        self._audit.record(client_disabled(client_id))
        return self._client(client_id)

    def enable_client(self, client_id: str) -> Client:
        if not self._clients.enable(client_id):
            raise UnknownRecord(f"no client {client_id}")
        self._audit.record(client_enabled(client_id))
        return self._client(client_id)

    def delete_client(self, client_id: str) -> ClientSummary:
        """Delete the client and (by cascade) every grant, code and token issued to it; return
        what it was, with the number of live grants that went with it."""
        with self._unit_of_work.atomic():
            summary = self.show_client(client_id)
            self._clients.delete(client_id)
        self._audit.record(client_event(CLIENT_DELETED, client_id, reason=REVOKED_BY_OPERATOR))
        return summary

    # -- grants -----------------------------------------------------------------------------

    def list_grants(self, *, subject: str | None = None, client_id: str | None = None) -> list[GrantUsage]:
        if client_id is not None:
            self._client(client_id)
        return self._grants.grant_usage(subject=subject, client_id=client_id)

    def revoke_grants(
        self, *, grant_id: str | None = None, subject: str | None = None, client_id: str | None = None
    ) -> list[str]:
        """Revoke one grant, every live grant of a person (offboarding), or every live grant of
        a client, with their tokens, in one transaction; return the ids of the grants revoked
        now (none when a named grant was revoked before)."""
        if [grant_id, subject, client_id].count(None) != 2:
            raise ValueError("name exactly one of grant_id, subject, client_id")
        now = self._clock.now()
        with self._unit_of_work.atomic():
            if grant_id is not None:
                grant = self._grants.get_grant(grant_id)
                if grant is None:
                    raise UnknownRecord(f"no grant {grant_id}")
                doomed = [] if grant.is_revoked else [grant]
            else:
                doomed = [usage.grant for usage in self.list_grants(subject=subject, client_id=client_id)]
            for grant in doomed:
                self._grants.revoke_grant(grant.grant_id, now)
        # After the transaction: only what was revoked is recorded.
        for grant in doomed:
            self._audit.record(grant_revoked(grant, REVOKED_BY_OPERATOR))
        return [grant.grant_id for grant in doomed]

    def _client(self, client_id: str) -> Client:
        client = self._clients.get(client_id)
        if client is None:
            raise UnknownRecord(f"no client {client_id}")
        return client
