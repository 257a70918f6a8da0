"""The storage contract for copying an installation (StorageAdministration.export_records and
import_records, used by copy-storage): what one backend exports, another imports as it was,
exactly the records a purge at that time would keep. Run from each backend into itself and, for
the SQL backends, into the other (the encoding they share, adapters/storage/records.py)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase
from mcp_oauth_bridge.domain.ports import RECORD_KINDS, ImportResult, RecordBatch
from tests.integration.postgres_server import fresh_database

from .samples import (
    DAY,
    NOW,
    CIMD_URL,
    h,
    make_access_token,
    make_client,
    make_code,
    make_document,
    make_grant,
    make_pending,
    make_refresh_token,
    make_upstream,
    make_upstream_tokens,
)
from .stores import Stores, memory_stores, postgres_stores, sqlite_stores

# Source -> target. The fakes' records are their own, so they go only into another fake.
PAIRS = ("memory->memory", "sqlite->sqlite", "sqlite->postgresql", "postgresql->sqlite", "postgresql->postgresql")
# When the copy runs: what expires at or before it is not copied.
COPIED_AT = NOW + 10


def _open(stack: ExitStack, request: pytest.FixtureRequest, backend: str, name: str, box: SecretBox) -> Stores:
    if backend == "memory":
        return memory_stores()
    if backend == "sqlite":
        sqlite = SqliteDatabase(str(Path(request.getfixturevalue("tmp_path")) / name / "bridge.db"), box)
        sqlite.migrate()
        stack.callback(sqlite.close)
        return sqlite_stores(sqlite)
    url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_server")))
    postgres = PostgresDatabase(url, box)
    postgres.migrate()
    stack.callback(postgres.close)
    return postgres_stores(postgres)


@pytest.fixture(params=PAIRS)
def source_and_target(request: pytest.FixtureRequest) -> Iterator[tuple[Stores, Stores]]:
    source_backend, target_backend = request.param.split("->")
    # Both under the same keys, as copy-storage requires.
    box = SecretBox([generate_key()])
    with ExitStack() as stack:
        yield _open(stack, request, source_backend, "source", box), _open(stack, request, target_backend, "target", box)


def fill(storage: Stores) -> None:
    """Records in every state at COPIED_AT: live, expired, revoked, rotated, long revoked, unused."""
    storage.clients.add(make_client("client-1", registration_token_hash=h("registration-token-1")))
    storage.clients.add(make_client("client-2", secret_hash=None, token_endpoint_auth_method="none"))
    # Disabled by an operator (`clients disable`): it stays disabled in the target.
    storage.clients.add(make_client("client-disabled", disabled_at=NOW))
    # A cached client ID metadata document (of no client yet): a cache, never copied.
    storage.documents.put_document(make_document(stale_until=NOW + DAY))
    storage.authorizations.add_pending(make_pending("pending-live", expires_at=NOW + 600))
    storage.authorizations.attach_upstream("pending-live", make_upstream(h("state-live")))
    storage.authorizations.add_pending(make_pending("pending-old", expires_at=COPIED_AT))

    storage.grants.add_grant(make_grant("grant-1"), make_upstream_tokens())
    storage.authorizations.add_code(make_code(h("code-redeemed"), expires_at=NOW + 60))
    storage.authorizations.redeem_code(h("code-redeemed"), NOW + 1)
    storage.authorizations.add_code(make_code(h("code-old"), expires_at=COPIED_AT))
    storage.access_tokens.add_access_token(make_access_token(h("at-live")))
    storage.access_tokens.add_access_token(make_access_token(h("at-revoked")))
    storage.access_tokens.revoke_access_token(h("at-revoked"), NOW + 2)
    storage.access_tokens.add_access_token(make_access_token(h("at-old"), expires_at=COPIED_AT))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-gen0")))
    storage.refresh_tokens.rotate_refresh_token(h("rt-gen0"), NOW + 3)
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-gen1"), generation=1, issued_at=NOW + 3))

    # Revoked an instant ago: kept with its tokens, so that a replay still meets "revoked".
    storage.grants.add_grant(make_grant("grant-revoked", client_id="client-2"), None)
    storage.access_tokens.add_access_token(make_access_token(h("at-of-revoked"), grant_id="grant-revoked"))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-of-revoked"), grant_id="grant-revoked"))
    storage.grants.revoke_grant("grant-revoked", NOW + 5)
    # Revoked two days ago: purge takes it and its unexpired token.
    storage.grants.add_grant(make_grant("grant-long-revoked", created_at=NOW - 3 * DAY), make_upstream_tokens())
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-of-long-revoked"), grant_id="grant-long-revoked"))
    storage.grants.revoke_grant("grant-long-revoked", NOW - 2 * DAY)
    # Older than the grant retention with nothing unexpired left: purge takes it.
    storage.grants.add_grant(make_grant("grant-unused", created_at=NOW - 40 * DAY), make_upstream_tokens())
    storage.access_tokens.add_access_token(make_access_token(h("at-of-unused"), grant_id="grant-unused", expires_at=NOW))
    # New, with nothing issued yet: kept.
    storage.grants.add_grant(make_grant("grant-new", created_at=NOW), None)


KEPT = {
    "clients": ["client-1", "client-2"],
    "pending": ["pending-live"],
    "grants": ["grant-1", "grant-revoked", "grant-new"],
    "codes": [h("code-redeemed")],
    "access_tokens": [h("at-live"), h("at-revoked"), h("at-of-revoked")],
    "refresh_tokens": [h("rt-gen0"), h("rt-gen1"), h("rt-of-revoked")],
}
DROPPED = {
    "clients": [],
    "pending": ["pending-old"],
    "grants": ["grant-long-revoked", "grant-unused"],
    "codes": [h("code-old")],
    "access_tokens": [h("at-old"), h("at-of-unused")],
    "refresh_tokens": [h("rt-of-long-revoked")],
}


def records(storage: Stores, kind: str, key: str) -> Any:
    """Everything the stores answer about one record."""
    if kind == "clients":
        return storage.clients.get(key)
    if kind == "pending":
        return storage.authorizations.get_pending(key)
    if kind == "grants":
        return storage.grants.get_grant(key), storage.upstream_tokens.get_upstream_tokens(key)
    if kind == "codes":
        return storage.authorizations.get_code(key)
    if kind == "access_tokens":
        return storage.access_tokens.get_access_token(key)
    return storage.refresh_tokens.get_refresh_token(key)


def copy(source: Stores, target: Stores, *, batch_size: int = 1000) -> dict[str, ImportResult]:
    results: dict[str, ImportResult] = {}
    for batch in source.admin.export_records(COPIED_AT, batch_size=batch_size):
        result, before = target.admin.import_records(batch), results.get(batch.kind, ImportResult())
        results[batch.kind] = ImportResult(*(a + b for a, b in zip(before, result)))
    return results


def test_the_target_holds_what_a_purge_of_the_source_would_keep(source_and_target: tuple[Stores, Stores]) -> None:
    source, target = source_and_target
    fill(source)
    batches: list[RecordBatch] = list(source.admin.export_records(COPIED_AT, batch_size=2))
    for batch in batches:
        target.admin.import_records(batch)

    # In batches of at most batch_size, parents before children.
    assert all(0 < len(batch.rows) <= 2 for batch in batches)
    order = [RECORD_KINDS.index(batch.kind) for batch in batches]
    assert order == sorted(order)
    for kind, keys in KEPT.items():
        for key in keys:
            copied = records(target, kind, key)
            assert copied == records(source, kind, key), (kind, key)
            assert copied is not None and copied != (None, None)
    for kind, keys in DROPPED.items():
        for key in keys:
            assert records(target, kind, key) in (None, (None, None)), (kind, key)
    # RFC 7592: the copied client can still be managed with its registration access token.
    copied_client = target.clients.get("client-1")
    assert copied_client is not None and copied_client.registration_token_hash == h("registration-token-1")
    disabled = target.clients.get("client-disabled")
    assert disabled is not None and disabled.disabled_at == NOW
    # The document cache stays behind; the target fetches documents again.
    assert target.documents.get_document(CIMD_URL) is None
    assert target.admin.counts()["client_metadata_documents"] == 0
    source.admin.purge_expired(COPIED_AT)
    kept = {kind: count for kind, count in source.admin.counts().items() if kind in RECORD_KINDS}
    assert {kind: count for kind, count in target.admin.counts().items() if kind in RECORD_KINDS} == kept


def test_copied_records_keep_working_in_the_target(source_and_target: tuple[Stores, Stores]) -> None:
    source, target = source_and_target
    fill(source)
    copy(source, target)

    # A redeemed code stays redeemed, a rotated refresh token rotated; the upstream state of a
    # pending authorization, the lease of the upstream tokens and revocation work as before.
    assert not target.authorizations.redeem_code(h("code-redeemed"), COPIED_AT)
    assert not target.refresh_tokens.rotate_refresh_token(h("rt-gen0"), COPIED_AT)
    assert target.refresh_tokens.rotate_refresh_token(h("rt-gen1"), COPIED_AT)
    consumed = target.authorizations.consume_upstream(h("state-live"), COPIED_AT)
    assert consumed is not None and consumed.pending_id == "pending-live"
    assert target.upstream_tokens.acquire_upstream_refresh_lock("grant-1", "worker-1", COPIED_AT, COPIED_AT + 30)
    target.grants.revoke_grant("grant-1", COPIED_AT)
    found = target.access_tokens.get_access_token(h("at-live"))
    assert found is not None and found[0].revoked_at == COPIED_AT and found[1].revoked_at == COPIED_AT


def test_records_whose_key_the_target_has_are_left_as_they_are(source_and_target: tuple[Stores, Stores]) -> None:
    source, target = source_and_target
    fill(source)
    first = copy(source, target)
    target.access_tokens.revoke_access_token(h("at-live"), COPIED_AT)

    again = copy(source, target)

    assert {kind: result.added for kind, result in first.items()} == {
        "clients": 3, "pending_authorizations": 1, "grants": 3, "authorization_codes": 1, "access_tokens": 3, "refresh_tokens": 3,
    }
    assert again == {kind: ImportResult(existing=result.added) for kind, result in first.items()}
    found = target.access_tokens.get_access_token(h("at-live"))
    assert found is not None and found[0].revoked_at == COPIED_AT
