"""PostgreSQL behind the MetadataDocumentStore port: the cache of client ID metadata documents
(draft-ietf-oauth-client-id-metadata-document §5.2), shared by every worker of every instance
(table ``client_metadata_documents``, migration 2).

Apart from the clients: no foreign key ties a document to a client row, so an expired or purged
document never deletes a client or its grants. ``PostgresAdministration.purge_expired`` deletes
documents once their ``stale_until`` has passed."""

from __future__ import annotations

from ....domain.ports import CachedMetadataDocument
from .. import records
from .database import PostgresDatabase

# INSERT ... ON CONFLICT DO UPDATE: two instances caching the same document at once never fail
# on the primary key; the last one's copy stays.
_UPSERT_DOCUMENT = f"""
    INSERT INTO client_metadata_documents ({records.DOCUMENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (client_id) DO UPDATE SET
        document = excluded.document, fetched_at = excluded.fetched_at,
        fresh_until = excluded.fresh_until, stale_until = excluded.stale_until
"""
_SELECT_DOCUMENT = f"SELECT {records.DOCUMENT_COLUMNS} FROM client_metadata_documents WHERE client_id = %s"


class PostgresMetadataDocumentStore:
    """Cached client ID metadata documents by client id (the document's URL). Errors come as the
    port's StorageError from the database object (``PostgresDatabase.storage_error``)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def get_document(self, client_id: str) -> CachedMetadataDocument | None:
        row = self._db.fetchone(_SELECT_DOCUMENT, (client_id,))
        return None if row is None else records.document_from_row(row)

    def put_document(self, document: CachedMetadataDocument) -> None:
        self._db.execute(_UPSERT_DOCUMENT, records.document_row(document))
