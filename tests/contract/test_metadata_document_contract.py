"""The storage contract of the client ID metadata document cache (MetadataDocumentStore,
draft-ietf-oauth-client-id-metadata-document §5.2) on every backend: documents round-trip,
replace, and go at ``purge_expired`` once past ``stale_until``, apart from the clients: a purged
or replaced document never touches a client or its grants, and a document needs no client row."""

from __future__ import annotations

from mcp_oauth_bridge.domain.model import METADATA_DOCUMENT_CLIENT_KIND

from .samples import (
    CIMD_URL,
    DAY,
    HOUR,
    NOW,
    h,
    make_access_token,
    make_client,
    make_document,
    make_grant,
    make_refresh_token,
    make_upstream_tokens,
)
from .stores import Stores

OTHER_URL = "https://other.example/client.json"


def given_metadata_document_client(storage: Stores, client_id: str = CIMD_URL) -> None:
    """A client identified by its document's URL, with a grant and live tokens."""
    storage.clients.add(
        make_client(client_id, kind=METADATA_DOCUMENT_CLIENT_KIND, secret_hash=None, token_endpoint_auth_method="none")
    )
    storage.grants.add_grant(make_grant("grant-1", client_id=client_id), make_upstream_tokens())
    storage.access_tokens.add_access_token(make_access_token(h("at-1"), client_id=client_id, expires_at=NOW + 30 * DAY))
    storage.refresh_tokens.add_refresh_token(make_refresh_token(h("rt-1"), client_id=client_id))


def test_a_document_round_trips_with_its_json_and_times(storage: Stores) -> None:
    document = make_document()
    storage.documents.put_document(document)

    stored = storage.documents.get_document(CIMD_URL)

    assert stored == document
    assert stored is not None
    assert dict(stored.document) == dict(document.document)
    assert (stored.fetched_at, stored.fresh_until, stored.stale_until) == (NOW, NOW + HOUR, 2**31 + 7 * DAY)


def test_the_cache_keeps_the_document_as_it_was_put(storage: Stores) -> None:
    # The SQL backends store the JSON text: changing the caller's mapping afterwards changes
    # nothing cached.
    document = make_document()
    members = dict(document.document)
    storage.documents.put_document(document)
    document.document["client_name"] = "Changed after caching"  # type: ignore[index]

    stored = storage.documents.get_document(CIMD_URL)

    assert stored is not None and dict(stored.document) == members


def test_an_unknown_client_id_has_no_document(storage: Stores) -> None:
    storage.documents.put_document(make_document())
    assert storage.documents.get_document(OTHER_URL) is None
    # Compared as exact strings (the draft, §3): no normalisation of case or trailing slash.
    assert storage.documents.get_document(CIMD_URL.upper()) is None
    assert storage.documents.get_document(CIMD_URL + "/") is None


def test_putting_a_document_again_replaces_it_whole(storage: Stores) -> None:
    storage.documents.put_document(make_document())
    storage.documents.put_document(make_document(OTHER_URL))
    newer = make_document(
        document={"client_id": CIMD_URL, "client_name": "Renamed", "redirect_uris": ["https://app.example/new"]},
        fetched_at=NOW + HOUR,
        fresh_until=NOW + 2 * HOUR,
        stale_until=NOW + 7 * DAY,
    )

    storage.documents.put_document(newer)

    assert storage.documents.get_document(CIMD_URL) == newer
    # Nothing of the older document is left (no merge of its members).
    stored = storage.documents.get_document(CIMD_URL)
    assert stored is not None and "nested" not in stored.document
    assert storage.documents.get_document(OTHER_URL) == make_document(OTHER_URL)


def test_a_document_is_cached_before_its_client_exists_and_outlives_its_deletion(storage: Stores) -> None:
    # No foreign key: the cache is kept apart from the clients.
    storage.documents.put_document(make_document())
    assert storage.clients.get(CIMD_URL) is None
    assert storage.documents.get_document(CIMD_URL) == make_document()

    given_metadata_document_client(storage)
    assert storage.clients.delete(CIMD_URL)
    assert storage.documents.get_document(CIMD_URL) == make_document()


def test_replacing_a_document_keeps_its_client_and_grants(storage: Stores) -> None:
    given_metadata_document_client(storage)
    storage.documents.put_document(make_document())
    storage.documents.put_document(make_document(fetched_at=NOW + 1, fresh_until=NOW + 2, stale_until=NOW + 3))

    assert storage.clients.get(CIMD_URL) is not None
    assert storage.grants.get_grant("grant-1") is not None
    assert storage.access_tokens.get_access_token(h("at-1")) is not None


def test_purge_removes_documents_past_stale_until_and_never_their_clients_or_grants(storage: Stores) -> None:
    given_metadata_document_client(storage)
    cut = NOW + DAY
    # Fresh and stale times are the domain's business; only stale_until decides the purge.
    storage.documents.put_document(make_document(fresh_until=cut - HOUR, stale_until=cut))
    storage.documents.put_document(make_document(OTHER_URL, fresh_until=cut - 2 * HOUR, stale_until=cut - 1))
    still_stale = "https://stale.example/client.json"
    storage.documents.put_document(make_document(still_stale, fresh_until=cut - HOUR, stale_until=cut + 1))
    fresh = "https://fresh.example/client.json"
    storage.documents.put_document(make_document(fresh, fresh_until=cut + HOUR, stale_until=cut + DAY))

    # Counted in the rows purged: the two documents at or past stale_until, nothing else.
    assert storage.admin.purge_expired(cut) == 2

    assert storage.documents.get_document(CIMD_URL) is None
    assert storage.documents.get_document(OTHER_URL) is None
    assert storage.documents.get_document(still_stale) == make_document(
        still_stale, fresh_until=cut - HOUR, stale_until=cut + 1
    )
    assert storage.documents.get_document(fresh) is not None
    # The client whose document went is still there with its grant and tokens.
    client = storage.clients.get(CIMD_URL)
    assert client is not None and client.kind == METADATA_DOCUMENT_CLIENT_KIND
    assert storage.grants.get_grant("grant-1") is not None
    assert storage.upstream_tokens.get_upstream_tokens("grant-1") == make_upstream_tokens()
    assert storage.access_tokens.get_access_token(h("at-1")) is not None
    assert storage.refresh_tokens.get_refresh_token(h("rt-1")) is not None
    assert storage.admin.purge_expired(cut) == 0


def test_counts_report_cached_documents(storage: Stores) -> None:
    storage.documents.put_document(make_document())
    storage.documents.put_document(make_document(OTHER_URL))
    storage.documents.put_document(make_document(OTHER_URL))

    counts = storage.admin.counts()

    assert counts["client_metadata_documents"] == 2
    assert counts["clients"] == 0
