"""SQLite behind the AuthorizationStore port: pending authorizations (upstream verifier and nonce
encrypted) and one-time authorization codes."""

from __future__ import annotations

from ....domain.model import AuthorizationCode, Grant, PendingAuthorization, UpstreamTransaction
from .. import records
from .database import SqliteDatabase, storage_errors

_INSERT_PENDING = f"INSERT INTO pending_authorizations ({records.PENDING_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_SELECT_PENDING = f"SELECT {records.PENDING_COLUMNS} FROM pending_authorizations WHERE pending_id = ?"
_ATTACH_UPSTREAM = """
    UPDATE pending_authorizations
    SET upstream_state_hash = ?, upstream_code_verifier_enc = ?, upstream_nonce_enc = ?
    WHERE pending_id = ? AND upstream_state_hash IS NULL
"""
# One statement is the whole single-use check: no second caller can match the row.
_CONSUME_UPSTREAM = f"""
    UPDATE pending_authorizations SET consumed_at = ?
    WHERE upstream_state_hash = ? AND consumed_at IS NULL AND expires_at > ?
    RETURNING {records.PENDING_COLUMNS}
"""
_DELETE_PENDING = "DELETE FROM pending_authorizations WHERE pending_id = ?"
_INSERT_CODE = (
    f"INSERT INTO authorization_codes ({records.CODE_COLUMNS.replace('c.', '')}) VALUES ({', '.join('?' * 11)})"
)
_SELECT_CODE_AND_GRANT = f"""
    SELECT {records.CODE_COLUMNS}, {records.GRANT_COLUMNS}
    FROM authorization_codes c JOIN grants g ON g.grant_id = c.grant_id
    WHERE c.code_hash = ?
"""
_REDEEM_CODE = "UPDATE authorization_codes SET redeemed_at = ? WHERE code_hash = ? AND redeemed_at IS NULL"


class SqliteAuthorizationStore:
    """Pending authorizations (upstream verifier and nonce encrypted) and one-time codes."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    @storage_errors
    def add_pending(self, pending: PendingAuthorization) -> None:
        self._db.connection().execute(_INSERT_PENDING, records.pending_row(pending, self._db.box))

    @storage_errors
    def get_pending(self, pending_id: str) -> PendingAuthorization | None:
        row = self._db.connection().execute(_SELECT_PENDING, (pending_id,)).fetchone()
        return None if row is None else records.pending_from_row(row, self._db.box)

    @storage_errors
    def attach_upstream(self, pending_id: str, upstream: UpstreamTransaction) -> bool:
        box = self._db.box
        cursor = self._db.connection().execute(
            _ATTACH_UPSTREAM,
            (
                records.hash_key(upstream.state_hash),
                box.encrypt(upstream.code_verifier),
                box.encrypt(upstream.nonce),
                pending_id,
            ),
        )
        return cursor.rowcount == 1

    @storage_errors
    def consume_upstream(self, state_hash: str, now: int) -> PendingAuthorization | None:
        # fetchall(): an autocommit statement with RETURNING commits only once fully stepped.
        rows = self._db.connection().execute(_CONSUME_UPSTREAM, (now, records.hash_key(state_hash), now)).fetchall()
        return records.pending_from_row(rows[0], self._db.box) if rows else None

    @storage_errors
    def delete_pending(self, pending_id: str) -> None:
        self._db.connection().execute(_DELETE_PENDING, (pending_id,))

    @storage_errors
    def add_code(self, code: AuthorizationCode) -> None:
        self._db.connection().execute(_INSERT_CODE, records.code_row(code))

    @storage_errors
    def get_code(self, code_hash: str) -> tuple[AuthorizationCode, Grant] | None:
        row = self._db.connection().execute(_SELECT_CODE_AND_GRANT, (records.hash_key(code_hash),)).fetchone()
        return None if row is None else records.code_and_grant(row)

    @storage_errors
    def redeem_code(self, code_hash: str, now: int) -> bool:
        # One conditional statement: exactly one concurrent caller changes the row.
        return self._db.connection().execute(_REDEEM_CODE, (now, records.hash_key(code_hash))).rowcount == 1
