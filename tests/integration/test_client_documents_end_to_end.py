"""Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document, MCP 2026-07-28)
end to end, over real sockets against ``mcp-oauth-bridge serve`` with 2 gunicorn workers.

1. The official MCP Python SDK client with ``client_metadata_url``: it goes from 401 to a
   ``whoami`` result by presenting its document's URL as its client id (no registration), then
   refreshes. The SDK only accepts an https URL with a path, so the document is served over
   https on loopback under ``localhost``, with a certificate from a test CA that the server
   process trusts through OpenSSL's ``SSL_CERT_FILE``; ``CIMD_ALLOW_LOOPBACK=true`` admits the
   loopback address.
2. Claude, played by the test with the pinned copy of its document (``CIMD_PINNED_ONLY=true``):
   the metadata that makes Claude choose a metadata document, authorization with PKCE through a
   headless browser whose final redirect to claude.ai is captured and never followed, the token
   exchange and a refresh as a public client, and ``whoami`` on ``/mcp``.

Every server runs in a network jail (``network_jail``): nothing it does can leave loopback, and
the tests assert that it did not even try.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path
from typing import ContextManager, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import pytest
import requests

from .document_server import DocumentHost
from .mcp_calls import json_rpc_result, modern_tool_call
from .mcp_sdk_driver import (
    REDIRECT_URI,
    HeadlessBrowser,
    InMemoryTokenStorage,
    RequestLog,
    connected_client,
    oauth_provider,
    sign_in_with_fake_idp,
    text_of,
)
from .network_jail import NetworkJail
from .oauth_flow import pkce_pair
from .scripted_http import LocalCA
from .servers import RunningServer, running_server

pytestmark = pytest.mark.slow

# The operator's command (it also sets up logging, so the log names each logger).
SERVE = [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "serve", "--bind", "127.0.0.1:{port}", "--workers", "2"]
FETCHER_LOGGER = "mcp_oauth_bridge.adapters.metadata_fetcher"
DOCUMENT_PATH = "/oauth/client-metadata.json"
DOCUMENT_CLIENT_NAME = "SDK metadata document client"
CLAUDE_CLIENT_ID = "https://claude.ai/oauth/mcp-oauth-client-metadata"
CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"
# Seconds: short enough that the tests see their access tokens expire.
ACCESS_TOKEN_TTL = 2


@pytest.fixture
def https_document_host(tmp_path: Path) -> Iterator[tuple[DocumentHost, Path]]:
    """A document host at https://localhost:PORT with a certificate from a fresh test CA, and the
    CA's PEM file (for the server's SSL_CERT_FILE)."""
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca = LocalCA.create(ca_dir)
    host = DocumentHost(tls=ca.server_context("localhost"), host_name="localhost")
    yield host, ca_dir / "ca.pem"
    host.server.stop()


def serve(tmp_path: Path, jail: NetworkJail, **env: str) -> ContextManager[RunningServer]:
    """``serve`` in ``jail``, started and stopped by the ``with`` block."""
    return running_server(tmp_path, command=SERVE, **jail.environment(os.environ.get("PYTHONPATH", "")), **env)


def access_log_requests(server: RunningServer) -> list[str]:
    """The access log's ``METHOD /path`` pairs (its format: ``host "METHOD /path HTTP/1.1" …``)."""
    requests_seen = []
    for line in server.log_text().splitlines():
        if '"' in line:
            request_line = line.split('"')[1].split(" ")
            if len(request_line) == 3 and request_line[2].startswith("HTTP/"):
                requests_seen.append(f"{request_line[0]} {request_line[1]}")
    return requests_seen


# The application log's lines: ``date time LEVEL logger: message`` (the serve command's format).
LOG_LINE = re.compile(r"\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): ")


def logger_lines(server: RunningServer, logger: str) -> list[str]:
    """Lines of the application log from ``logger`` or the loggers below it."""
    lines = []
    for line in server.log_text().splitlines():
        match = LOG_LINE.match(line)
        if match and (match.group(1) == logger or match.group(1).startswith(logger + ".")):
            lines.append(line)
    return lines


def test_sdk_client_with_a_client_metadata_url_never_registers_and_refreshes(
    tmp_path: Path, https_document_host: tuple[DocumentHost, Path]
) -> None:
    documents, ca_file = https_document_host
    client_id = documents.publish(
        DOCUMENT_PATH,
        {
            "client_id": documents.url(DOCUMENT_PATH),
            "client_name": DOCUMENT_CLIENT_NAME,
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
        headers={"Cache-Control": "public, max-age=300"},
    )
    assert client_id == documents.url(DOCUMENT_PATH) and client_id.startswith("https://localhost:")
    jail = NetworkJail(tmp_path)
    with serve(
        tmp_path, jail,
        CIMD_ALLOW_LOOPBACK="true",
        # Registration is closed: a /register call would fail the flow, not just be counted.
        CLIENT_REGISTRATION="metadata-documents",
        ACCESS_TOKEN_TTL=str(ACCESS_TOKEN_TTL),
        # The server process trusts the test CA (OpenSSL's default verify paths honour it).
        SSL_CERT_FILE=str(ca_file),
    ) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username="erin")
        log = RequestLog()
        provider = oauth_provider(mcp_url, storage, browser, client_metadata_url=client_id)

        async def scenario() -> None:
            with anyio.fail_after(90):
                await flow()

        async def flow() -> None:
            async with connected_client(mcp_url, provider, "2026-07-28", log) as client:
                first = await client.call_tool("whoami", {})
                assert first.is_error is False
                assert first.structured_content == {"subject": "fake:erin", "username": "erin"}
                before = storage.tokens
                assert before is not None and before.expires_in == ACCESS_TOKEN_TTL and before.refresh_token

                await anyio.sleep(ACCESS_TOKEN_TTL + 1.2)  # past the access token's expiry, by both clocks
                second = await client.call_tool("whoami", {})
                assert "username: erin" in text_of(second)
                after = storage.tokens
                assert after is not None and after.access_token != before.access_token
                assert after.refresh_token and after.refresh_token != before.refresh_token

        anyio.run(scenario)

        # The SDK used the URL as its client id, as a public client, and never registered.
        assert storage.client_info is not None
        assert storage.client_info.client_id == client_id
        assert storage.client_info.client_secret is None
        assert storage.client_info.token_endpoint_auth_method == "none"
        authorize = dict(parse_qsl(urlsplit(browser.authorization_urls[0]).query))
        assert authorize["client_id"] == client_id and authorize["redirect_uri"] == REDIRECT_URI
        assert browser.invocations == 1
        assert DOCUMENT_CLIENT_NAME in browser.consent_pages[0]
        sent_paths = [entry.path for entry in log.entries]
        assert not [path for path in sent_paths if path.endswith("/register")]
        assert log.statuses("/mcp")[0] == 401 and 401 not in log.statuses("/mcp")[1:]
        assert [entry.status for entry in log.token_requests("authorization_code")] == [200]
        assert [entry.status for entry in log.token_requests("refresh_token")] == [200]

        # The server saw the same: the whole flow in its access log, and no registration.
        seen = access_log_requests(server)
        assert "GET /oauth/authorize" in seen and seen.count("POST /oauth/token") == 2
        assert not [request for request in seen if request.endswith("/register")]
        # The document was fetched once, over TLS under its name, and then served from the cache
        # that both workers share (consent, code exchange and refresh fetched nothing).
        assert documents.count(DOCUMENT_PATH) == 1
        fetches = logger_lines(server, FETCHER_LOGGER)
        assert len(fetches) == 1 and "client metadata document from localhost: fetched" in fetches[0]
        assert jail.attempts() == []


def claude_discovers(server: RunningServer) -> tuple[dict[str, object], str]:
    """What Claude reads before it connects: the 401, the protected resource metadata, the
    authorization server metadata. Returns the latter and the scope the 401 asked for."""
    mcp_url = server.base_url + "/mcp"
    challenge = requests.post(mcp_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert challenge.status_code == 401
    www_authenticate = challenge.headers["WWW-Authenticate"]
    assert f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"' in www_authenticate
    scope = www_authenticate.split('scope="', 1)[1].split('"', 1)[0]
    resource = requests.get(server.base_url + "/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    assert resource["resource"] == mcp_url
    issuer = resource["authorization_servers"][0]
    metadata: dict[str, object] = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
    assert metadata["issuer"] == issuer
    # What makes Claude present its metadata document instead of registering a new client.
    assert metadata["client_id_metadata_document_supported"] is True
    assert "none" in metadata["token_endpoint_auth_methods_supported"]  # type: ignore[operator]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    return metadata, scope


def token_request(metadata: dict[str, object], form: dict[str, str]) -> dict[str, object]:
    reply = requests.post(str(metadata["token_endpoint"]), data=form, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    tokens: dict[str, object] = reply.json()
    assert tokens["token_type"] == "Bearer"
    return tokens


def whoami(server: RunningServer, access_token: object, request_id: int) -> dict[str, object]:
    reply = modern_tool_call(server.base_url, str(access_token), "whoami", {}, request_id)
    assert reply.status_code == 200, reply.text
    result: dict[str, object] = json_rpc_result(reply)["result"]
    return result


def test_claude_with_the_pinned_document_signs_in_refreshes_and_calls_whoami(tmp_path: Path) -> None:
    jail = NetworkJail(tmp_path)
    with serve(
        tmp_path, jail,
        CIMD_PINNED_ONLY="true",
        CLIENT_REGISTRATION="metadata-documents",
    ) as server:
        mcp_url = server.base_url + "/mcp"
        metadata, scope = claude_discovers(server)

        # Authorization code with PKCE, as Claude sends it (resource included).
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        authorization_url = str(metadata["authorization_endpoint"]) + "?" + urlencode({
            "response_type": "code",
            "client_id": CLAUDE_CLIENT_ID,
            "redirect_uri": CLAUDE_CALLBACK,
            "scope": scope,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": mcp_url,
        })
        consent_pages: list[str] = []
        final_redirects: list[str] = []
        # The person's browser: consent, fake sign-in; the redirect to claude.ai is captured.
        answer = sign_in_with_fake_idp(
            requests.Session(), authorization_url, "erin",
            consent_pages=consent_pages, final_redirects=final_redirects, timeout=15,
        )
        assert "Claude" in consent_pages[0]
        redirect = urlsplit(final_redirects[0])
        assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == CLAUDE_CALLBACK
        assert answer["state"] == state and answer["iss"] == metadata["issuer"]

        # The token exchange as a public client: no secret, the PKCE verifier proves the caller.
        tokens = token_request(metadata, {
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": CLAUDE_CALLBACK,
            "client_id": CLAUDE_CLIENT_ID,
            "code_verifier": verifier,
            "resource": mcp_url,
        })
        first = whoami(server, tokens["access_token"], 1)
        assert first["structuredContent"] == {"subject": "fake:erin", "username": "erin"}

        # Claude refreshes (proactively, with resource) and keeps working with the new token.
        refreshed = token_request(metadata, {
            "grant_type": "refresh_token",
            "refresh_token": str(tokens["refresh_token"]),
            "client_id": CLAUDE_CLIENT_ID,
            "resource": mcp_url,
        })
        assert refreshed["access_token"] != tokens["access_token"]
        assert refreshed["refresh_token"] != tokens["refresh_token"]
        second = whoami(server, refreshed["access_token"], 2)
        assert second["structuredContent"] == {"subject": "fake:erin", "username": "erin"}

        # Nothing was fetched: no fetcher log line, no attempt to leave loopback, no
        # registration; the log does name the application's loggers (the check can see them).
        assert logger_lines(server, "mcp_oauth_bridge")
        assert logger_lines(server, FETCHER_LOGGER) == []
        assert jail.attempts() == []
        seen = access_log_requests(server)
        assert "GET /oauth/authorize" in seen and seen.count("POST /oauth/token") == 2
        assert not [request for request in seen if request.endswith("/register")]
