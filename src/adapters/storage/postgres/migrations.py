"""The PostgreSQL schema: numbered migration steps (applied by ``storage.migrations.run``).

The same tables, columns and encoding as SQLite's (records.py), in PostgreSQL's types: keyed
hashes as 32-byte ``bytea``, times as ``bigint`` seconds since the epoch, JSON as ``text``
(read only by the adapter). Version 1 is the whole schema SQLite reached in its five steps;
version 2 is SQLite's 6.
"""

from __future__ import annotations

from typing import Sequence

from ..migrations import Migration, check_steps

MIGRATIONS: Sequence[Migration] = check_steps((
    Migration(
        1,
        (
            """CREATE TABLE clients (
                client_id text PRIMARY KEY,
                secret_hash text,
                metadata text NOT NULL,
                kind text NOT NULL,
                issued_at bigint NOT NULL,
                last_used_at bigint
            )""",
            # Finding dynamically registered clients that were never used, or are idle.
            "CREATE INDEX clients_kind_last_use ON clients (kind, (coalesce(last_used_at, issued_at)))",
            """CREATE TABLE pending_authorizations (
                pending_id text PRIMARY KEY,
                client_id text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                redirect_uri text NOT NULL,
                scopes text NOT NULL,
                resource text NOT NULL,
                code_challenge text NOT NULL,
                code_challenge_method text NOT NULL,
                state text,
                csrf_token_hash text NOT NULL,
                browser_binding_hash text NOT NULL,
                upstream_state_hash bytea UNIQUE,
                upstream_code_verifier_enc text,
                upstream_nonce_enc text,
                created_at bigint NOT NULL,
                expires_at bigint NOT NULL,
                consumed_at bigint
            )""",
            "CREATE INDEX pending_authorizations_expires_at ON pending_authorizations (expires_at)",
            "CREATE INDEX pending_authorizations_client_id ON pending_authorizations (client_id)",
            """CREATE TABLE grants (
                grant_id text PRIMARY KEY,
                client_id text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
                subject text NOT NULL,
                claims text NOT NULL,
                scopes text NOT NULL,
                resource text NOT NULL,
                created_at bigint NOT NULL,
                revoked_at bigint
            )""",
            "CREATE INDEX grants_client_id ON grants (client_id)",
            "CREATE INDEX grants_created_at ON grants (created_at)",
            "CREATE INDEX grants_revoked_at ON grants (revoked_at) WHERE revoked_at IS NOT NULL",
            # Apart from the grants, so that grant rows stay small; read only when a tool needs
            # them. refresh_holder/refresh_until: the lease for upstream refreshes.
            """CREATE TABLE grant_upstream_tokens (
                grant_id text PRIMARY KEY REFERENCES grants (grant_id) ON DELETE CASCADE,
                tokens_enc text NOT NULL,
                expires_at bigint NOT NULL,
                refresh_holder text,
                refresh_until bigint
            )""",
            """CREATE TABLE authorization_codes (
                code_hash bytea PRIMARY KEY,
                grant_id text NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id text NOT NULL,
                redirect_uri text NOT NULL,
                code_challenge text NOT NULL,
                code_challenge_method text NOT NULL,
                resource text NOT NULL,
                scopes text NOT NULL,
                issued_at bigint NOT NULL,
                expires_at bigint NOT NULL,
                redeemed_at bigint
            )""",
            "CREATE INDEX authorization_codes_grant_id ON authorization_codes (grant_id)",
            "CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at)",
            # Each token row holds a copy of its grant (grants change after creation only in
            # revoked_at, which revoke_grant sets on the copies in the same transaction): a
            # lookup is one probe of the primary key's index and one heap fetch.
            """CREATE TABLE access_tokens (
                token_hash bytea PRIMARY KEY,
                grant_id text NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id text NOT NULL,
                scopes text NOT NULL,
                resource text NOT NULL,
                issued_at bigint NOT NULL,
                expires_at bigint NOT NULL,
                revoked_at bigint,
                grant_client_id text NOT NULL,
                grant_subject text NOT NULL,
                grant_claims text NOT NULL,
                grant_scopes text NOT NULL,
                grant_resource text NOT NULL,
                grant_created_at bigint NOT NULL,
                grant_revoked_at bigint
            )""",
            "CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id)",
            "CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at)",
            """CREATE TABLE refresh_tokens (
                token_hash bytea PRIMARY KEY,
                grant_id text NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
                client_id text NOT NULL,
                generation integer NOT NULL,
                scopes text NOT NULL,
                resource text NOT NULL,
                issued_at bigint NOT NULL,
                expires_at bigint NOT NULL,
                rotated_at bigint,
                retried_at bigint,
                revoked_at bigint
            )""",
            "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens (grant_id, generation)",
            "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at)",
            # Rate-limit counters: counter_key is the SHA-256 of the limit's key; one row per
            # live key, rewritten in place by each hit.
            """CREATE TABLE rate_limit_counters (
                counter_key bytea PRIMARY KEY,
                hits bigint NOT NULL,
                ends_at bigint NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        (
            # RFC 7592 §3: the registration access token of a DCR client, a keyed hash stored
            # as text like secret_hash (NULL for clients registered before and those without).
            "ALTER TABLE clients ADD COLUMN registration_token_hash text",
            # The cache of client ID metadata documents (SQLite's migration 6 has the why):
            # no foreign key to clients, so that an expired or purged document never deletes a
            # client or its grants, and a document may be cached before its client exists.
            """CREATE TABLE client_metadata_documents (
                client_id text PRIMARY KEY,
                document text NOT NULL,
                fetched_at bigint NOT NULL,
                fresh_until bigint NOT NULL,
                stale_until bigint NOT NULL
            )""",
            "CREATE INDEX client_metadata_documents_stale_until ON client_metadata_documents (stale_until)",
        ),
    ),
    Migration(
        3,
        (
            # `clients disable` (SQLite's migration 7 has the why).
            "ALTER TABLE clients ADD COLUMN disabled_at bigint",
        ),
    ),
))
