"""Hand-written in-memory fakes of the domain's ports, for unit tests (no SQLite, no Flask)."""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Generator, Iterator, Sequence
from urllib.parse import urlencode

from mcp_oauth_bridge.domain.audit import AuditEvent
from mcp_oauth_bridge.domain.model import (
    AccessToken,
    AuthorizationCode,
    Client,
    Grant,
    PendingAuthorization,
    RefreshToken,
    UpstreamIdentity,
    UpstreamLogin,
    UpstreamTokens,
    UpstreamTransaction,
)
from mcp_oauth_bridge.domain.ports import (
    GrantUsage,
    HashKeyUsage,
    RECORD_KINDS,
    CachedMetadataDocument,
    FetchedDocument,
    MetadataDocumentUnavailable,
    ImportResult,
    RateWindow,
    RecordBatch,
    RehashedColumn,
    StorageError,
    UpstreamIdentityError,
    WebUrl,
)


class FixedClock:
    def __init__(self, now: int = 1_700_000_000) -> None:
        self.current = now

    def now(self) -> int:
        return self.current

    def advance(self, seconds: int) -> None:
        self.current += seconds

    def sleep(self, seconds: float) -> None:
        # Time passes only in whole seconds here; a sleep moves the clock by at least one.
        self.current += max(1, int(seconds))


class SequentialTokenGenerator:
    """Deterministic 'random' values: prefix + a zero-padded counter (43 characters, like 32 bytes)."""

    def __init__(self) -> None:
        self.count = 0

    def generate(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count:043d}"


# As the SQL adapters keep them (adapters/storage/records.py).
REVOKED_GRANT_RETENTION = 24 * 3600
DEFAULT_GRANT_RETENTION = 30 * 24 * 3600


class InMemoryClientRepository:
    """Clients, kept in ``storage`` (a new one if none is given) so that its transactions cover
    them and deleting a client deletes what was issued to it (the SQL adapters' ON DELETE
    CASCADE)."""

    def __init__(self, storage: "InMemoryStorage | None" = None) -> None:
        self.storage = storage if storage is not None else InMemoryStorage()

    @property
    def clients(self) -> dict[str, Client]:
        return self.storage.clients

    def add(self, client: Client) -> None:
        with self.storage.lock:
            stored = self.storage.clients.get(client.client_id)
            # As the SQL upsert: only disable and enable change a stored client's disabled mark.
            if stored is not None:
                client = replace(client, disabled_at=stored.disabled_at)
            self.storage.clients[client.client_id] = client

    def get(self, client_id: str) -> Client | None:
        return self.storage.clients.get(client_id)

    def list(self) -> list[Client]:
        return list(self.storage.clients.values())

    def delete(self, client_id: str) -> bool:
        with self.storage.lock:
            self.storage.delete_client_rows(client_id)
            return self.storage.clients.pop(client_id, None) is not None

    def disable(self, client_id: str, now: int) -> bool:
        with self.storage.lock:
            client = self.storage.clients.get(client_id)
            if client is None:
                return False
            self.storage.clients[client_id] = replace(client, disabled_at=client.disabled_at or now)
            grants = {g.grant_id for g in self.storage.grants.values() if g.client_id == client_id}
            for key, token in self.storage.access_tokens.items():
                if token.grant_id in grants and token.revoked_at is None and token.expires_at > now:
                    self.storage.access_tokens[key] = replace(token, revoked_at=now)
            return True

    def is_disabled(self, client_id: str) -> bool:
        client = self.storage.clients.get(client_id)
        return client is not None and client.is_disabled

    def enable(self, client_id: str) -> bool:
        with self.storage.lock:
            client = self.storage.clients.get(client_id)
            if client is None:
                return False
            self.storage.clients[client_id] = replace(client, disabled_at=None)
            return True

    def touch(self, client_id: str, now: int) -> None:
        with self.storage.lock:
            if client_id in self.storage.clients:
                self.storage.clients[client_id] = replace(self.storage.clients[client_id], last_used_at=now)

    def rehash(self, client_id: str, column: RehashedColumn, old_hash: str, new_hash: str) -> bool:
        with self.storage.lock:
            client = self.storage.clients.get(client_id)
            if client is None or getattr(client, column) != old_hash:
                return False
            self.storage.clients[client_id] = replace(client, **{column: new_hash})
            return True

    def delete_unused(self, kind: str, *, never_used_before: int, idle_before: int, now: int) -> int:
        with self.storage.lock:
            doomed = [
                client.client_id
                for client in self.storage.clients.values()
                if client.kind == kind
                and (
                    (client.last_used_at is None and client.issued_at <= never_used_before)
                    or (
                        (client.last_used_at or client.issued_at) <= idle_before
                        and not self.storage.has_live_grant(client.client_id, now)
                    )
                )
            ]
            for client_id in doomed:
                self.delete(client_id)
            return len(doomed)


# The dictionaries a transaction restores when it fails.
_TABLES = (
    "clients",
    "pending",
    "codes",
    "grants",
    "upstream_tokens",
    "access_tokens",
    "refresh_tokens",
    "refresh_locks",
    "documents",
)


class InMemoryStorage:
    """Every store of one backend in dictionaries: pending authorizations, codes, grants,
    upstream tokens, access and refresh tokens (and the clients of InMemoryClientRepository).
    Writes hold one re-entrant lock; ``atomic()`` holds it for its block and puts every
    dictionary back as it was if the block raises (a nested block, its own writes only)."""

    def __init__(self, *, grant_retention: int = DEFAULT_GRANT_RETENTION) -> None:
        self.lock = threading.RLock()
        self.grant_retention = grant_retention
        self.clients: dict[str, Client] = {}
        self.pending: dict[str, PendingAuthorization] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.grants: dict[str, Grant] = {}
        # Upstream tokens by grant id, apart from the grants (the SQL adapters encrypt them).
        self.upstream_tokens: dict[str, UpstreamTokens] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.refresh_locks: dict[str, tuple[str, int]] = {}
        # Cached client ID metadata documents by client id (MetadataDocumentStore).
        self.documents: dict[str, CachedMetadataDocument] = {}

    # UnitOfWork

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self.lock:
            # Values are frozen dataclasses: copying the dictionaries is a full snapshot.
            saved = {name: dict(getattr(self, name)) for name in _TABLES}
            try:
                yield
            except BaseException:
                for name, table in saved.items():
                    setattr(self, name, table)
                raise

    # AuthorizationStore

    def add_pending(self, pending: PendingAuthorization) -> None:
        with self.lock:
            self.pending[pending.pending_id] = pending

    def get_pending(self, pending_id: str) -> PendingAuthorization | None:
        return self.pending.get(pending_id)

    def attach_upstream(self, pending_id: str, upstream: UpstreamTransaction) -> bool:
        with self.lock:
            pending = self.pending.get(pending_id)
            if pending is None or pending.upstream is not None:
                return False
            self.pending[pending_id] = replace(pending, upstream=upstream)
            return True

    def consume_upstream(self, state_hash: str, now: int) -> PendingAuthorization | None:
        with self.lock:
            for pending_id, pending in self.pending.items():
                if pending.upstream is not None and pending.upstream.state_hash == state_hash:
                    if pending.consumed_at is not None or pending.expires_at <= now:
                        return None
                    consumed = replace(pending, consumed_at=now)
                    self.pending[pending_id] = consumed
                    return consumed
            return None

    def delete_pending(self, pending_id: str) -> None:
        with self.lock:
            self.pending.pop(pending_id, None)

    def add_code(self, code: AuthorizationCode) -> None:
        with self.lock:
            self.codes[code.code_hash] = code

    def get_code(self, code_hash: str) -> tuple[AuthorizationCode, Grant] | None:
        code = self.codes.get(code_hash)
        return None if code is None else (code, self.grants[code.grant_id])

    def redeem_code(self, code_hash: str, now: int) -> bool:
        with self.lock:
            code = self.codes.get(code_hash)
            if code is None or code.redeemed_at is not None:
                return False
            self.codes[code_hash] = replace(code, redeemed_at=now)
            return True

    # What the SQL adapters' ON DELETE CASCADE does when a client goes.

    def delete_client_rows(self, client_id: str) -> None:
        with self.lock:
            grant_ids = {g.grant_id for g in self.grants.values() if g.client_id == client_id}
            self.pending = {k: v for k, v in self.pending.items() if v.request.client_id != client_id}
            self.delete_grants(grant_ids)

    def delete_grants(self, grant_ids: set[str]) -> int:
        """Delete the grants with everything issued from them; return how many rows went."""
        with self.lock:
            before = self.row_count()
            self.codes = {k: v for k, v in self.codes.items() if v.grant_id not in grant_ids}
            self.access_tokens = {k: v for k, v in self.access_tokens.items() if v.grant_id not in grant_ids}
            self.refresh_tokens = {k: v for k, v in self.refresh_tokens.items() if v.grant_id not in grant_ids}
            for grant_id in grant_ids:
                self.grants.pop(grant_id, None)
                # Like the adapters' grant_upstream_tokens rows, which go by cascade uncounted.
                self.upstream_tokens.pop(grant_id, None)
                self.refresh_locks.pop(grant_id, None)
            return before - self.row_count()

    def row_count(self) -> int:
        return sum(len(table) for table in (self.pending, self.codes, self.grants, self.access_tokens, self.refresh_tokens))

    def has_live_grant(self, client_id: str, now: int) -> bool:
        live = {
            token.grant_id
            for tokens in (self.access_tokens, self.refresh_tokens)
            for token in tokens.values()
            if token.revoked_at is None and token.expires_at > now
        }
        return any(
            g.client_id == client_id and g.revoked_at is None and g.grant_id in live for g in self.grants.values()
        )

    # GrantStore

    def add_grant(self, grant: Grant, upstream: UpstreamTokens | None) -> None:
        with self.lock:
            self.grants[grant.grant_id] = grant
            if upstream is None:
                self.upstream_tokens.pop(grant.grant_id, None)
            else:
                self.upstream_tokens[grant.grant_id] = upstream

    def get_grant(self, grant_id: str) -> Grant | None:
        return self.grants.get(grant_id)

    def list_grants(self, client_id: str | None = None) -> list[Grant]:
        return [g for g in self.grants.values() if client_id is None or g.client_id == client_id]

    def revoke_grant(self, grant_id: str, now: int) -> None:
        with self.lock:
            grant = self.grants.get(grant_id)
            if grant is not None and grant.revoked_at is None:
                self.grants[grant_id] = replace(grant, revoked_at=now)
            for tokens in (self.access_tokens, self.refresh_tokens):
                for key, token in tokens.items():
                    if token.grant_id == grant_id and token.revoked_at is None:
                        tokens[key] = replace(token, revoked_at=now)  # type: ignore[assignment]

    def grant_usage(self, *, subject: str | None = None, client_id: str | None = None) -> list[GrantUsage]:
        live = [
            g for g in self.grants.values()
            if g.revoked_at is None and subject in (None, g.subject) and client_id in (None, g.client_id)
        ]
        usage = []
        for grant in sorted(live, key=lambda g: (g.created_at, g.grant_id)):
            issued = [
                t.issued_at for t in [*self.access_tokens.values(), *self.refresh_tokens.values()]
                if t.grant_id == grant.grant_id
            ]
            usage.append(GrantUsage(grant, max(issued, default=None)))
        return usage

    # UpstreamTokenStore

    def get_upstream_tokens(self, grant_id: str) -> UpstreamTokens | None:
        return self.upstream_tokens.get(grant_id)

    def update_upstream_tokens(self, grant_id: str, tokens: UpstreamTokens) -> None:
        # Like the SQL adapters: nothing happens for an unknown grant.
        with self.lock:
            if grant_id in self.grants:
                self.upstream_tokens[grant_id] = tokens

    def acquire_upstream_refresh_lock(self, grant_id: str, holder: str, now: int, until: int) -> bool:
        with self.lock:
            current = self.refresh_locks.get(grant_id)
            if grant_id not in self.upstream_tokens or (current is not None and current[1] > now):
                return False
            self.refresh_locks[grant_id] = (holder, until)
            return True

    def release_upstream_refresh_lock(self, grant_id: str, holder: str) -> None:
        with self.lock:
            if self.refresh_locks.get(grant_id, ("", 0))[0] == holder:
                del self.refresh_locks[grant_id]

    # AccessTokenStore

    def add_access_token(self, token: AccessToken) -> None:
        with self.lock:
            self.access_tokens[token.token_hash] = token

    def get_access_token(self, token_hash: str) -> tuple[AccessToken, Grant] | None:
        token = self.access_tokens.get(token_hash)
        return None if token is None else (token, self.grants[token.grant_id])

    def revoke_access_token(self, token_hash: str, now: int) -> None:
        with self.lock:
            token = self.access_tokens.get(token_hash)
            if token is not None and token.revoked_at is None:
                self.access_tokens[token_hash] = replace(token, revoked_at=now)

    # RefreshTokenStore

    def add_refresh_token(self, token: RefreshToken) -> None:
        with self.lock:
            self.refresh_tokens[token.token_hash] = token

    def get_refresh_token(self, token_hash: str) -> tuple[RefreshToken, Grant] | None:
        token = self.refresh_tokens.get(token_hash)
        return None if token is None else (token, self.grants[token.grant_id])

    def current_refresh_generation(self, grant_id: str) -> int | None:
        generations = [t.generation for t in self.refresh_tokens.values() if t.grant_id == grant_id]
        return max(generations) if generations else None

    def rotate_refresh_token(self, token_hash: str, now: int) -> bool:
        with self.lock:
            token = self.refresh_tokens.get(token_hash)
            if token is None or token.rotated_at is not None:
                return False
            self.refresh_tokens = {
                key: other
                for key, other in self.refresh_tokens.items()
                if key == token_hash or other.grant_id != token.grant_id or other.generation > token.generation
            }
            self.refresh_tokens[token_hash] = replace(token, rotated_at=now)
            return True

    def mark_refresh_retried(self, token_hash: str, now: int) -> bool:
        with self.lock:
            token = self.refresh_tokens.get(token_hash)
            if token is None or token.retried_at is not None:
                return False
            self.refresh_tokens[token_hash] = replace(token, retried_at=now)
            return True

    # StorageAdministration (no schema: nothing to migrate or re-encrypt)

    def migrate(self) -> list[int]:
        return []

    def pending_migrations(self) -> list[int]:
        return []

    def applied_migrations(self) -> list[int]:
        return []

    def ensure_schema(self, *, busy_wait: float) -> bool:
        return True

    # MetadataDocumentStore

    def get_document(self, client_id: str) -> CachedMetadataDocument | None:
        return self.documents.get(client_id)

    def put_document(self, document: CachedMetadataDocument) -> None:
        # A copy through JSON, as the SQL adapters store the text: a later change to the
        # caller's mapping is not cached, and a value JSON cannot hold fails here as there.
        copied = json.loads(json.dumps(dict(document.document)))
        with self.lock:
            self.documents[document.client_id] = replace(document, document=copied)

    def reencrypt(self, *, batch_size: int = 1000) -> int:
        return 0

    def close(self) -> None:
        pass

    def live_grants(self) -> int:
        return sum(1 for grant in self.grants.values() if not grant.is_revoked)

    def hash_key_usage(self, key_ids: Sequence[str], now: int) -> list[HashKeyUsage]:
        def live_grant(grant_id: str) -> bool:
            return grant_id in self.grants and not self.grants[grant_id].is_revoked

        hashed: dict[str, list[tuple[str, int | None]]] = {
            "access_tokens": [
                (t.token_hash, t.expires_at)
                for t in self.access_tokens.values()
                if t.revoked_at is None and live_grant(t.grant_id) and t.expires_at > now
            ],
            "refresh_tokens": [
                (t.token_hash, t.expires_at)
                for t in self.refresh_tokens.values()
                if t.revoked_at is None and live_grant(t.grant_id) and t.expires_at > now
            ],
            "authorization_codes": [
                (c.code_hash, c.expires_at) for c in self.codes.values() if c.redeemed_at is None and c.expires_at > now
            ],
            "pending_authorizations": [
                (p.csrf_token_hash, p.expires_at)
                for p in self.pending.values()
                if p.consumed_at is None and p.expires_at > now
            ],
            "client_secrets": [(c.secret_hash, None) for c in self.clients.values() if c.secret_hash is not None],
            "registration_tokens": [
                (c.registration_token_hash, None) for c in self.clients.values() if c.registration_token_hash is not None
            ],
        }
        usage = []
        for kind, values in hashed.items():
            groups: dict[str | None, list[int | None]] = {}
            for value_hash, expires_at in values:
                groups.setdefault(value_hash[-8:] if value_hash[-8:] in key_ids else None, []).append(expires_at)
            for key, expiries in groups.items():
                known = [e for e in expiries if e is not None]
                usage.append(HashKeyUsage(kind, key, len(expiries), max(known) if known else None))
        return usage

    def counts(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "pending_authorizations": len(self.pending),
            "authorization_codes": len(self.codes),
            "grants": len(self.grants),
            "access_tokens": len(self.access_tokens),
            "refresh_tokens": len(self.refresh_tokens),
            "client_metadata_documents": len(self.documents),
        }

    def purge_expired(self, now: int) -> int:
        """As the SQL adapters purge: expired rows; grants revoked more than a day ago, with
        their rows; and grants older than ``grant_retention`` with no code or token left."""
        with self.atomic():
            removed = 0
            for table in (self.pending, self.codes, self.access_tokens, self.refresh_tokens):
                for key in [k for k, v in table.items() if v.expires_at <= now]:
                    del table[key]
                    removed += 1
            for key in [k for k, v in self.documents.items() if v.stale_until <= now]:
                del self.documents[key]
                removed += 1
            revoked_before = now - REVOKED_GRANT_RETENTION
            removed += self.delete_grants(
                {g.grant_id for g in self.grants.values() if g.revoked_at is not None and g.revoked_at <= revoked_before}
            )
            in_use = {row.grant_id for table in (self.codes, self.access_tokens, self.refresh_tokens) for row in table.values()}
            removed += self.delete_grants(
                {
                    g.grant_id
                    for g in self.grants.values()
                    if g.created_at <= now - self.grant_retention and g.grant_id not in in_use
                }
            )
            return removed

    def purge_expired_by_kind(self, now: int) -> dict[str, int]:
        with self.atomic():
            before = self.counts()
            self.purge_expired(now)
            after = self.counts()
        # The kinds the SQL backends report: every one but clients, which purge_expired keeps.
        return {kind: before[kind] - after[kind] for kind in before if kind != "clients"}

    def database_size(self) -> int:
        return 0


    # Export and import: the fake's rows are its own values (a model, and a grant's upstream
    # tokens), which only another InMemoryStorage imports.

    def export_records(self, now: int, *, batch_size: int = 1000) -> Generator[RecordBatch, None, None]:
        # What purge would keep, by construction: a purged copy.
        with self.lock:
            kept = InMemoryStorage(grant_retention=self.grant_retention)
            for name in _TABLES:
                setattr(kept, name, dict(getattr(self, name)))
        kept.purge_expired(now)
        rows: dict[str, list[tuple[Any, ...]]] = {
            "clients": [(client,) for client in kept.clients.values()],
            "pending_authorizations": [(pending,) for pending in kept.pending.values()],
            "grants": [(grant, kept.upstream_tokens.get(grant.grant_id)) for grant in kept.grants.values()],
            "authorization_codes": [(code,) for code in kept.codes.values()],
            "access_tokens": [(token,) for token in kept.access_tokens.values()],
            "refresh_tokens": [(token,) for token in kept.refresh_tokens.values()],
        }
        for kind in RECORD_KINDS:
            for start in range(0, len(rows[kind]), batch_size):
                yield RecordBatch(kind, rows[kind][start : start + batch_size])

    def import_records(self, batch: RecordBatch) -> ImportResult:
        tables: dict[str, tuple[dict[str, Any], str]] = {
            "clients": (self.clients, "client_id"),
            "pending_authorizations": (self.pending, "pending_id"),
            "grants": (self.grants, "grant_id"),
            "authorization_codes": (self.codes, "code_hash"),
            "access_tokens": (self.access_tokens, "token_hash"),
            "refresh_tokens": (self.refresh_tokens, "token_hash"),
        }
        added = 0
        with self.atomic():
            table, key = tables[batch.kind]
            for record, *rest in batch.rows:
                if getattr(record, key) in table:
                    continue
                # Like the SQL adapters' foreign keys: a record's parent must be here already.
                parent = getattr(record, "grant_id", None) if batch.kind != "grants" else None
                if parent is not None and parent not in self.grants:
                    raise StorageError(f"no grant {parent!r} for the imported {batch.kind}")
                table[getattr(record, key)] = record
                if batch.kind == "grants" and rest[0] is not None:
                    self.upstream_tokens[record.grant_id] = rest[0]
                added += 1
        return ImportResult(added=added, existing=len(batch.rows) - added)


class ScriptedIdentityProvider:
    """An upstream IdP whose answers the test decides; records what it was asked."""

    name = "scripted"

    def __init__(self) -> None:
        self.login = UpstreamLogin(
            identity=UpstreamIdentity(subject="user-1", claims={"preferred_username": "alice", "email": "alice@example.com"}),
            tokens=UpstreamTokens(access_token="upstream-at", refresh_token="upstream-rt", expires_at=1_700_003_600),
        )
        self.failure: UpstreamIdentityError | None = None
        self.exchanges: list[dict[str, str]] = []
        self.refreshes: list[str] = []
        # What refresh() answers; None: the login's tokens.
        self.refreshed: UpstreamTokens | None = None
        # What identity_after_refresh() answers (None: the login's identity), or raises.
        self.refreshed_identity: UpstreamIdentity | None = None
        self.identity_failure: UpstreamIdentityError | None = None
        self.identity_reads: list[UpstreamTokens] = []

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        query = urlencode({"state": state, "nonce": nonce, "code_challenge": code_challenge})
        return f"https://idp.example/authorize?{query}"

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        self.exchanges.append({"code": code, "code_verifier": code_verifier, "nonce": nonce})
        if self.failure is not None:
            raise self.failure
        return self.login

    def describe_error(self, error: str, description: str | None) -> str:
        return f"the scripted provider answered {error}"

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        self.refreshes.append(refresh_token)
        if self.failure is not None:
            raise self.failure
        return self.refreshed or self.login.tokens

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        self.identity_reads.append(tokens)
        if self.identity_failure is not None:
            raise self.identity_failure
        return self.refreshed_identity or self.login.identity


class NoUpstreamTokens:
    """An UpstreamTokenSource for tools that never call an upstream API."""

    def access_token(self, grant_id: str, *, rejected: str | None = None) -> str:
        raise AssertionError("this test's tools do not use upstream tokens")


# -- WHATWG URL parsing -----------------------------------------------------------------------------


def _url(href: str, scheme: str, hostname: str, *, port: str = "", username: str = "", password: str = "",
         unicode_hostname: str | None = None) -> WebUrl:
    return WebUrl(href=href, scheme=scheme, username=username, password=password, hostname=hostname, port=port,
                  unicode_hostname=hostname if unicode_hostname is None else unicode_hostname)


# What ada (the real adapter) answers for URLs that a browser rewrites or reads in a surprising way.
# tests/integration/test_web_url.py checks every entry against the real parser.
RECORDED_WHATWG_PARSES: dict[str, WebUrl | None] = {
    'HTTPS://EXAMPLE.com/cb': _url('https://example.com/cb', 'https', 'example.com'),
    'https://claude.ai': _url('https://claude.ai/', 'https', 'claude.ai'),
    'cursor://anysphere.cursor-mcp/oauth/callback': _url(
        'cursor://anysphere.cursor-mcp/oauth/callback', 'cursor', 'anysphere.cursor-mcp'
    ),
    'HTTP://client.example/cb': _url('http://client.example/cb', 'http', 'client.example'),
    'Com.Example.App:/cb': _url('com.example.app:/cb', 'com.example.app', ''),
    'https://example.com:443/cb': _url('https://example.com/cb', 'https', 'example.com'),
    'http://127.0.0.1:80/cb': _url('http://127.0.0.1/cb', 'http', '127.0.0.1'),
    'https://example.com/a/../b': _url('https://example.com/b', 'https', 'example.com'),
    'https://example.com/./cb': _url('https://example.com/cb', 'https', 'example.com'),
    'https://example.com/%2e%2e/': _url('https://example.com/', 'https', 'example.com'),
    'https://ex%61mple.com/': _url('https://example.com/', 'https', 'example.com'),
    'https://%2e.example.com/': _url('https://..example.com/', 'https', '..example.com'),
    'https://аррӏе.com/cb': _url('https://xn--80ak6aa92e.com/cb', 'https', 'xn--80ak6aa92e.com', unicode_hostname='аррӏе.com'),
    'https://xn--80ak6aa92e.com/cb': _url('https://xn--80ak6aa92e.com/cb', 'https', 'xn--80ak6aa92e.com', unicode_hostname='аррӏе.com'),
    'https://bücher.example:8443/cb': _url('https://xn--bcher-kva.example:8443/cb', 'https', 'xn--bcher-kva.example', port='8443', unicode_hostname='bücher.example'),
    'https://xn--bcher-kva.example:8443/cb': _url('https://xn--bcher-kva.example:8443/cb', 'https', 'xn--bcher-kva.example', port='8443', unicode_hostname='bücher.example'),
    'https://0x7f.1/': _url('https://127.0.0.1/', 'https', '127.0.0.1'),
    'http://0x7f.1/cb': _url('http://127.0.0.1/cb', 'http', '127.0.0.1'),
    'http://127.1/cb': _url('http://127.0.0.1/cb', 'http', '127.0.0.1'),
    'http://2130706433/cb': _url('http://127.0.0.1/cb', 'http', '127.0.0.1'),
    'https://example.com./cb': _url('https://example.com./cb', 'https', 'example.com.'),
    'https://user@client.example/cb': _url('https://user@client.example/cb', 'https', 'client.example', username='user'),
    'https://user:password@client.example/cb': _url('https://user:password@client.example/cb', 'https', 'client.example', username='user', password='password'),
    'https://client.example@evil.example/cb': _url('https://client.example@evil.example/cb', 'https', 'evil.example', username='client.example'),
    'http://user@127.0.0.1:8080/cb': _url('http://user@127.0.0.1:8080/cb', 'http', '127.0.0.1', port='8080', username='user'),
    'https://@client.example/cb': _url('https://client.example/cb', 'https', 'client.example'),
    'https://example.com': _url('https://example.com/', 'https', 'example.com'),
    'https:example.com/cb': _url('https://example.com/cb', 'https', 'example.com'),
    'https:///no-host': _url('https://no-host/', 'https', 'no-host'),
    'com.example.app://Ex%41/cb': _url('com.example.app://Ex%41/cb', 'com.example.app', 'Ex%41'),
    'com.example.app://callback': _url('com.example.app://callback', 'com.example.app', 'callback'),
    'https://exämple.com/päth': _url('https://xn--exmple-cua.com/p%C3%A4th', 'https', 'xn--exmple-cua.com', unicode_hostname='exämple.com'),
    'https://a!b.example/cb': _url('https://a!b.example/cb', 'https', 'a!b.example'),
    'https://..example.com/cb': _url('https://..example.com/cb', 'https', '..example.com'),
    'http://[0:0:0:0:0:0:0:1]/cb': _url('http://[::1]/cb', 'http', '[::1]'),
    'http://LOCALHOST:8080/cb': _url('http://localhost:8080/cb', 'http', 'localhost', port='8080'),
    'https://example.com/cb?a=b%20c': _url('https://example.com/cb?a=b%20c', 'https', 'example.com'),
    'https://example.com/ü': _url('https://example.com/%C3%BC', 'https', 'example.com'),
    'http://[::1': None,
}

# A URL that no WHATWG parser rewrites: lower-case scheme (https, http or reverse-domain), a
# lower-case host whose last label starts with a letter (or a dotted-quad address, or [::1]), a
# non-default port, and a path, query and fragment of unreserved characters.
# tests/integration/test_web_url.py checks that ada leaves every such URL as it is.
_PLAIN_URL = re.compile(
    r"(?P<scheme>https?|[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+):"
    r"(?://(?P<host>(?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|\[::1\])(?::(?P<port>[1-9][0-9]{0,4}))?)?"
    r"(?P<path>/[A-Za-z0-9._~/-]*)(?:\?[A-Za-z0-9._~=&-]*)?(?:#[A-Za-z0-9._~=&-]*)?"
)
DEFAULT_PORTS = {"https": "443", "http": "80"}


def plain_url(url: str) -> WebUrl | None:
    """The parse of a URL in the plain shape above, or None when it is not in that shape."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    scheme, host, port, path = match.group("scheme", "host", "port", "path")
    host, port = host or "", port or ""
    if scheme in DEFAULT_PORTS and (not host or port == DEFAULT_PORTS[scheme]):
        return None
    if port and int(port) > 65535:
        return None
    if not host and path.startswith("//"):
        return None
    if any(segment in (".", "..") for segment in path.split("/")) or "xn--" in host:
        return None
    return _url(url, scheme, host, port=port)


class RecordedWebUrlParser:
    """The WebUrlParser port without a WHATWG parser: plain URLs parse to themselves, the others
    come from RECORDED_WHATWG_PARSES; any other URL fails the test that used it, asking for its
    recording (from AdaWebUrlParser), so the fake never guesses."""

    def parse(self, url: str) -> WebUrl | None:
        if url in RECORDED_WHATWG_PARSES:
            return RECORDED_WHATWG_PARSES[url]
        parsed = plain_url(url)
        if parsed is None:
            raise AssertionError(f"record AdaWebUrlParser().parse({url!r}) in tests.fakes.RECORDED_WHATWG_PARSES")
        return parsed


class InMemoryRateLimitStore:
    """Fixed-window counters in a dictionary, under one lock (the RateLimitStore semantics)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, RateWindow] = {}

    def increment(self, key: str, window: int, now: int, amount: int = 1) -> RateWindow:
        with self.lock:
            counter = self.counters.get(key)
            if counter is None or counter.ends_at <= now:
                counter = RateWindow(amount, now + window)
            else:
                counter = RateWindow(counter.hits + amount, counter.ends_at)
            self.counters[key] = counter
            return counter

    def current(self, key: str, now: int) -> RateWindow | None:
        counter = self.counters.get(key)
        return counter if counter is not None and counter.ends_at > now else None

    def clear(self, key: str) -> None:
        with self.lock:
            self.counters.pop(key, None)

    def purge_expired(self, now: int) -> int:
        with self.lock:
            ended = [key for key, counter in self.counters.items() if counter.ends_at <= now]
            for key in ended:
                del self.counters[key]
            return len(ended)


class ScriptedMetadataFetcher:
    """Client ID metadata documents by URL: a dict body (served as JSON), bytes, or an
    exception to raise; every fetch is recorded."""

    def __init__(self) -> None:
        self.responses: dict[str, Any] = {}
        self.max_age: dict[str, int | None] = {}
        self.fetched: list[str] = []

    def serve(self, url: str, document: Any, *, max_age: int | None = None) -> None:
        self.responses[url] = document
        self.max_age[url] = max_age

    def fetch(self, url: str) -> FetchedDocument:
        self.fetched.append(url)
        response = self.responses.get(url)
        if response is None:
            raise MetadataDocumentUnavailable("the host answered 404")
        if isinstance(response, Exception):
            raise response
        body = response if isinstance(response, bytes) else json.dumps(response).encode()
        return FetchedDocument(body=body, max_age=self.max_age.get(url))


class RecordingAuditTrail:
    """The AuditTrail port: keeps every event, oldest first."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[AuditEvent]:
        return [event for event in self.events if event.event == name]

    def names(self) -> list[str]:
        return [event.event for event in self.events]


class RecordingTelemetry:
    """A Telemetry that keeps the upstream calls reported to it (and counts nothing else)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, float]] = []

    def token_issued(self, grant_type: str) -> None: ...

    def refresh_reuse(self) -> None: ...

    def code_replay(self) -> None: ...

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self.calls.append((provider, operation, outcome, seconds))
