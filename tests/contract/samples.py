"""Sample records for the storage tests: every field set, in the shapes the services write
(hashes are 64 lower-case hex digits, as TokenHasher makes them)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from mcp_oauth_bridge.domain.model import (
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
from mcp_oauth_bridge.domain.ports import CachedMetadataDocument

def h(label: str) -> str:
    """A keyed hash as the domain makes them (64 lower-case hex digits), named by ``label``."""
    return hashlib.sha256(label.encode()).hexdigest()


NOW = 1_700_000_000
HOUR = 3600
DAY = 24 * HOUR
RESOURCE = "https://auth.example.com/mcp"
REDIRECT_URI = "http://127.0.0.1:33418/callback"
# RFC 7636 Appendix B.
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def make_client(client_id: str = "client-1", **changes: Any) -> Client:
    client = Client(
        client_id=client_id,
        redirect_uris=(REDIRECT_URI, "https://app.example/cb"),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        token_endpoint_auth_method="client_secret_post",
        issued_at=NOW,
        client_name="Example Client",
        scope="mcp:read mcp:write",
        extra_metadata={"logo_uri": "https://app.example/logo.png", "contacts": ["ops@app.example"], "x": {"n": 1}},
        secret_hash="c" * 64,
        kind="registered",
        last_used_at=None,
    )
    return replace(client, **changes)


def make_pending(pending_id: str = "pending-1", client_id: str = "client-1", **changes: Any) -> PendingAuthorization:
    pending = PendingAuthorization(
        pending_id=pending_id,
        request=AuthorizationRequest(
            client_id=client_id,
            redirect_uri=REDIRECT_URI,
            scopes=("mcp:read", "mcp:write"),
            resource=RESOURCE,
            code_challenge=CHALLENGE,
            code_challenge_method="S256",
            state="client-state-é",
        ),
        csrf_token_hash="f" * 64,
        browser_binding_hash="b" * 64,
        created_at=NOW,
        expires_at=NOW + 600,
    )
    return replace(pending, **changes)


def make_upstream(state_hash: str = h("state-1")) -> UpstreamTransaction:
    return UpstreamTransaction(state_hash=state_hash, code_verifier="mob_pv_" + "v" * 43, nonce="mob_n_" + "n" * 43)


def make_upstream_tokens(**changes: Any) -> UpstreamTokens:
    tokens = UpstreamTokens(
        access_token="upstream-access-token",
        expires_at=NOW + HOUR,
        refresh_token="upstream-refresh-token",
        scope="openid profile offline_access",
        id_token="header.payload.signature",
    )
    return replace(tokens, **changes)


def make_grant(grant_id: str = "grant-1", client_id: str = "client-1", **changes: Any) -> Grant:
    grant = Grant(
        grant_id=grant_id,
        client_id=client_id,
        subject="user-1",
        claims={"preferred_username": "alice", "email": "alice@example.com", "groups": ["a", "b"], "n": 1},
        scopes=("mcp:read", "mcp:write"),
        resource=RESOURCE,
        created_at=NOW,
    )
    return replace(grant, **changes)


def make_code(code_hash: str = h("code-hash-1"), grant_id: str = "grant-1", **changes: Any) -> AuthorizationCode:
    code = AuthorizationCode(
        code_hash=code_hash,
        grant_id=grant_id,
        client_id="client-1",
        redirect_uri=REDIRECT_URI,
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
        resource=RESOURCE,
        scopes=("mcp:read",),
        issued_at=NOW,
        expires_at=NOW + 60,
    )
    return replace(code, **changes)


def make_access_token(token_hash: str = h("at-hash-1"), grant_id: str = "grant-1", **changes: Any) -> AccessToken:
    token = AccessToken(
        token_hash=token_hash,
        grant_id=grant_id,
        client_id="client-1",
        scopes=("mcp:read",),
        resource=RESOURCE,
        issued_at=NOW,
        expires_at=NOW + HOUR,
    )
    return replace(token, **changes)


def make_refresh_token(token_hash: str = h("rt-hash-1"), grant_id: str = "grant-1", **changes: Any) -> RefreshToken:
    token = RefreshToken(
        token_hash=token_hash,
        grant_id=grant_id,
        client_id="client-1",
        generation=0,
        scopes=("mcp:read", "mcp:write"),
        resource=RESOURCE,
        issued_at=NOW,
        expires_at=NOW + 30 * DAY,
    )
    return replace(token, **changes)


CIMD_URL = "https://app.example/oauth/client-metadata.json"


def make_document(client_id: str = CIMD_URL, **changes: Any) -> CachedMetadataDocument:
    """A client ID metadata document as the fetcher found it: JSON of every type, non-ASCII
    text, and a lone surrogate (json.loads makes one of a ``\\ud800`` escape)."""
    document = CachedMetadataDocument(
        client_id=client_id,
        document={
            "client_id": client_id,
            "client_name": "Zoë's app \u2014 🚀",
            "redirect_uris": ["https://app.example/cb", "http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "token_endpoint_auth_method": "none",
            "logo_uri": None,
            "nested": {"list": [1, 2.5, True, False, None, {"deep": "\ud800 \u0000"}], "empty": {}},
        },
        fetched_at=NOW,
        fresh_until=NOW + HOUR,
        # Past 2**31: times are 64-bit on every backend.
        stale_until=2**31 + 7 * DAY,
    )
    return replace(document, **changes)
