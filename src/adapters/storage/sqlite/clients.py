"""SQLite behind the ClientRepository port: registered (RFC 7591) clients."""

from __future__ import annotations

from ....domain.model import Client
from ....domain.ports import RehashedColumn
from .. import records
from .database import SqliteDatabase, storage_errors


_UPSERT_CLIENT = f"""
    INSERT INTO clients ({records.CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (client_id) DO UPDATE SET
        secret_hash = excluded.secret_hash, metadata = excluded.metadata, kind = excluded.kind,
        issued_at = excluded.issued_at, last_used_at = excluded.last_used_at,
        registration_token_hash = excluded.registration_token_hash
"""
# disabled_at is left out of the upsert on purpose: it is written only by disable and enable, so
# that a client rewritten meanwhile (RFC 7592 update, a new metadata document) stays as it was.
_DISABLE_CLIENT = "UPDATE clients SET disabled_at = coalesce(disabled_at, ?) WHERE client_id = ?"
# With it, the client's live access tokens are revoked, so that they stop working at once while
# the bearer lookup stays one probe of the token row. Its grants and refresh tokens are kept: the
# token endpoint refuses a disabled client, and once enabled again it refreshes as before.
_REVOKE_CLIENT_ACCESS_TOKENS = """
    UPDATE access_tokens SET revoked_at = ?
    WHERE grant_id IN (SELECT grant_id FROM grants WHERE client_id = ?) AND revoked_at IS NULL AND expires_at > ?
"""
_CLIENT_DISABLED = "SELECT disabled_at IS NOT NULL FROM clients WHERE client_id = ?"
_ENABLE_CLIENT = "UPDATE clients SET disabled_at = NULL WHERE client_id = ?"
_SELECT_CLIENT = f"SELECT {records.CLIENT_COLUMNS} FROM clients WHERE client_id = ?"
_SELECT_CLIENTS = f"SELECT {records.CLIENT_COLUMNS} FROM clients ORDER BY issued_at, client_id"
_DELETE_CLIENT = "DELETE FROM clients WHERE client_id = ?"
_TOUCH_CLIENT = "UPDATE clients SET last_used_at = ? WHERE client_id = ?"
# A hash made again under the current token hash key, only where the old one is still stored.
_REHASH = {
    column: f"UPDATE clients SET {column} = ? WHERE client_id = ? AND {column} = ?"
    for column in ("secret_hash", "registration_token_hash")
}
# ON DELETE CASCADE takes the clients' pending authorizations, grants and tokens with them.
_DELETE_UNUSED_CLIENTS = """
    DELETE FROM clients WHERE kind = :kind AND (
        (last_used_at IS NULL AND issued_at <= :never_used_before)
        OR (coalesce(last_used_at, issued_at) <= :idle_before AND NOT EXISTS (
            SELECT 1 FROM grants g WHERE g.client_id = clients.client_id AND g.revoked_at IS NULL AND (
                EXISTS (SELECT 1 FROM refresh_tokens r
                        WHERE r.grant_id = g.grant_id AND r.revoked_at IS NULL AND r.expires_at > :now)
                OR EXISTS (SELECT 1 FROM access_tokens a
                           WHERE a.grant_id = g.grant_id AND a.revoked_at IS NULL AND a.expires_at > :now))))
    )
"""


class SqliteClientRepository:
    """Registered and CIMD clients (RFC 7591); deleting one deletes its grants and tokens."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._decoded = records.ClientDecoder()

    @storage_errors
    def add(self, client: Client) -> None:
        # An upsert, not INSERT OR REPLACE: REPLACE deletes the row first, cascading to grants.
        self._db.connection().execute(_UPSERT_CLIENT, records.client_row(client))

    @storage_errors
    def get(self, client_id: str) -> Client | None:
        row = self._db.connection().execute(_SELECT_CLIENT, (client_id,)).fetchone()
        return None if row is None else self._decoded.decode(row)

    @storage_errors
    def delete(self, client_id: str) -> bool:
        return self._db.connection().execute(_DELETE_CLIENT, (client_id,)).rowcount > 0

    @storage_errors
    def disable(self, client_id: str, now: int) -> bool:
        connection = self._db.connection()
        with self._db.atomic():
            if connection.execute(_DISABLE_CLIENT, (now, client_id)).rowcount == 0:
                return False
            connection.execute(_REVOKE_CLIENT_ACCESS_TOKENS, (now, client_id, now))
        return True

    @storage_errors
    def enable(self, client_id: str) -> bool:
        return self._db.connection().execute(_ENABLE_CLIENT, (client_id,)).rowcount > 0

    @storage_errors
    def is_disabled(self, client_id: str) -> bool:
        # Inside the token endpoint's BEGIN IMMEDIATE transaction: writers are serialised, so a
        # disable is either committed (and seen) or runs after (and revokes what was issued).
        row = self._db.connection().execute(_CLIENT_DISABLED, (client_id,)).fetchone()
        return row is not None and bool(row[0])

    @storage_errors
    def touch(self, client_id: str, now: int) -> None:
        self._db.connection().execute(_TOUCH_CLIENT, (now, client_id))

    @storage_errors
    def rehash(self, client_id: str, column: RehashedColumn, old_hash: str, new_hash: str) -> bool:
        return self._db.connection().execute(_REHASH[column], (new_hash, client_id, old_hash)).rowcount > 0

    @storage_errors
    def delete_unused(self, kind: str, *, never_used_before: int, idle_before: int, now: int) -> int:
        parameters = {"kind": kind, "never_used_before": never_used_before, "idle_before": idle_before, "now": now}
        with self._db.atomic():
            return self._db.connection().execute(_DELETE_UNUSED_CLIENTS, parameters).rowcount

    # Last, so that the name `list` in the annotations above still means the builtin.
    @storage_errors
    def list(self) -> list[Client]:
        return [records.client_from_row(row) for row in self._db.connection().execute(_SELECT_CLIENTS).fetchall()]
