"""Moving an installation to another storage (StorageCopy, behind `copy-storage`): into an empty
target only unless forced, from a source whose schema is current, what a purge would keep."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.ports import RECORD_KINDS, ImportResult
from mcp_oauth_bridge.domain.services.storage_copy import SourceSchemaNotCurrent, StorageCopy, TargetNotEmpty
from tests.fakes import InMemoryStorage

from .conftest import World


class OldSchemaStorage(InMemoryStorage):
    """A storage whose schema lacks the last two migrations."""

    def pending_migrations(self) -> list[int]:
        return [4, 5]


class NewDatabase(InMemoryStorage):
    """A storage with no schema yet: migrating creates it (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[int] = []

    def migrate(self) -> list[int]:
        applied, self.versions = [1] if not self.versions else [], [1]
        return applied


def added(results: dict[str, ImportResult]) -> dict[str, int]:
    return {kind: result.added for kind, result in results.items()}


def test_a_copy_into_an_empty_target_migrates_it_and_counts_each_kind(world: World) -> None:
    registered = world.register()
    world.login(registered)
    world.clock.advance(2 * 3600)  # the code and the access token have expired, the refresh token not
    target = NewDatabase()

    report = StorageCopy(source=world.storage, target=target, clock=world.clock, batch_rows=1).copy()

    assert report.migrated == [1]
    assert list(report.results) == list(RECORD_KINDS)
    assert added(report.results) == {
        "clients": 1, "pending_authorizations": 0, "grants": 1, "authorization_codes": 0, "access_tokens": 0, "refresh_tokens": 1,
    }
    assert target.refresh_tokens == world.storage.refresh_tokens
    assert target.upstream_tokens == world.storage.upstream_tokens


def test_a_target_that_holds_records_is_refused_and_left_alone(world: World) -> None:
    world.login(world.register())
    target = InMemoryStorage()
    StorageCopy(source=world.storage, target=target, clock=world.clock).copy()
    world.login(world.register())  # on the old installation, after the copy

    with pytest.raises(TargetNotEmpty) as refused:
        StorageCopy(source=world.storage, target=target, clock=world.clock).copy()

    assert refused.value.counts == {
        "clients": 1, "pending_authorizations": 1, "grants": 1, "authorization_codes": 1, "access_tokens": 1, "refresh_tokens": 1,
    }
    assert len(target.clients) == 1


def test_forced_copy_adds_what_the_target_lacks_and_leaves_the_rest(world: World) -> None:
    world.login(world.register())
    target = InMemoryStorage()
    StorageCopy(source=world.storage, target=target, clock=world.clock).copy()
    world.login(world.register())

    report = StorageCopy(source=world.storage, target=target, clock=world.clock).copy(force=True)

    assert report.results["clients"] == ImportResult(added=1, existing=1)
    assert report.results["access_tokens"] == ImportResult(added=1, existing=1)
    assert report.existing == 6 and report.unstorable == 0
    assert target.access_tokens == world.storage.access_tokens


def test_a_source_whose_schema_is_behind_is_refused_before_the_target_is_touched(world: World) -> None:
    target = NewDatabase()

    with pytest.raises(SourceSchemaNotCurrent) as refused:
        StorageCopy(source=OldSchemaStorage(), target=target, clock=world.clock).copy()

    assert refused.value.missing == [4, 5]
    assert target.versions == []
