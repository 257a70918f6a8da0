"""Deleting what expired, so that nothing a stranger can create grows without bound: expired
pending authorizations, codes and tokens, dead grants, and dynamically registered clients that
were never used or have been idle too long (RFC 7591 §3 leaves their lifetime to the server)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Mapping

from ..model import DYNAMIC_CLIENT_KIND
from ..policy import ServerPolicy
from ..ports import ClientRepository, Clock, StorageAdministration, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeReport:
    # Rows deleted, by kind (table name).
    expired_rows: Mapping[str, int]
    deleted_clients: int

    @property
    def expired_total(self) -> int:
        return sum(self.expired_rows.values())


class Housekeeping:
    """``purge`` on demand (the CLI); ``tick`` from the services that create rows, which purges
    at most every ``policy.purge_interval`` seconds per process."""

    def __init__(
        self, *, clients: ClientRepository, storage: StorageAdministration, clock: Clock, policy: ServerPolicy
    ) -> None:
        self._clients = clients
        self._storage = storage
        self._clock = clock
        self._policy = policy
        self._next_purge = 0
        self._lock = threading.Lock()

    def purge(self) -> PurgeReport:
        """Delete what expired and the unused clients; the rows that went, counted by kind."""
        now = self._clock.now()
        # Clients first: deleting one deletes what was issued to it.
        deleted = self._clients.delete_unused(
            DYNAMIC_CLIENT_KIND,
            never_used_before=now - self._policy.unused_client_ttl,
            idle_before=now - self._policy.idle_client_ttl,
            now=now,
        )
        return PurgeReport(expired_rows=self._storage.purge_expired_by_kind(now), deleted_clients=deleted)

    def tick(self) -> None:
        now = self._clock.now()
        if now < self._next_purge or not self._lock.acquire(blocking=False):
            return
        try:
            if now < self._next_purge:
                return
            self._next_purge = now + self._policy.purge_interval
            try:
                report = self.purge()
            except StorageError as exc:
                # The request that happened to run the purge must not fail for it; the next
                # interval tries again.
                log.warning("purge failed: %s", exc)
                return
            if report.expired_total or report.deleted_clients:
                log.info("purged %d expired rows and %d unused clients", report.expired_total, report.deleted_clients)
        finally:
            self._lock.release()
