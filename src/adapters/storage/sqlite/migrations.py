"""The SQLite schema: numbered migration steps (applied by ``storage.migrations.run``)."""

from __future__ import annotations

from typing import Sequence

from ..migrations import Migration, check_steps


def access_token_key(key: bytes | str) -> int | None:
    """The rowid an access token is stored at (token_key, migration 3): the first 8 bytes of its
    packed hash as a signed big-endian integer. None for a hash stored as text: such a row takes
    the next free rowid and is found through the hash's index."""
    return int.from_bytes(key[:8], "big", signed=True) if isinstance(key, bytes) else None


# Append-only: a released migration is never edited, a change is a new numbered entry.
# Each entry is a list of single statements (executescript() would commit the open transaction).
#
# Layout for the hot path (an access token joined to its grant on every request): the keyed
# hashes of tokens, codes and upstream states are 32-byte BLOBs (``records.hash_key``), not 64 hex
# characters; grants and the token tables are WITHOUT ROWID, one B-tree each keyed by its id or
# hash (no primary-key index to walk before the row); and the encrypted upstream tokens (about
# 1.4 KB a grant) live in grant_upstream_tokens, read only when a tool needs them, so that the
# grant rows every lookup reads stay small. Access tokens have since moved to one probe per
# lookup (migration 3).
MIGRATIONS: Sequence[Migration] = check_steps((
    Migration(
        1,
        (
            """CREATE TABLE clients (
                client_id TEXT PRIMARY KEY,
                secret_hash TEXT,
                metadata TEXT NOT NULL,
                kind TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                last_used_at INTEGER
            )""",
            """CREATE TABLE pending_authorizations (
                pending_id TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                redirect_uri TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                code_challenge_method TEXT NOT NULL,
                state TEXT,
                csrf_token_hash TEXT NOT NULL,
                browser_binding_hash TEXT NOT NULL,
                upstream_state_hash BLOB UNIQUE,
                upstream_code_verifier_enc TEXT,
                upstream_nonce_enc TEXT,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                consumed_at INTEGER
            )""",
            "CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at)",
            "CREATE INDEX pending_authorizations_client_id ON pending_authorizations (client_id)",
            """CREATE TABLE grants (
                grant_id TEXT PRIMARY KEY,
                client_id TEXT NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                subject TEXT NOT NULL,
                claims TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX grants_client_id ON grants (client_id)",
            "CREATE INDEX grants_created_at ON grants (created_at)",
            "CREATE INDEX grants_revoked_at ON grants (revoked_at) WHERE revoked_at IS NOT NULL",
            """CREATE TABLE grant_upstream_tokens (
                grant_id TEXT PRIMARY KEY REFERENCES grants (grant_id) ON DELETE CASCADE,
                tokens_enc TEXT NOT NULL,
                expires_at INTEGER NOT NULL
            )""",
            """CREATE TABLE authorization_codes (
                code_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                redirect_uri TEXT NOT NULL,
                code_challenge TEXT NOT NULL,
                code_challenge_method TEXT NOT NULL,
                resource TEXT NOT NULL,
                scopes TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                redeemed_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX authorization_codes_grant_id ON authorization_codes (grant_id)",
            "CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at)",
            """CREATE TABLE access_tokens (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id)",
            "CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at)",
            """CREATE TABLE refresh_tokens (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                rotated_at INTEGER,
                successor_hash BLOB,
                replayed_at INTEGER,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id)",
            "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
        ),
    ),
    Migration(
        2,
        (
            # The per-grant lease for upstream refreshes: a row-level compare-and-set, so it
            # holds across threads, gunicorn workers and instances sharing the database.
            "ALTER TABLE grant_upstream_tokens ADD COLUMN refresh_holder TEXT",
            "ALTER TABLE grant_upstream_tokens ADD COLUMN refresh_until INTEGER",
        ),
    ),
    Migration(
        3,
        (
            # Access tokens in one B-tree probe (the lookup of every MCP request), instead of
            # access_tokens by hash then grants by grant_id (bench/README.md, "Access tokens in
            # one probe", has the measurements):
            # - the grant's fields are copied into the token row: grants never change after
            #   creation except revoked_at, which revoke_grant sets on the copies in the same
            #   transaction (grant_revoked_at, apart from the token's own revoked_at);
            # - the row lives in a rowid table whose INTEGER PRIMARY KEY (token_key) is the
            #   first 8 bytes of the hash as a signed big-endian integer (access_token_key), so
            #   that interior cells are small and only the leaf page is cold.
            # The full hash is stored and compared, UNIQUE as before. Two hashes sharing their
            # first 8 bytes are both kept: the later one gets a free rowid instead, and a lookup
            # that misses its rowid falls back to the hash's own index (as do unknown hashes and
            # hashes stored as text, which have no derived key).
            """CREATE TABLE access_tokens_v3 (
                token_key INTEGER PRIMARY KEY,
                token_hash BLOB NOT NULL UNIQUE,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                revoked_at INTEGER,
                grant_client_id TEXT NOT NULL,
                grant_subject TEXT NOT NULL,
                grant_claims TEXT NOT NULL,
                grant_scopes TEXT NOT NULL,
                grant_resource TEXT NOT NULL,
                grant_created_at INTEGER NOT NULL,
                grant_revoked_at INTEGER
            )""",
            # Every existing token at its derived key (access_token_key() is registered by
            # migrate(); NULL for a hash stored as text, which takes the next free rowid) ...
            """INSERT OR IGNORE INTO access_tokens_v3 (
                token_key, token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, revoked_at,
                grant_client_id, grant_subject, grant_claims, grant_scopes, grant_resource, grant_created_at,
                grant_revoked_at
            )
            SELECT access_token_key(a.token_hash), a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource,
                a.issued_at, a.expires_at, a.revoked_at,
                g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
            FROM access_tokens a JOIN grants g ON g.grant_id = a.grant_id""",
            # ... and those whose key another token already had, at a free rowid.
            """INSERT INTO access_tokens_v3 (
                token_key, token_hash, grant_id, client_id, scopes, resource, issued_at, expires_at, revoked_at,
                grant_client_id, grant_subject, grant_claims, grant_scopes, grant_resource, grant_created_at,
                grant_revoked_at
            )
            SELECT NULL, a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource,
                a.issued_at, a.expires_at, a.revoked_at,
                g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at
            FROM access_tokens a JOIN grants g ON g.grant_id = a.grant_id
            WHERE a.token_hash NOT IN (SELECT token_hash FROM access_tokens_v3)""",
            "DROP TABLE access_tokens",
            "ALTER TABLE access_tokens_v3 RENAME TO access_tokens",
            "CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id)",
            "CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at)",
        ),
    ),
    Migration(
        4,
        (
            # Refresh tokens name their grant and generation (domain/refresh_tokens.py): a grant
            # keeps only its current generation and the token that generation replaced, instead
            # of every rotated token until its own expiry (a row per refresh, ~1.15 KB, for 30
            # days). Current tokens carry over at generation 0; rotated ones are dropped (an
            # old-format token presented after the upgrade is then unknown, not a replay).
            """CREATE TABLE refresh_tokens_v4 (
                token_hash BLOB PRIMARY KEY,
                grant_id TEXT NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id TEXT NOT NULL,
                generation INTEGER NOT NULL,
                scopes TEXT NOT NULL,
                resource TEXT NOT NULL,
                issued_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                rotated_at INTEGER,
                retried_at INTEGER,
                revoked_at INTEGER
            ) WITHOUT ROWID""",
            """INSERT INTO refresh_tokens_v4 (
                token_hash, grant_id, client_id, generation, scopes, resource, issued_at, expires_at, revoked_at
            )
            SELECT token_hash, grant_id, client_id, 0, scopes, resource, issued_at, expires_at, revoked_at
            FROM refresh_tokens WHERE rotated_at IS NULL""",
            "DROP TABLE refresh_tokens",
            "ALTER TABLE refresh_tokens_v4 RENAME TO refresh_tokens",
            "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id, generation)",
            "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
            # Finding dynamically registered clients that were never used, or are idle.
            "CREATE INDEX clients_kind_last_use ON clients (kind, coalesce(last_used_at, issued_at))",
        ),
    ),
    Migration(
        5,
        (
            # Rate-limit counters (ratelimit.SqliteRateLimitStore), apart from every other
            # table (it was written beside migration 4, in either order). counter_key is the SHA-256 of
            # the limit's key (32 bytes whatever a stranger put in it); one row per live key,
            # rewritten in place by each hit; rows whose window ended are deleted by purge. No
            # index on ends_at: it would be one more B-tree written by every new window on the
            # hot path, and the purge's scan reads only live keys plus a minute's expired ones.
            """CREATE TABLE rate_limit_counters (
                counter_key BLOB PRIMARY KEY,
                hits INTEGER NOT NULL,
                ends_at INTEGER NOT NULL
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        6,
        (
            # RFC 7592 §3: the registration access token of a DCR client, a keyed hash stored
            # as text like secret_hash (NULL for every client registered before, and for clients
            # that have none: operator-created and client ID metadata document clients).
            "ALTER TABLE clients ADD COLUMN registration_token_hash TEXT",
            # The cache of client ID metadata documents (draft-ietf-oauth-client-id-metadata-
            # document §5.2; documents.SqliteMetadataDocumentStore): the JSON object as
            # fetched, and until when it is fresh and may be served stale. No foreign key to
            # clients on purpose: the cache is kept apart from the client's identity, so that a
            # document that expires or is purged never deletes a client or (by cascade) its
            # grants, and a document may be cached before its client row exists. A rowid
            # table: a document is up to 5 KiB, too large a row for WITHOUT ROWID.
            """CREATE TABLE client_metadata_documents (
                client_id TEXT PRIMARY KEY,
                document TEXT NOT NULL,
                fetched_at INTEGER NOT NULL,
                fresh_until INTEGER NOT NULL,
                stale_until INTEGER NOT NULL
            )""",
            # For purge_expired (documents past stale_until).
            "CREATE INDEX client_metadata_documents_stale_until ON client_metadata_documents (stale_until)",
        ),
    ),
    Migration(
        7,
        (
            # `clients disable`: when an operator disabled the client (NULL: enabled). A
            # disabled client cannot authorize or use the token endpoint; its live access
            # tokens were revoked when it was disabled (ClientRepository.disable).
            "ALTER TABLE clients ADD COLUMN disabled_at INTEGER",
        ),
    ),
))
