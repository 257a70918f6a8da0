"""PostgreSQL behind the ClientRepository port: registered (RFC 7591) clients."""

from __future__ import annotations

from ....domain.model import Client
from ....domain.ports import RehashedColumn
from .. import records
from .database import PostgresDatabase

_UPSERT_CLIENT = f"""
    INSERT INTO clients ({records.CLIENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (client_id) DO UPDATE SET
        secret_hash = excluded.secret_hash, metadata = excluded.metadata, kind = excluded.kind,
        issued_at = excluded.issued_at, last_used_at = excluded.last_used_at,
        registration_token_hash = excluded.registration_token_hash
"""
# disabled_at is left out of the upsert on purpose: it is written only by disable and enable, so
# that a client rewritten meanwhile (RFC 7592 update, a new metadata document) stays as it was.
_DISABLE_CLIENT = "UPDATE clients SET disabled_at = coalesce(disabled_at, %s) WHERE client_id = %s"
# With it, the client's live access tokens are revoked, so that they stop working at once while
# the bearer lookup stays one probe of the token row. Its grants and refresh tokens are kept: the
# token endpoint refuses a disabled client, and once enabled again it refreshes as before.
_REVOKE_CLIENT_ACCESS_TOKENS = """
    UPDATE access_tokens SET revoked_at = %s
    WHERE grant_id IN (SELECT grant_id FROM grants WHERE client_id = %s) AND revoked_at IS NULL AND expires_at > %s
"""
_LOCK_CLIENT_GRANTS = "SELECT grant_id FROM grants WHERE client_id = %s ORDER BY grant_id FOR UPDATE"
# A plain read, no row lock: a share lock here, taken after the token row's share lock on its
# grant, would deadlock with a client's deletion (client row, then its grants by cascade).
# Inside the token endpoint's transaction, after the token row is written: a disable that
# locked the grant first committed before this read (seen); one that had not yet locked it
# waits for this transaction and then revokes the token (disable()).
_CLIENT_DISABLED = "SELECT disabled_at IS NOT NULL FROM clients WHERE client_id = %s"
_ENABLE_CLIENT = "UPDATE clients SET disabled_at = NULL WHERE client_id = %s"
_SELECT_CLIENT = f"SELECT {records.CLIENT_COLUMNS} FROM clients WHERE client_id = %s"
_SELECT_CLIENTS = f"SELECT {records.CLIENT_COLUMNS} FROM clients ORDER BY issued_at, client_id"
_DELETE_CLIENT = "DELETE FROM clients WHERE client_id = %s"
_TOUCH_CLIENT = "UPDATE clients SET last_used_at = %s WHERE client_id = %s"
# A hash made again under the current token hash key, only where the old one is still stored.
_REHASH = {
    column: f"UPDATE clients SET {column} = %s WHERE client_id = %s AND {column} = %s"
    for column in ("secret_hash", "registration_token_hash")
}
# ON DELETE CASCADE takes the clients' pending authorizations, grants and tokens with them.
_DELETE_UNUSED_CLIENTS = """
    DELETE FROM clients WHERE kind = %(kind)s AND (
        (last_used_at IS NULL AND issued_at <= %(never_used_before)s)
        OR (coalesce(last_used_at, issued_at) <= %(idle_before)s AND NOT EXISTS (
            SELECT 1 FROM grants g WHERE g.client_id = clients.client_id AND g.revoked_at IS NULL AND (
                EXISTS (SELECT 1 FROM refresh_tokens r
                        WHERE r.grant_id = g.grant_id AND r.revoked_at IS NULL AND r.expires_at > %(now)s)
                OR EXISTS (SELECT 1 FROM access_tokens a
                           WHERE a.grant_id = g.grant_id AND a.revoked_at IS NULL AND a.expires_at > %(now)s))))
    )
"""


class PostgresClientRepository:
    """Registered and CIMD clients (RFC 7591); deleting one deletes its grants and tokens."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._decoded = records.ClientDecoder()

    def add(self, client: Client) -> None:
        # An upsert: deleting and inserting again would cascade to the client's grants.
        self._db.execute(_UPSERT_CLIENT, records.client_row(client))

    def get(self, client_id: str) -> Client | None:
        row = self._db.fetchone(_SELECT_CLIENT, (client_id,))
        return None if row is None else self._decoded.decode(row)

    def delete(self, client_id: str) -> bool:
        return self._db.execute(_DELETE_CLIENT, (client_id,)) > 0

    def disable(self, client_id: str, now: int) -> bool:
        with self._db.atomic():
            if self._db.execute(_DISABLE_CLIENT, (now, client_id)) == 0:
                return False
            # Lock the client's grants as revoking a grant does: a token being issued from one
            # of them (which holds a share lock on it, tokens.py) commits first and is revoked
            # here, or waits.
            self._db.fetchall(_LOCK_CLIENT_GRANTS, (client_id,))
            self._db.execute(_REVOKE_CLIENT_ACCESS_TOKENS, (now, client_id, now))
        return True

    def enable(self, client_id: str) -> bool:
        return self._db.execute(_ENABLE_CLIENT, (client_id,)) > 0

    def is_disabled(self, client_id: str) -> bool:
        row = self._db.fetchone(_CLIENT_DISABLED, (client_id,))
        return row is not None and bool(row[0])

    def touch(self, client_id: str, now: int) -> None:
        self._db.execute(_TOUCH_CLIENT, (now, client_id))

    def rehash(self, client_id: str, column: RehashedColumn, old_hash: str, new_hash: str) -> bool:
        return self._db.execute(_REHASH[column], (new_hash, client_id, old_hash)) > 0

    def delete_unused(self, kind: str, *, never_used_before: int, idle_before: int, now: int) -> int:
        parameters = {"kind": kind, "never_used_before": never_used_before, "idle_before": idle_before, "now": now}
        return self._db.execute(_DELETE_UNUSED_CLIENTS, parameters)

    # Last, so that the name `list` in the annotations above still means the builtin.
    def list(self) -> list[Client]:
        return [records.client_from_row(row) for row in self._db.fetchall(_SELECT_CLIENTS)]
