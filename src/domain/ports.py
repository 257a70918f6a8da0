"""Ports: what the domain needs from storage, the upstream identity provider, time and randomness.

Adapters implement these; their failures surface as ``StorageError`` or
``UpstreamIdentityError`` and never as protocol errors.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generator, Literal, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

from .audit import AuditEvent
from .model import (
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
from .tools import ToolContext, ToolResult, ToolSpec


class StorageError(Exception):
    """A storage adapter failed (database unreachable, corrupt row, undecryptable value)."""


class UpstreamIdentityError(Exception):
    """The upstream identity provider failed or answered something unusable.

    ``temporary`` is True for outages (5xx, timeouts, ``temporarily_unavailable``), which
    leave grants intact; False for answers that end the upstream session (``invalid_grant``).
    """

    def __init__(self, message: str, *, temporary: bool = True, upstream_error: str | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.upstream_error = upstream_error


@runtime_checkable
class Clock(Protocol):
    def now(self) -> int:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait (for another process to finish an upstream refresh)."""
        ...


@runtime_checkable
class TokenGenerator(Protocol):
    def generate(self, prefix: str) -> str:
        """A new unguessable value (at least 256 bits of randomness) starting with ``prefix``."""
        ...


@dataclass(frozen=True)
class WebUrl:
    """A URL as a WHATWG-conformant parser (the URL Standard, what browsers implement) reads it."""

    # The URL's serialization ("href"): what a browser navigates to.
    href: str
    # Lower case, without the ":".
    scheme: str
    username: str
    password: str
    # The host's ASCII serialization: punycode labels, canonical IPv4, bracketed IPv6; "" if none.
    hostname: str
    # "" when absent or the scheme's default port.
    port: str
    # The host with its punycode labels decoded (UTS #46 ToUnicode), for display only.
    unicode_hostname: str


@runtime_checkable
class WebUrlParser(Protocol):
    def parse(self, url: str) -> WebUrl | None:
        """The URL as the WHATWG URL Standard parses it, or None when it is not a valid URL."""
        ...


# The client columns that hold keyed hashes of values that never expire (ClientRepository.rehash).
RehashedColumn = Literal["secret_hash", "registration_token_hash"]


@runtime_checkable
class ClientRepository(Protocol):
    def add(self, client: Client) -> None: ...

    def get(self, client_id: str) -> Client | None: ...

    def list(self) -> list[Client]: ...

    def delete(self, client_id: str) -> bool: ...

    def disable(self, client_id: str, now: int) -> bool:
        """Mark the client disabled (keeping the first time if it already was) and revoke its
        unexpired access tokens, in one transaction; its grants and refresh tokens stay (the
        token endpoint refuses a disabled client). False for an unknown client."""
        ...

    def enable(self, client_id: str) -> bool:
        """Clear the client's disabled mark; False for an unknown client."""
        ...

    def is_disabled(self, client_id: str) -> bool:
        """Whether an operator disabled the client, read by the token endpoint in the transaction
        that issues tokens, after the token rows are written: a concurrent ``disable`` then
        either has committed and is seen here, or revokes what this transaction issued (it
        waits for the transaction through the grant's row lock, or runs after it on SQLite).
        False for an unknown client."""
        ...

    def touch(self, client_id: str, now: int) -> None:
        """Record that the client was used (tokens issued), for reaping unused registrations."""
        ...

    def rehash(self, client_id: str, column: RehashedColumn, old_hash: str, new_hash: str) -> bool:
        """Replace the client's stored ``column`` by ``new_hash`` if it still holds ``old_hash``:
        a secret or registration token that matched under an older token hash key, hashed again
        under the current one. One that was replaced meanwhile is left alone (False)."""
        ...

    def delete_unused(self, kind: str, *, never_used_before: int, idle_before: int, now: int) -> int:
        """Delete clients of ``kind`` registered before ``never_used_before`` and never used, or
        last used (or, if never, registered) before ``idle_before`` with no live grant (one not
        revoked with an unexpired token); with them goes everything issued to them. Return how
        many clients went."""
        ...


@dataclass(frozen=True)
class CachedMetadataDocument:
    """A client ID metadata document as last fetched and found valid
    (draft-ietf-oauth-client-id-metadata-document §5.2 caching)."""

    # The client id: the document's https URL.
    client_id: str
    # The JSON object as fetched (validated again on every use, under the policy of the day).
    document: Mapping[str, Any]
    fetched_at: int
    # Used without a new fetch until then (the host's Cache-Control within our bounds).
    fresh_until: int
    # Past fresh_until a failed re-fetch may still fall back to it until then (refresh only);
    # storage may delete it afterwards.
    stale_until: int


@runtime_checkable
class MetadataDocumentStore(Protocol):
    """The cache of client ID metadata documents, shared by every worker and instance. Apart
    from the clients: an expired or deleted document never touches a client or its grants."""

    def get_document(self, client_id: str) -> CachedMetadataDocument | None: ...

    def put_document(self, document: CachedMetadataDocument) -> None:
        """Insert or replace the cached document of ``document.client_id``."""
        ...


@dataclass(frozen=True)
class FetchedDocument:
    """A client ID metadata document's HTTP response: a 200 whose body stayed within the size
    cap. Everything else is a ``MetadataDocumentUnavailable``."""

    body: bytes
    # Seconds the host allows it to be cached, from Cache-Control (max-age, no-store, no-cache)
    # or Expires; None if the response says nothing. The domain bounds it.
    max_age: int | None = None


class MetadataDocumentUnavailable(Exception):
    """A client ID metadata document could not be fetched: a refused URL or address, no answer
    in time, a status other than 200, a redirect, a body past the size cap. The message says
    which, is safe to show to the person signing in, and never includes the body."""


@runtime_checkable
class ClientMetadataFetcher(Protocol):
    def fetch(self, url: str) -> FetchedDocument:
        """GET ``url`` safely (draft-ietf-oauth-client-id-metadata-document §8.6 SSRF): only
        globally routable addresses, no redirects, a size cap and deadlines. Raises
        ``MetadataDocumentUnavailable``."""
        ...


@runtime_checkable
class AuthorizationStore(Protocol):
    """Pending authorizations (consent, upstream transaction) and authorization codes."""

    def add_pending(self, pending: PendingAuthorization) -> None: ...

    def get_pending(self, pending_id: str) -> PendingAuthorization | None: ...

    def attach_upstream(self, pending_id: str, upstream: UpstreamTransaction) -> bool:
        """Attach the upstream transaction once; False if it already had one (consent decided)."""
        ...

    def consume_upstream(self, state_hash: str, now: int) -> PendingAuthorization | None:
        """Atomically mark the pending authorization whose upstream state hash matches as
        consumed and return it; None if unknown, expired or already consumed."""
        ...

    def delete_pending(self, pending_id: str) -> None: ...

    def add_code(self, code: AuthorizationCode) -> None: ...

    def get_code(self, code_hash: str) -> tuple[AuthorizationCode, Grant] | None:
        """The code and its grant, whatever their state; None if unknown."""
        ...

    def redeem_code(self, code_hash: str, now: int) -> bool:
        """Mark the code redeemed in one conditional write; True only for the one caller that
        did (False if it was redeemed before, or is unknown)."""
        ...


@runtime_checkable
class UnitOfWork(Protocol):
    """Transactions spanning every store of one storage backend (they share its connections).

    Use cases that write to more than one store, or read then write, run inside ``atomic()``.
    Races are still decided by the stores' conditional writes (``redeem_code``,
    ``rotate_refresh_token`` …), which hold at any isolation level a backend uses (SQLite
    serialises writers; PostgreSQL runs READ COMMITTED with row locks)."""

    def atomic(self) -> AbstractContextManager[None]:
        """A transaction: what the stores write inside the block is committed when it ends, or
        none of it if it raises; a nested block joins the open transaction and, if it raises,
        undoes only its own writes."""
        ...


class GrantUsage(NamedTuple):
    """A grant and when it was last used: when a token was last issued from it (the code
    exchange or a refresh), None if no token of it is left. Read from the token rows, so that
    nothing is written on the /mcp path; as exact as the access-token lifetime, since a client
    that keeps calling /mcp refreshes at least that often."""

    grant: Grant
    last_used_at: int | None


@runtime_checkable
class GrantStore(Protocol):
    """Grants: what a person consented to, for one client."""

    def add_grant(self, grant: Grant, upstream: UpstreamTokens | None) -> None:
        """Store the grant with its upstream tokens (kept encrypted, apart from the grant), both
        or neither."""
        ...

    def get_grant(self, grant_id: str) -> Grant | None: ...

    def list_grants(self, client_id: str | None = None) -> list[Grant]: ...

    def revoke_grant(self, grant_id: str, now: int) -> None:
        """Revoke the grant and every token issued from it, at once (one transaction)."""
        ...

    def grant_usage(self, *, subject: str | None = None, client_id: str | None = None) -> list[GrantUsage]:
        """The grants not revoked (of ``subject`` and/or ``client_id`` when given), oldest
        first, each with when it was last used (for operators: `grants list`)."""
        ...


@runtime_checkable
class UpstreamTokenStore(Protocol):
    """The upstream provider's tokens of each grant (encrypted at rest) and the lease that lets
    one process at a time refresh them."""

    def get_upstream_tokens(self, grant_id: str) -> UpstreamTokens | None:
        """The grant's upstream tokens, decrypted; None for an unknown grant or none stored."""
        ...

    def update_upstream_tokens(self, grant_id: str, tokens: UpstreamTokens) -> None:
        """Replace the grant's upstream tokens (after an upstream refresh); nothing for an
        unknown grant."""
        ...

    def acquire_upstream_refresh_lock(self, grant_id: str, holder: str, now: int, until: int) -> bool:
        """Take the grant's upstream-refresh lease if it is free or expired (one atomic write, so
        it holds across workers and instances); False if someone else holds it."""
        ...

    def release_upstream_refresh_lock(self, grant_id: str, holder: str) -> None:
        """Give the lease back, if ``holder`` still has it."""
        ...


@runtime_checkable
class AccessTokenStore(Protocol):
    """Access tokens, stored by keyed hash; a lookup is one indexed probe that also returns the
    token's grant (as it is now: revoked or not)."""

    def add_access_token(self, token: AccessToken) -> None: ...

    def get_access_token(self, token_hash: str) -> tuple[AccessToken, Grant] | None:
        """The access token and its grant in one lookup by primary key."""
        ...

    def revoke_access_token(self, token_hash: str, now: int) -> None: ...


@runtime_checkable
class RefreshTokenStore(Protocol):
    """Refresh tokens, stored by keyed hash, with what rotation needs (domain/refresh_tokens.py)."""

    def add_refresh_token(self, token: RefreshToken) -> None: ...

    def get_refresh_token(self, token_hash: str) -> tuple[RefreshToken, Grant] | None: ...

    def current_refresh_generation(self, grant_id: str) -> int | None:
        """The newest generation among the grant's stored refresh tokens; None if it has none."""
        ...

    def rotate_refresh_token(self, token_hash: str, now: int) -> bool:
        """Mark the token rotated and delete the rest of its grant's refresh tokens of its own
        and older generations (the sibling of a retry, the token it replaced), in one transaction
        with the caller's; False if it was rotated before (one conditional write decides)."""
        ...

    def mark_refresh_retried(self, token_hash: str, now: int) -> bool:
        """Record that a rotated token was accepted once more; False if it had been before."""
        ...


# The kinds of record a storage backend exports and imports, parents before children (a grant's
# client before it, a token's grant before the token). Rate-limit counters are not among them.
RECORD_KINDS = (
    "clients",
    "pending_authorizations",
    "grants",
    "authorization_codes",
    "access_tokens",
    "refresh_tokens",
)


class RecordBatch(NamedTuple):
    """Records of one kind (one of RECORD_KINDS) as a storage backend exports and imports them.

    Each row is a tuple of plain values in an order the backends agree on: the SQL backends
    share one (adapters/storage/records.py, EXPORT_COLUMNS), with keyed hashes as stored and
    secrets still sealed, so that either imports what the other exports under the same keys."""

    kind: str
    rows: Sequence[tuple[Any, ...]]


class ImportResult(NamedTuple):
    """What importing a batch did with its rows."""

    # Stored now.
    added: int = 0
    # Left out: the target already holds a record with that key (client id, grant id, hash ...).
    existing: int = 0
    # Left out: the target cannot hold a value of the row (a keyed hash that another backend
    # stored as text, because it is not 64 lower-case hex digits, where this one stores 32 bytes).
    unstorable: int = 0


@dataclass(frozen=True)
class HashKeyUsage:
    """How many stored hashes of one kind were made under one token hash key (``keys status``)."""

    # What the hashes are of (access_tokens, refresh_tokens, authorization_codes,
    # pending_authorizations, client_secrets, registration_tokens).
    kind: str
    # The key's id; None for hashes under none of the keys asked about: made before stored
    # hashes carried key ids, or under a key no longer listed.
    key_id: str | None
    count: int
    # When the last of them expires; None for values that never expire (client secrets,
    # registration tokens), which depend on their key until they are next used.
    last_expires_at: int | None


@runtime_checkable
class StorageAdministration(Protocol):
    """What operating a storage backend needs (the CLI, start-up, housekeeping), apart from the
    stores the use cases read and write."""

    def migrate(self) -> list[int]:
        """Apply the schema migrations the database lacks, in order, with an exclusive lock so
        that instances starting at once do not race; return the versions applied now."""
        ...

    def pending_migrations(self) -> list[int]:
        """The schema versions the database lacks (read without the migration lock)."""
        ...

    def applied_migrations(self) -> list[int]:
        """The schema versions recorded in the database, oldest first."""
        ...

    def ensure_schema(self, *, busy_wait: float) -> bool:
        """True when the schema is current, migrating it first if needed and waiting at most
        ``busy_wait`` seconds for the lock; False (logged, never raised) while the database is
        busy or unreachable, so that a server starts, answers 503 and retries."""
        ...

    def reencrypt(self, *, batch_size: int = 1000) -> int:
        """Re-encrypt every sealed value under the newest encryption key, at most
        ``batch_size`` rows per transaction (the server keeps running; an interrupted run
        leaves every value readable under the keys configured, and running it again finishes
        it); return how many rows were rewritten."""
        ...

    def purge_expired(self, now: int) -> int:
        """Delete expired codes, pending authorizations, tokens and long-revoked or unused
        grants; return how many rows went."""
        ...

    def purge_expired_by_kind(self, now: int) -> dict[str, int]:
        """``purge_expired``, returning how many rows went by kind (table name: grants,
        access_tokens …; every kind it purges, zeros included)."""
        ...

    def database_size(self) -> int:
        """The database's size on disk in bytes (SQLite: the file and its write-ahead log;
        PostgreSQL: pg_database_size), for operators."""
        ...

    def counts(self) -> dict[str, int]:
        """How many rows each kind of record has (clients, grants, tokens …), for operators."""
        ...

    def hash_key_usage(self, key_ids: Sequence[str], now: int) -> list[HashKeyUsage]:
        """The stored hashes that still matter (unexpired, not revoked or used up; every client
        secret and registration token), counted by the token hash key that made them: each id
        of ``key_ids`` with any, and None for the rest. Read-only."""
        ...

    def live_grants(self) -> int:
        """How many grants are not revoked (one COUNT, for /metrics at every scrape)."""
        ...

    def export_records(self, now: int, *, batch_size: int = 1000) -> Generator[RecordBatch, None, None]:
        """Every record that ``purge_expired(now)`` would keep, in batches of at most
        ``batch_size`` rows, kind by kind in the order of RECORD_KINDS, read from one consistent
        snapshot: every client; unexpired pending authorizations; grants not revoked more than
        a retention period ago that are recent or still have an unexpired code or token (each
        with its sealed upstream tokens); and the unexpired codes and tokens of those grants.
        Refresh leases and rate-limit counters are left out."""
        ...

    def import_records(self, batch: RecordBatch) -> ImportResult:
        """Store the batch's records in one transaction, as they are (revoked, redeemed and
        rotated states included; nothing re-encrypted or re-hashed), leaving out those whose
        key is already taken and those whose values this backend cannot hold; their parents
        must already be here."""
        ...

    def close(self) -> None:
        """Release the connections this process holds; the next use opens new ones."""
        ...


class RateWindow(NamedTuple):
    """A rate-limit counter: the hits counted in its window, and when that window ends (seconds
    since the epoch; the counter is gone from then on)."""

    hits: int
    ends_at: int


@runtime_checkable
class RateLimitStore(Protocol):
    """Fixed-window hit counters for the rate limits, shared by every worker and instance that
    uses the same storage (one row per live key; what a rate limit is keyed by is chosen by the
    HTTP adapter, so keys are arbitrary strings, possibly chosen by a stranger: a store may keep
    only a fixed-size digest of each).

    Each method is one atomic statement, e.g. in SQL (SQLite >= 3.35 and PostgreSQL alike)::

        INSERT INTO counters (key, hits, ends_at) VALUES (:key, :amount, :now + :window)
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN counters.ends_at > :now THEN counters.hits + :amount ELSE :amount END,
            ends_at = CASE WHEN counters.ends_at > :now THEN counters.ends_at ELSE :now + :window END
        RETURNING hits, ends_at
    """

    def increment(self, key: str, window: int, now: int, amount: int = 1) -> RateWindow:
        """Add ``amount`` to the counter of ``key`` if its window is still open at ``now``,
        otherwise start a new window ``[now, now + window)`` at ``amount``; atomically (two
        concurrent increments never both see the same count); return the counter afterwards."""
        ...

    def current(self, key: str, now: int) -> RateWindow | None:
        """The counter of ``key`` if its window is open at ``now``; None otherwise."""
        ...

    def clear(self, key: str) -> None:
        """Forget the counter of ``key``."""
        ...

    def purge_expired(self, now: int) -> int:
        """Delete every counter whose window ended at or before ``now``; return how many went."""
        ...


@runtime_checkable
class IdentityProvider(Protocol):
    """An upstream OpenID Connect provider the person signs in with."""

    name: str

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        """Where to send the browser to sign in (PKCE S256 challenge, opaque state, nonce)."""
        ...

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        """Redeem the upstream code; validate the ID token (nonce included)."""
        ...

    def describe_error(self, error: str, description: str | None) -> str:
        """A sentence for the person (and the operator) about an error the provider sent to the
        callback; never echoes the description's free text (anyone can write the query)."""
        ...

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        """Use an upstream refresh token; raise ``UpstreamIdentityError(temporary=False)`` when
        the upstream session is over."""
        ...

    def identity_after_refresh(self, tokens: UpstreamTokens) -> UpstreamIdentity:
        """Who the freshly refreshed ``tokens`` belong to now, with the claims the access policy
        reads: from the refresh response's ID token, else the userinfo endpoint (Entra ID: group
        membership from Microsoft Graph when the token does not carry it). Raise
        ``UpstreamIdentityError`` when the claims cannot be read (``temporary`` for outages)."""
        ...


@runtime_checkable
class Toolset(Protocol):
    """A group of MCP tools enabled together by configuration (TOOLSETS)."""

    name: str

    def tools(self) -> Sequence[ToolSpec]: ...

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        """Run one of this toolset's tools; bad arguments and upstream failures are results with
        ``is_error`` set, not exceptions."""
        ...


@runtime_checkable
class AuditTrail(Protocol):
    """Where security events go (issue 11 §3; the events in ``domain/audit.py``). Recording must
    not fail the request: an adapter that cannot write reports that and carries on."""

    def record(self, event: AuditEvent) -> None: ...


@runtime_checkable
class Telemetry(Protocol):
    """Counts for operators' metrics (issue 11 §4), separate from the audit trail: how many, not
    who. Recording must be cheap and must never raise into the use case."""

    def token_issued(self, grant_type: str) -> None:
        """A token response was issued by the ``grant_type`` grant."""
        ...

    def refresh_reuse(self) -> None:
        """An already-rotated refresh token was presented (the grant is revoked)."""
        ...

    def code_replay(self) -> None:
        """An already-redeemed authorization code was presented (the grant is revoked)."""
        ...

    def upstream_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """A call to the upstream identity provider ended (``outcome``: ok, or an error kind)."""
        ...
