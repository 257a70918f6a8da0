"""Moving an installation to another storage (copy-storage): every live client, pending
authorization, grant, code and token copied from one storage into another, as they are, so that
clients connected before keep working against the new one and nobody signs in again.

"Live" is what a purge at the time of the copy would keep (StorageAdministration.export_records):
grants revoked less than a day ago come along with their unexpired tokens, so that a late replay
of one of their tokens still meets "revoked". Rate-limit counters and upstream-refresh leases are
not copied; they start afresh.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass, field
from typing import Mapping

from ..ports import RECORD_KINDS, Clock, ImportResult, StorageAdministration

log = logging.getLogger(__name__)

# Rows read and written per transaction.
DEFAULT_BATCH_ROWS = 1000
# How often (in rows of one kind) the copy logs its progress.
PROGRESS_ROWS = 100_000


class SourceSchemaNotCurrent(Exception):
    """The source's schema lacks migrations: its records are not in the shape this release
    exports (or it is not this server's database at all)."""

    def __init__(self, missing: list[int]) -> None:
        super().__init__(f"the source's schema lacks versions {', '.join(map(str, missing))}")
        self.missing = missing


class TargetNotEmpty(Exception):
    """The target already holds records, and the copy was not told to go on anyway."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        held = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        super().__init__(f"the target already holds {held}")
        self.counts = dict(counts)


@dataclass(frozen=True)
class CopyReport:
    # By kind, in RECORD_KINDS order.
    results: dict[str, ImportResult] = field(default_factory=dict)
    # The target's schema versions applied before copying.
    migrated: list[int] = field(default_factory=list)

    @property
    def existing(self) -> int:
        return sum(result.existing for result in self.results.values())

    @property
    def unstorable(self) -> int:
        return sum(result.unstorable for result in self.results.values())


class StorageCopy:
    """``copy`` once per move; the source is only read (from one consistent snapshot), the
    target is migrated first and written a batch per transaction."""

    def __init__(
        self,
        *,
        source: StorageAdministration,
        target: StorageAdministration,
        clock: Clock,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        self._source = source
        self._target = target
        self._clock = clock
        self._batch_rows = batch_rows

    def copy(self, *, force: bool = False) -> CopyReport:
        """Copy every live record into the target, which must hold none unless ``force``: then
        a record whose key (client id, grant id, hash ...) the target already has is left as the
        target has it, which also lets an interrupted copy run again."""
        missing = self._source.pending_migrations()
        if missing:
            raise SourceSchemaNotCurrent(missing)
        migrated = self._target.migrate()
        if not force:
            counts = self._target.counts()
            held = {kind: counts[kind] for kind in RECORD_KINDS if counts.get(kind)}
            if held:
                raise TargetNotEmpty(held)
        results = {kind: ImportResult() for kind in RECORD_KINDS}
        with closing(self._source.export_records(self._clock.now(), batch_size=self._batch_rows)) as batches:
            for batch in batches:
                done, result = results[batch.kind], self._target.import_records(batch)
                results[batch.kind] = ImportResult(
                    done.added + result.added, done.existing + result.existing, done.unstorable + result.unstorable
                )
                # Progress now and then (a big installation has a million tokens).
                copied = results[batch.kind].added
                if copied // PROGRESS_ROWS > done.added // PROGRESS_ROWS:
                    log.info("copied %d %s so far", copied, batch.kind)
        return CopyReport(results=results, migrated=migrated)
