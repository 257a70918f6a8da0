"""An upstream refresh that times out is not a revocation: the provider may have rotated its
refresh token in the answer that never arrived, so the grant stays, the client gets 503, and the
call ends within the adapter's deadline, well inside the per-grant lease (so no other request
spends the same upstream refresh token meanwhile)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from mcp_oauth_bridge.adapters.identity.oidc import OidcIdentityProvider
from mcp_oauth_bridge.domain.errors import TemporarilyUnavailable
from mcp_oauth_bridge.domain.model import Grant, UpstreamTokens
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.services.upstream import LEASE_SECONDS, UpstreamTokenService
from tests.fakes import FixedClock, InMemoryStorage, SequentialTokenGenerator

NOW = 1_700_000_000
TRICKLE_SECONDS = 0.3


class TricklingProvider(ThreadingHTTPServer):
    """An OpenID provider on loopback whose token endpoint answers 200 and then sends its JSON
    body one byte every TRICKLE_SECONDS (a provider in trouble, or a slow path to it)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token_requests = 0

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: TricklingProvider

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, body: bytes, *, trickle: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for index in range(len(body)):
            self.wfile.write(body[index : index + 1] if trickle else body[index:])
            self.wfile.flush()
            if not trickle:
                return
            time.sleep(TRICKLE_SECONDS)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        issuer = self.server.issuer
        document = {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
        }
        self._send(json.dumps(document).encode(), trickle=False)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.token_requests += 1
        rotated = {"access_token": "new-at", "refresh_token": "rotated-rt", "expires_in": 3600, "token_type": "Bearer"}
        try:
            self._send(json.dumps(rotated).encode(), trickle=True)
        except OSError:
            pass  # the client gave up


@pytest.fixture
def trickling() -> Iterator[TricklingProvider]:
    server = TricklingProvider()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def provider(server: TricklingProvider, timeout: float) -> OidcIdentityProvider:
    return OidcIdentityProvider(
        issuer=server.issuer,
        client_id="bridge",
        client_secret="bridge-secret",
        redirect_uri="http://127.0.0.1:8000/oauth/callback",
        clock=FixedClock(NOW),
        timeout=timeout,
    )


def test_a_trickling_token_answer_is_cut_off_at_the_deadline_as_a_temporary_failure(
    trickling: TricklingProvider,
) -> None:
    idp = provider(trickling, timeout=1.0)
    idp.metadata()
    started = time.monotonic()
    with pytest.raises(UpstreamIdentityError) as caught:
        idp.refresh("the-upstream-refresh-token")
    elapsed = time.monotonic() - started
    assert caught.value.temporary is True
    # The whole answer would take ~25 s; the call ends at its deadline (plus one read's wait).
    assert elapsed < 1.0 + 1.0 + 2.0, elapsed
    assert "the-upstream-refresh-token" not in str(caught.value)


def test_the_default_deadline_ends_a_call_well_inside_the_lease() -> None:
    idp = OidcIdentityProvider(
        issuer="https://idp.example",
        client_id="bridge",
        client_secret="bridge-secret",
        redirect_uri="https://bridge.example/oauth/callback",
        clock=FixedClock(NOW),
    )
    # Connect, then the whole answer within the deadline, plus at most one more read's wait.
    worst_case = idp.timeout + idp.timeout
    assert worst_case < LEASE_SECONDS


def test_a_timed_out_upstream_refresh_keeps_the_grant_and_is_retried_with_the_same_token(
    trickling: TricklingProvider,
) -> None:
    clock = FixedClock(NOW)
    storage = InMemoryStorage()
    grant = Grant(
        grant_id="grant-1", client_id="client-1", subject="user-1", claims={}, scopes=("User.Read",),
        resource="https://bridge.example/mcp", created_at=NOW,
    )
    storage.add_grant(grant, UpstreamTokens(access_token="old-at", expires_at=NOW, refresh_token="upstream-rt"))
    service = UpstreamTokenService(
        grants=storage, upstream_tokens=storage, identity_provider=provider(trickling, timeout=1.0), clock=clock, tokens=SequentialTokenGenerator()
    )
    with pytest.raises(TemporarilyUnavailable):
        service.access_token("grant-1")
    kept = storage.get_grant("grant-1")
    assert kept is not None and not kept.is_revoked
    assert storage.get_upstream_tokens("grant-1") == UpstreamTokens(
        access_token="old-at", expires_at=NOW, refresh_token="upstream-rt"
    )
    # The lease is free again: the next request tries again at once.
    assert storage.refresh_locks == {}
    assert trickling.token_requests == 1
    with pytest.raises(TemporarilyUnavailable):
        service.access_token("grant-1")
    assert trickling.token_requests == 2
