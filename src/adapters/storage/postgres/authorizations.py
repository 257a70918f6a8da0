"""PostgreSQL behind the AuthorizationStore port: pending authorizations (upstream verifier and
nonce encrypted) and one-time authorization codes."""

from __future__ import annotations

from ....domain.model import AuthorizationCode, Grant, PendingAuthorization, UpstreamTransaction
from .. import records
from .database import PostgresDatabase

_INSERT_PENDING = f"INSERT INTO pending_authorizations ({records.PENDING_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})"
_SELECT_PENDING = f"SELECT {records.PENDING_COLUMNS} FROM pending_authorizations WHERE pending_id = %s"
_ATTACH_UPSTREAM = """
    UPDATE pending_authorizations
    SET upstream_state_hash = %s, upstream_code_verifier_enc = %s, upstream_nonce_enc = %s
    WHERE pending_id = %s AND upstream_state_hash IS NULL
"""
# One statement is the whole single-use check: a concurrent caller waits for the row lock, then
# finds consumed_at set and matches nothing.
_CONSUME_UPSTREAM = f"""
    UPDATE pending_authorizations SET consumed_at = %s
    WHERE upstream_state_hash = %s AND consumed_at IS NULL AND expires_at > %s
    RETURNING {records.PENDING_COLUMNS}
"""
_DELETE_PENDING = "DELETE FROM pending_authorizations WHERE pending_id = %s"
_INSERT_CODE = (
    f"INSERT INTO authorization_codes ({records.CODE_COLUMNS.replace('c.', '')}) VALUES ({', '.join(['%s'] * 11)})"
)
_SELECT_CODE_AND_GRANT = f"""
    SELECT {records.CODE_COLUMNS}, {records.GRANT_COLUMNS}
    FROM authorization_codes c JOIN grants g ON g.grant_id = c.grant_id
    WHERE c.code_hash = %s
"""
_REDEEM_CODE = "UPDATE authorization_codes SET redeemed_at = %s WHERE code_hash = %s AND redeemed_at IS NULL"


class PostgresAuthorizationStore:
    """Pending authorizations (upstream verifier and nonce encrypted) and one-time codes."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_pending(self, pending: PendingAuthorization) -> None:
        self._db.execute(_INSERT_PENDING, records.pending_row(pending, self._db.box, encode=records.stored_hash))

    def get_pending(self, pending_id: str) -> PendingAuthorization | None:
        row = self._db.fetchone(_SELECT_PENDING, (pending_id,))
        return None if row is None else records.pending_from_row(row, self._db.box)

    def attach_upstream(self, pending_id: str, upstream: UpstreamTransaction) -> bool:
        box = self._db.box
        sealed = (box.encrypt(upstream.code_verifier), box.encrypt(upstream.nonce))
        return self._db.execute(_ATTACH_UPSTREAM, (records.stored_hash(upstream.state_hash), *sealed, pending_id)) == 1

    def consume_upstream(self, state_hash: str, now: int) -> PendingAuthorization | None:
        key = records.hash_bytes(state_hash)
        row = None if key is None else self._db.fetchone(_CONSUME_UPSTREAM, (now, key, now))
        return None if row is None else records.pending_from_row(row, self._db.box)

    def delete_pending(self, pending_id: str) -> None:
        self._db.execute(_DELETE_PENDING, (pending_id,))

    def add_code(self, code: AuthorizationCode) -> None:
        self._db.execute(_INSERT_CODE, records.code_row(code, encode=records.stored_hash))

    def get_code(self, code_hash: str) -> tuple[AuthorizationCode, Grant] | None:
        key = records.hash_bytes(code_hash)
        row = None if key is None else self._db.fetchone(_SELECT_CODE_AND_GRANT, (key,))
        return None if row is None else records.code_and_grant(row)

    def redeem_code(self, code_hash: str, now: int) -> bool:
        # One conditional statement: exactly one concurrent caller changes the row (the others
        # wait for its lock, then find redeemed_at set).
        key = records.hash_bytes(code_hash)
        return key is not None and self._db.execute(_REDEEM_CODE, (now, key)) == 1
