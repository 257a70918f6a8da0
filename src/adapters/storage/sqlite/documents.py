"""SQLite behind the MetadataDocumentStore port: the cache of client ID metadata documents
(draft-ietf-oauth-client-id-metadata-document §5.2), shared by every worker that opens the same
file (table ``client_metadata_documents``, migration 6).

Apart from the clients: no foreign key ties a document to a client row, so an expired or purged
document never deletes a client or its grants. ``SqliteAdministration.purge_expired`` deletes
documents once their ``stale_until`` has passed."""

from __future__ import annotations

from ....domain.ports import CachedMetadataDocument
from .. import records
from .database import SqliteDatabase, storage_errors

_UPSERT_DOCUMENT = f"""
    INSERT INTO client_metadata_documents ({records.DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (client_id) DO UPDATE SET
        document = excluded.document, fetched_at = excluded.fetched_at,
        fresh_until = excluded.fresh_until, stale_until = excluded.stale_until
"""
_SELECT_DOCUMENT = f"SELECT {records.DOCUMENT_COLUMNS} FROM client_metadata_documents WHERE client_id = ?"


class SqliteMetadataDocumentStore:
    """Cached client ID metadata documents by client id (the document's URL)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def get_document(self, client_id: str) -> CachedMetadataDocument | None:
        row = self._db.connection().execute(_SELECT_DOCUMENT, (client_id,)).fetchone()
        return None if row is None else records.document_from_row(row)

    @storage_errors
    def put_document(self, document: CachedMetadataDocument) -> None:
        # One statement: the document of a client id is replaced whole, never half-written.
        self._db.connection().execute(_UPSERT_DOCUMENT, records.document_row(document))
