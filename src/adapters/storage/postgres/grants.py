"""PostgreSQL behind the GrantStore and UpstreamTokenStore ports: grants, and each grant's
upstream tokens (encrypted, in their own table) with the refresh lease."""

from __future__ import annotations

from ....domain.model import Grant, UpstreamTokens
from ....domain.ports import GrantUsage
from .. import records
from .database import PostgresDatabase

_INSERT_GRANT = f"INSERT INTO grants ({records.GRANT_COLUMNS.replace('g.', '')}) VALUES ({', '.join(['%s'] * 8)})"
_INSERT_UPSTREAM = "INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at) VALUES (%s, %s, %s)"
_SELECT_GRANT = f"SELECT {records.GRANT_COLUMNS} FROM grants g WHERE g.grant_id = %s"
_SELECT_GRANTS = f"SELECT {records.GRANT_COLUMNS} FROM grants g ORDER BY g.created_at, g.grant_id"
_SELECT_CLIENT_GRANTS = (
    f"SELECT {records.GRANT_COLUMNS} FROM grants g WHERE g.client_id = %s ORDER BY g.created_at, g.grant_id"
)
# Revoking locks the grant's row first: a token being issued from it at the same time holds a
# share lock on that row (see tokens.py), so either it commits first and is revoked below, or
# it waits and copies the revocation.
_REVOKE_GRANT = "UPDATE grants SET revoked_at = coalesce(revoked_at, %(now)s) WHERE grant_id = %(grant_id)s"
_REVOKE_GRANT_ACCESS_TOKENS = """
    UPDATE access_tokens
    SET revoked_at = coalesce(revoked_at, %(now)s),
        grant_revoked_at = (SELECT revoked_at FROM grants WHERE grant_id = %(grant_id)s)
    WHERE grant_id = %(grant_id)s AND (revoked_at IS NULL OR grant_revoked_at IS NULL)
"""
_REVOKE_GRANT_REFRESH_TOKENS = """
    UPDATE refresh_tokens SET revoked_at = %(now)s WHERE grant_id = %(grant_id)s AND revoked_at IS NULL
"""
# The parameter tested for NULL needs a type: PostgreSQL cannot infer one from IS NULL.
_SELECT_GRANT_USAGE = records.select_grant_usage(optional="%s::text", value="%s")
_SELECT_UPSTREAM = "SELECT tokens_enc FROM grant_upstream_tokens WHERE grant_id = %s"
# Compare-and-set on the row: concurrent callers serialise on its lock and re-check the
# condition, so one holder at a time across workers and instances.
_ACQUIRE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = %(holder)s, refresh_until = %(until)s
    WHERE grant_id = %(grant_id)s AND (refresh_until IS NULL OR refresh_until <= %(now)s)
"""
_RELEASE_REFRESH_LOCK = """
    UPDATE grant_upstream_tokens SET refresh_holder = NULL, refresh_until = NULL
    WHERE grant_id = %s AND refresh_holder = %s
"""
# Insert or replace, but only for a grant that exists (an unknown grant is ignored).
_UPDATE_UPSTREAM = """
    INSERT INTO grant_upstream_tokens (grant_id, tokens_enc, expires_at)
    SELECT grant_id, %s, %s FROM grants WHERE grant_id = %s
    ON CONFLICT (grant_id) DO UPDATE SET tokens_enc = excluded.tokens_enc, expires_at = excluded.expires_at
"""


class PostgresGrantStore:
    """Grants; revoking one revokes every token issued from it in the same transaction."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_grant(self, grant: Grant, upstream: UpstreamTokens | None) -> None:
        if upstream is None:
            self._db.execute(_INSERT_GRANT, records.grant_row(grant))
            return
        sealed = records.seal_upstream(upstream, self._db.box)
        # Both rows or neither.
        with self._db.atomic():
            self._db.execute(_INSERT_GRANT, records.grant_row(grant))
            self._db.execute(_INSERT_UPSTREAM, (grant.grant_id, sealed, upstream.expires_at))

    def get_grant(self, grant_id: str) -> Grant | None:
        row = self._db.fetchone(_SELECT_GRANT, (grant_id,))
        return None if row is None else records.grant_from_row(row)

    def list_grants(self, client_id: str | None = None) -> list[Grant]:
        if client_id is None:
            rows = self._db.fetchall(_SELECT_GRANTS)
        else:
            rows = self._db.fetchall(_SELECT_CLIENT_GRANTS, (client_id,))
        return [records.grant_from_row(row) for row in rows]

    def revoke_grant(self, grant_id: str, now: int) -> None:
        parameters = {"grant_id": grant_id, "now": now}
        with self._db.atomic():
            self._db.execute(_REVOKE_GRANT, parameters)
            self._db.execute(_REVOKE_GRANT_ACCESS_TOKENS, parameters)
            self._db.execute(_REVOKE_GRANT_REFRESH_TOKENS, parameters)


    def grant_usage(self, *, subject: str | None = None, client_id: str | None = None) -> list[GrantUsage]:
        parameters = (subject, subject, client_id, client_id)
        rows = self._db.fetchall(_SELECT_GRANT_USAGE, parameters)
        return [GrantUsage(records.grant_from_row(row), row[records.GRANT_WIDTH]) for row in rows]

class PostgresUpstreamTokenStore:
    """The upstream tokens of each grant (sealed) and the lease for refreshing them."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def get_upstream_tokens(self, grant_id: str) -> UpstreamTokens | None:
        row = self._db.fetchone(_SELECT_UPSTREAM, (grant_id,))
        return None if row is None else records.open_upstream(row[0], self._db.box)

    def update_upstream_tokens(self, grant_id: str, tokens: UpstreamTokens) -> None:
        sealed = records.seal_upstream(tokens, self._db.box)
        self._db.execute(_UPDATE_UPSTREAM, (sealed, tokens.expires_at, grant_id))

    def acquire_upstream_refresh_lock(self, grant_id: str, holder: str, now: int, until: int) -> bool:
        parameters = {"holder": holder, "until": until, "grant_id": grant_id, "now": now}
        return self._db.execute(_ACQUIRE_REFRESH_LOCK, parameters) == 1

    def release_upstream_refresh_lock(self, grant_id: str, holder: str) -> None:
        self._db.execute(_RELEASE_REFRESH_LOCK, (grant_id, holder))
