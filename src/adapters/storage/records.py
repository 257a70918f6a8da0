"""Records as every SQL backend stores them: row <-> model, keyed hashes packed to bytes, scopes
and JSON as text, upstream secrets sealed (Fernet). SQLite and PostgreSQL share the tables' names,
columns and this encoding; only their SQL dialect and connections differ.

Column lists are selected in this order and mapped by position; ``*_row`` functions give the
parameters of an INSERT in the same order.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any, Callable, Iterable, NamedTuple

from ...domain.model import (
    AccessToken,
    AuthorizationCode,
    AuthorizationRequest,
    Client,
    Grant,
    PendingAuthorization,
    RefreshToken,
    UpstreamTokens,
    UpstreamTransaction,
)
from ...domain.ports import CachedMetadataDocument, HashKeyUsage, StorageError
from .crypto import SecretBox

# Revoked grants stay a day so a late replay still meets "revoked", not "unknown".
REVOKED_GRANT_RETENTION = 24 * 3600
# A grant with no code or token left is kept this long (default: ServerPolicy.refresh_token_ttl).
DEFAULT_GRANT_RETENTION = 30 * 24 * 3600

# Every column that holds ciphertext, by table and primary key (for key rotation).
ENCRYPTED_COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pending_authorizations", "pending_id", ("upstream_code_verifier_enc", "upstream_nonce_enc")),
    ("grant_upstream_tokens", "grant_id", ("tokens_enc",)),
)

def hash_key(value: str) -> bytes | str:
    """A keyed hash as stored: the 32 bytes of the domain's 64 lower-case hex digits (half the
    size in every key, index and page that holds it). Any other string is stored as the text
    it is, so every value round-trips; SQLite never finds a text equal to a blob."""
    if len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return value
        # fromhex() also accepts upper case and spaces: only the canonical form is packed.
        if raw.hex() == value:
            return raw
    return value


def hash_text(value: bytes | str) -> str:
    """The domain's hex string for a stored hash (the inverse of ``hash_key``)."""
    return value.hex() if isinstance(value, bytes) else value


def split_scopes(text: str) -> tuple[str, ...]:
    # RFC 6749 §3.3: scope tokens never contain a space, so the scope string is a safe encoding.
    return tuple(text.split())


def load_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StorageError("a stored JSON value is corrupt") from exc


def client_metadata(client: Client) -> str:
    return json.dumps(
        {
            "redirect_uris": list(client.redirect_uris),
            "grant_types": list(client.grant_types),
            "response_types": list(client.response_types),
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "client_name": client.client_name,
            "scope": client.scope,
            "extra_metadata": dict(client.extra_metadata),
        }
    )


# registration_token_hash (RFC 7592; SQLite migration 6, PostgreSQL 2) and disabled_at (SQLite
# migration 7, PostgreSQL 3) come last, so that the columns before them keep their positions.
CLIENT_COLUMNS = (
    "client_id, secret_hash, metadata, kind, issued_at, last_used_at, registration_token_hash, disabled_at"
)


def client_from_row(row: tuple[Any, ...]) -> Client:
    metadata = load_json(row[2])
    return Client(
        client_id=row[0],
        redirect_uris=tuple(metadata["redirect_uris"]),
        grant_types=tuple(metadata["grant_types"]),
        response_types=tuple(metadata["response_types"]),
        token_endpoint_auth_method=metadata["token_endpoint_auth_method"],
        issued_at=row[4],
        client_name=metadata.get("client_name"),
        scope=metadata.get("scope"),
        # Read-only: the same Client may be handed out again (SqliteClientRepository.get).
        extra_metadata=MappingProxyType(metadata.get("extra_metadata") or {}),
        secret_hash=row[1],
        kind=row[3],
        last_used_at=row[5],
        registration_token_hash=row[6],
        disabled_at=row[7],
    )


PENDING_COLUMNS = (
    "pending_id, client_id, redirect_uri, scopes, resource, code_challenge, code_challenge_method, state, "
    "csrf_token_hash, browser_binding_hash, upstream_state_hash, upstream_code_verifier_enc, "
    "upstream_nonce_enc, created_at, expires_at, consumed_at"
)


def pending_from_row(row: tuple[Any, ...], box: SecretBox) -> PendingAuthorization:
    upstream = None
    if row[10] is not None:
        upstream = UpstreamTransaction(
            state_hash=hash_text(row[10]), code_verifier=box.decrypt(row[11]), nonce=box.decrypt(row[12])
        )
    return PendingAuthorization(
        pending_id=row[0],
        request=AuthorizationRequest(
            client_id=row[1],
            redirect_uri=row[2],
            scopes=split_scopes(row[3]),
            resource=row[4],
            code_challenge=row[5],
            code_challenge_method=row[6],
            state=row[7],
        ),
        csrf_token_hash=row[8],
        browser_binding_hash=row[9],
        upstream=upstream,
        created_at=row[13],
        expires_at=row[14],
        consumed_at=row[15],
    )


def seal_upstream(tokens: UpstreamTokens, box: SecretBox) -> str:
    return box.encrypt(
        json.dumps(
            {
                "access_token": tokens.access_token,
                "expires_at": tokens.expires_at,
                "refresh_token": tokens.refresh_token,
                "scope": tokens.scope,
                "id_token": tokens.id_token,
            }
        )
    )


def open_upstream(ciphertext: str | None, box: SecretBox) -> UpstreamTokens | None:
    if ciphertext is None:
        return None
    fields = load_json(box.decrypt(ciphertext))
    return UpstreamTokens(
        access_token=fields["access_token"],
        expires_at=fields["expires_at"],
        refresh_token=fields.get("refresh_token"),
        scope=fields.get("scope"),
        id_token=fields.get("id_token"),
    )


# The encrypted upstream tokens live in grant_upstream_tokens: only get_upstream_tokens reads
# (and decrypts) them, and grant rows stay small for the token lookups that join them.
GRANT_COLUMNS = "g.grant_id, g.client_id, g.subject, g.claims, g.scopes, g.resource, g.created_at, g.revoked_at"


def grant_from_row(row: tuple[Any, ...]) -> Grant:
    return Grant(
        grant_id=row[0],
        client_id=row[1],
        subject=row[2],
        claims=load_json(row[3]),
        scopes=split_scopes(row[4]),
        resource=row[5],
        created_at=row[6],
        revoked_at=row[7],
    )


CODE_COLUMNS = (
    "c.code_hash, c.grant_id, c.client_id, c.redirect_uri, c.code_challenge, c.code_challenge_method, "
    "c.resource, c.scopes, c.issued_at, c.expires_at, c.redeemed_at"
)
CODE_WIDTH = 11


def code_from_row(row: tuple[Any, ...]) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        redirect_uri=row[3],
        code_challenge=row[4],
        code_challenge_method=row[5],
        resource=row[6],
        scopes=split_scopes(row[7]),
        issued_at=row[8],
        expires_at=row[9],
        redeemed_at=row[10],
    )


ACCESS_COLUMNS = "a.token_hash, a.grant_id, a.client_id, a.scopes, a.resource, a.issued_at, a.expires_at, a.revoked_at"
ACCESS_WIDTH = 8
# The copy of its grant each access-token row holds (migration 3): selected after a.grant_id
# (the token's own column), they are in the order of GRANT_COLUMNS, which grant_from_row() maps.
ACCESS_GRANT_COLUMNS = (
    "a.grant_client_id, a.grant_subject, a.grant_claims, a.grant_scopes, a.grant_resource, a.grant_created_at, "
    "a.grant_revoked_at"
)


def access_token_from_row(row: tuple[Any, ...]) -> AccessToken:
    return AccessToken(
        token_hash=hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        scopes=split_scopes(row[3]),
        resource=row[4],
        issued_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
    )


REFRESH_COLUMNS = (
    "r.token_hash, r.grant_id, r.client_id, r.generation, r.scopes, r.resource, r.issued_at, r.expires_at, "
    "r.rotated_at, r.retried_at, r.revoked_at"
)
REFRESH_WIDTH = 11


def refresh_token_from_row(row: tuple[Any, ...]) -> RefreshToken:
    return RefreshToken(
        token_hash=hash_text(row[0]),
        grant_id=row[1],
        client_id=row[2],
        generation=row[3],
        scopes=split_scopes(row[4]),
        resource=row[5],
        issued_at=row[6],
        expires_at=row[7],
        rotated_at=row[8],
        retried_at=row[9],
        revoked_at=row[10],
    )


# -- model -> INSERT parameters, in the column order above ---------------------------------------

# How a backend stores a keyed hash: hash_key (bytes, or text for anything else) or stored_hash.
HashEncoder = Callable[[str], "bytes | str"]


def client_row(client: Client) -> tuple[Any, ...]:
    return (
        client.client_id,
        client.secret_hash,
        client_metadata(client),
        client.kind,
        client.issued_at,
        client.last_used_at,
        client.registration_token_hash,
        client.disabled_at,
    )


def pending_row(pending: PendingAuthorization, box: SecretBox, *, encode: HashEncoder = hash_key) -> tuple[Any, ...]:
    request, upstream = pending.request, pending.upstream
    return (
        pending.pending_id,
        request.client_id,
        request.redirect_uri,
        " ".join(request.scopes),
        request.resource,
        request.code_challenge,
        request.code_challenge_method,
        request.state,
        pending.csrf_token_hash,
        pending.browser_binding_hash,
        None if upstream is None else encode(upstream.state_hash),
        None if upstream is None else box.encrypt(upstream.code_verifier),
        None if upstream is None else box.encrypt(upstream.nonce),
        pending.created_at,
        pending.expires_at,
        pending.consumed_at,
    )


def grant_row(grant: Grant) -> tuple[Any, ...]:
    return (
        grant.grant_id,
        grant.client_id,
        grant.subject,
        json.dumps(dict(grant.claims)),
        " ".join(grant.scopes),
        grant.resource,
        grant.created_at,
        grant.revoked_at,
    )


def code_row(code: AuthorizationCode, *, encode: HashEncoder = hash_key) -> tuple[Any, ...]:
    return (
        encode(code.code_hash),
        code.grant_id,
        code.client_id,
        code.redirect_uri,
        code.code_challenge,
        code.code_challenge_method,
        code.resource,
        " ".join(code.scopes),
        code.issued_at,
        code.expires_at,
        code.redeemed_at,
    )


def access_token_row(token: AccessToken, *, encode: HashEncoder = hash_key) -> tuple[Any, ...]:
    return (
        encode(token.token_hash),
        token.grant_id,
        token.client_id,
        " ".join(token.scopes),
        token.resource,
        token.issued_at,
        token.expires_at,
        token.revoked_at,
    )


def refresh_token_row(token: RefreshToken, *, encode: HashEncoder = hash_key) -> tuple[Any, ...]:
    return (
        encode(token.token_hash),
        token.grant_id,
        token.client_id,
        token.generation,
        " ".join(token.scopes),
        token.resource,
        token.issued_at,
        token.expires_at,
        token.rotated_at,
        token.retried_at,
        token.revoked_at,
    )


# -- client ID metadata documents (a cache, apart from the clients) ------------------------------

DOCUMENT_COLUMNS = "client_id, document, fetched_at, fresh_until, stale_until"


def document_row(document: CachedMetadataDocument) -> tuple[Any, ...]:
    return (
        document.client_id,
        # ASCII-only JSON (the default): a lone surrogate or a NUL in a string is stored as its
        # \u escape, which every backend's text column holds (PostgreSQL's text holds no NUL).
        json.dumps(dict(document.document)),
        document.fetched_at,
        document.fresh_until,
        document.stale_until,
    )


def document_from_row(row: tuple[Any, ...]) -> CachedMetadataDocument:
    document = load_json(row[1])
    if not isinstance(document, dict):
        raise StorageError("a stored client metadata document is not a JSON object")
    return CachedMetadataDocument(
        client_id=row[0], document=document, fetched_at=row[2], fresh_until=row[3], stale_until=row[4]
    )


# -- rate-limit counters ------------------------------------------------------------------------


def counter_key(key: str) -> bytes:
    """What a key is stored as: its SHA-256, so that a row has the same size whatever a
    stranger put in the client id or address the key is made of."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


# -- a record joined with its grant (the grant's columns follow the record's) ------------------


def code_and_grant(row: tuple[Any, ...]) -> tuple[AuthorizationCode, Grant]:
    return code_from_row(row[:CODE_WIDTH]), grant_from_row(row[CODE_WIDTH:])


def access_token_and_grant(row: tuple[Any, ...]) -> tuple[AccessToken, Grant]:
    return access_token_from_row(row[:ACCESS_WIDTH]), grant_from_row(row[ACCESS_WIDTH:])


def refresh_token_and_grant(row: tuple[Any, ...]) -> tuple[RefreshToken, Grant]:
    return refresh_token_from_row(row[:REFRESH_WIDTH]), grant_from_row(row[REFRESH_WIDTH:])


# -- decoded clients -----------------------------------------------------------------------------

# How many decoded clients a ClientDecoder keeps (per worker process); past it, it starts over.
DECODED_CLIENTS = 1024


class ClientDecoder:
    """The Client decoded from each stored row, keyed by the whole row: a repository reads the
    row every time (a deleted or changed client is seen at once), but an unchanged row is not
    decoded again. Decoding (the JSON metadata and the dataclass) costs more than the read, on
    every token, revocation and introspection request."""

    def __init__(self) -> None:
        self._decoded: dict[tuple[Any, ...], Client] = {}

    def __len__(self) -> int:
        return len(self._decoded)

    def decode(self, row: tuple[Any, ...]) -> Client:
        client = self._decoded.get(row)
        if client is None:
            client = client_from_row(row)
            if len(self._decoded) >= DECODED_CLIENTS:
                self._decoded.clear()
            self._decoded[row] = client
        return client


# -- keyed hashes as bytes only (a backend whose hash columns hold 32 bytes) --------------------


def hash_bytes(value: str) -> bytes | None:
    """The 32 bytes of a keyed hash (the domain's 64 lower-case hex digits); None for any other
    string, which no such column can hold and so no lookup can find."""
    key = hash_key(value)
    return key if isinstance(key, bytes) else None


def stored_hash(value: str) -> bytes:
    """``hash_bytes`` for a value about to be stored: anything but a keyed hash is an error."""
    key = hash_bytes(value)
    if key is None:
        raise StorageError("a value stored as a keyed hash is not 64 lower-case hex digits")
    return key


# -- records as copied between storages (StorageAdministration.export_records / import_records) --

# Each kind's row, in RECORD_KINDS order: the table's columns as above, keyed hashes as the
# exporting backend stores them (32 bytes, or text for a value that is not a keyed hash, which
# only SQLite keeps), sealed values still sealed (both storages use the same ENCRYPTION_KEYS).
# A grant's row ends with its upstream tokens (tokens_enc and their expiry, or two NULLs); an
# access token's row ends with the copy of its grant that it carries (migration 3); a client's
# row carries its registration_token_hash (SQLite migration 6, PostgreSQL 2), so that RFC 7592
# management of a copied client keeps working, and its disabled_at (a disabled client stays so). The client metadata document cache is not
# copied: it is a cache, which the target fills again from the documents' hosts on first use
# (RECORD_KINDS has no kind for it).
GRANT_UPSTREAM_COLUMNS = "u.tokens_enc, u.expires_at"
EXPORT_COLUMNS: dict[str, str] = {
    "clients": CLIENT_COLUMNS,
    "pending_authorizations": PENDING_COLUMNS,
    "grants": f"{GRANT_COLUMNS}, {GRANT_UPSTREAM_COLUMNS}",
    "authorization_codes": CODE_COLUMNS,
    "access_tokens": f"{ACCESS_COLUMNS}, {ACCESS_GRANT_COLUMNS}",
    "refresh_tokens": REFRESH_COLUMNS,
}
GRANT_WIDTH = 8
# Where each kind's row holds a keyed hash (None allowed: a pending authorization's upstream
# state before consent).
HASH_POSITIONS: dict[str, tuple[int, ...]] = {
    "pending_authorizations": (10,),
    "authorization_codes": (0,),
    "access_tokens": (0,),
    "refresh_tokens": (0,),
}


def export_queries(param: Callable[[str], str]) -> dict[str, str]:
    """The SELECT of each kind for export_records, given how the backend spells a named
    parameter: ``now``, ``revoked_before`` (now - REVOKED_GRANT_RETENTION) and
    ``unused_before`` (now - the grant retention). What they select is what purge_expired(now)
    keeps: every client, unexpired pending authorizations, grants not revoked before
    ``revoked_before`` that were created after ``unused_before`` or still have an unexpired code
    or token, and the unexpired codes and tokens of such grants (an unexpired one makes its
    grant kept)."""
    now, revoked_before, unused_before = param("now"), param("revoked_before"), param("unused_before")
    kept = f"(g.revoked_at IS NULL OR g.revoked_at > {revoked_before})"

    def live(table: str) -> str:
        return f"EXISTS (SELECT 1 FROM {table} t WHERE t.grant_id = g.grant_id AND t.expires_at > {now})"

    return {
        "clients": f"SELECT {CLIENT_COLUMNS} FROM clients",
        "pending_authorizations": f"SELECT {PENDING_COLUMNS} FROM pending_authorizations WHERE expires_at > {now}",
        "grants": f"""
            SELECT {EXPORT_COLUMNS['grants']}
            FROM grants g LEFT JOIN grant_upstream_tokens u ON u.grant_id = g.grant_id
            WHERE {kept} AND (g.created_at > {unused_before} OR {live('authorization_codes')}
                OR {live('access_tokens')} OR {live('refresh_tokens')})
        """,
        "authorization_codes": f"""
            SELECT {EXPORT_COLUMNS['authorization_codes']}
            FROM authorization_codes c JOIN grants g ON g.grant_id = c.grant_id
            WHERE c.expires_at > {now} AND {kept}
        """,
        "access_tokens": f"""
            SELECT {EXPORT_COLUMNS['access_tokens']}
            FROM access_tokens a JOIN grants g ON g.grant_id = a.grant_id
            WHERE a.expires_at > {now} AND {kept}
        """,
        "refresh_tokens": f"""
            SELECT {EXPORT_COLUMNS['refresh_tokens']}
            FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id
            WHERE r.expires_at > {now} AND {kept}
        """,
    }


def insert_columns(kind: str) -> str:
    """The columns an imported row of ``kind`` fills, in its order (a grant's own only)."""
    columns = GRANT_COLUMNS if kind == "grants" else EXPORT_COLUMNS[kind]
    return ", ".join(column.strip().partition(".")[2] or column.strip() for column in columns.split(","))


# -- grants list (GrantStore.grant_usage) -------------------------------------------------------


def select_grant_usage(*, optional: str, value: str) -> str:
    """Live grants with the time a token was last issued from each (the newest access or refresh
    token left; issued_at is not indexed, but each grant has a few rows at most), optionally of
    one subject and of one client: the parameters are (subject, subject, client, client), each
    pair written as the backend's placeholder tested for NULL (``optional``) and ``value``."""
    return f"""
    SELECT {GRANT_COLUMNS}, (
        SELECT max(issued_at) FROM (
            SELECT max(a.issued_at) AS issued_at FROM access_tokens a WHERE a.grant_id = g.grant_id
            UNION ALL SELECT max(r.issued_at) FROM refresh_tokens r WHERE r.grant_id = g.grant_id
        ) AS issued
    )
    FROM grants g
    WHERE g.revoked_at IS NULL
        AND ({optional} IS NULL OR g.subject = {value}) AND ({optional} IS NULL OR g.client_id = {value})
    ORDER BY g.created_at, g.grant_id
"""


# -- keys status (StorageAdministration.hash_key_usage) ------------------------------------------


class HashedValues(NamedTuple):
    """One kind of stored hash: its column, which rows still matter (``{now}`` stands for the
    backend's placeholder of the current time), and when they expire (None: never)."""

    kind: str
    table: str
    column: str
    # 32 bytes (the token tables) or 64 hex digits (client and pending-authorization hashes).
    binary: bool
    live: str
    expires: str | None


HASHED_VALUES = (
    HashedValues(
        "access_tokens", "access_tokens", "token_hash", True,
        "revoked_at IS NULL AND grant_revoked_at IS NULL AND expires_at > {now}", "expires_at",
    ),
    # Rotated tokens too: the one a grant's current generation replaced is kept for reuse
    # detection, which needs the key that hashed it.
    HashedValues(
        "refresh_tokens", "refresh_tokens", "token_hash", True,
        "revoked_at IS NULL AND expires_at > {now} AND EXISTS "
        "(SELECT 1 FROM grants g WHERE g.grant_id = refresh_tokens.grant_id AND g.revoked_at IS NULL)",
        "expires_at",
    ),
    HashedValues(
        "authorization_codes", "authorization_codes", "code_hash", True,
        "redeemed_at IS NULL AND expires_at > {now}", "expires_at",
    ),
    # Its CSRF token and browser binding are hashed when it starts; the upstream state (under
    # the same key or a newer one) when the person approves.
    HashedValues(
        "pending_authorizations", "pending_authorizations", "csrf_token_hash", False,
        "consumed_at IS NULL AND expires_at > {now}", "expires_at",
    ),
    HashedValues("client_secrets", "clients", "secret_hash", False, "secret_hash IS NOT NULL", None),
    HashedValues(
        "registration_tokens", "clients", "registration_token_hash", False,
        "registration_token_hash IS NOT NULL", None,
    ),
)


def hash_key_usage(
    fetchall: Callable[[str], Iterable[tuple[Any, ...]]], *, binary_key_id: str, text_key_id: str, key_ids: str, now: str
) -> list[HashKeyUsage]:
    """StorageAdministration.hash_key_usage, one query per kind of HASHED_VALUES run by
    ``fetchall``, given the backend's SQL for a hash's key id (its last four bytes: expressions of
    ``{column}`` for 32 bytes and for hex text), for "is one of the listed ids" (of ``{key_id}``)
    and for the current time (the backend binds both)."""
    usage = []
    for values in HASHED_VALUES:
        row_key = (binary_key_id if values.binary else text_key_id).format(column=values.column)
        listed = key_ids.format(key_id=row_key)
        expires = f"max({values.expires})" if values.expires else "NULL"
        query = (
            f"SELECT CASE WHEN {listed} THEN {row_key} END AS key_id, count(*), {expires} "
            f"FROM {values.table} WHERE {values.live.format(now=now)} GROUP BY 1"
        )
        usage += [
            HashKeyUsage(values.kind, key_id, int(count), None if last is None else int(last))
            for key_id, count, last in fetchall(query)
        ]
    return usage
