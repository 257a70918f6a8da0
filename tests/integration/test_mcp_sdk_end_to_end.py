"""The official MCP Python SDK client against gunicorn with 2 workers, over real sockets.

The SDK discovers everything from metadata (RFC 9728, RFC 8414), registers (RFC 7591),
authorizes with PKCE through a headless browser (consent + fake sign-in), checks ``iss``
(RFC 9207), refreshes expired tokens, and re-authorizes when its grant was revoked.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import pytest
import requests

from .mcp_sdk_driver import (
    CLIENT_NAME,
    REDIRECT_URI,
    HeadlessBrowser,
    InMemoryTokenStorage,
    RequestLog,
    connected_client,
    oauth_provider,
    text_of,
)
from .servers import running_server

pytestmark = pytest.mark.slow

MODES = ("legacy", "2026-07-28")


@pytest.mark.parametrize("mode", MODES)
def test_sdk_client_discovers_registers_authorizes_and_calls_whoami(tmp_path: Path, mode: str) -> None:
    with running_server(tmp_path, workers=2) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username="erin")
        log = RequestLog()

        async def scenario() -> None:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), mode, log) as client:
                assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
                tools = await client.list_tools()
                assert "whoami" in [tool.name for tool in tools.tools]
                result = await client.call_tool("whoami", {})
                assert result.is_error is False
                assert "username: erin" in text_of(result)
                assert result.structured_content == {"subject": "fake:erin", "username": "erin"}

        anyio.run(scenario)

        # One authorization, by the flow the SDK worked out from the metadata alone.
        assert browser.invocations == 1
        authorize = urlsplit(browser.authorization_urls[0])
        assert authorize.path == "/oauth/authorize"
        params = dict(parse_qsl(authorize.query))
        assert params["code_challenge_method"] == "S256"
        assert params["resource"] == mcp_url
        assert params["redirect_uri"] == REDIRECT_URI
        # The person was shown who asks and where they will be sent (confused-deputy consent).
        assert CLIENT_NAME in browser.consent_pages[0]
        assert "127.0.0.1:9999" in browser.consent_pages[0]
        assert storage.client_info is not None and storage.client_info.client_secret
        assert storage.client_info.issuer == server.base_url
        assert storage.tokens is not None and storage.tokens.refresh_token
        assert storage.tokens.access_token.startswith("mob_at_")
        paths = [entry.path for entry in log.entries]
        assert paths.count("/oauth/register") == 1
        assert "/.well-known/oauth-protected-resource/mcp" in paths
        assert "/.well-known/oauth-authorization-server" in paths
        assert len(log.token_requests("authorization_code")) == 1
        # The first /mcp request was challenged (401), every later one was answered.
        assert log.statuses("/mcp")[0] == 401
        assert 401 not in log.statuses("/mcp")[1:]


def test_sdk_client_refreshes_an_expired_access_token(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2, ACCESS_TOKEN_TTL="2") as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username="erin")
        log = RequestLog()

        async def scenario() -> None:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), "2026-07-28", log) as client:
                first = await client.call_tool("whoami", {})
                assert "username: erin" in text_of(first)
                assert storage.tokens is not None and storage.tokens.expires_in == 2
                before = storage.tokens
                refreshes_before = len(log.token_requests("refresh_token"))

                await anyio.sleep(3.2)  # past the access token's expiry, by both clocks
                second = await client.call_tool("whoami", {})
                assert "username: erin" in text_of(second)

                after = storage.tokens
                assert after is not None
                assert after.access_token != before.access_token
                # Rotation: a new refresh token came with it.
                assert after.refresh_token and after.refresh_token != before.refresh_token
                refreshes = log.token_requests("refresh_token")[refreshes_before:]
                assert [entry.status for entry in refreshes] == [200]

        anyio.run(scenario)

        # Refreshed before use, not re-authorized: the person was asked once, and no /mcp call
        # after the first challenge met a 401.
        assert browser.invocations == 1
        assert len(log.token_requests("authorization_code")) == 1
        assert 401 not in log.statuses("/mcp")[1:]


def test_sdk_client_reauthorizes_after_its_grant_was_revoked(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username="erin")
        log = RequestLog()

        async def scenario() -> None:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), "2026-07-28", log) as client:
                first = await client.call_tool("whoami", {})
                assert "username: erin" in text_of(first)
                assert browser.invocations == 1
                revoked = storage.tokens
                client_info = storage.client_info
                assert revoked is not None and revoked.refresh_token and client_info is not None

                # Revoke the grant as the client would (RFC 7009, client_secret_post).
                reply = await anyio.to_thread.run_sync(
                    lambda: requests.post(
                        server.base_url + "/oauth/revoke",
                        data={
                            "token": revoked.refresh_token,
                            "token_type_hint": "refresh_token",
                            "client_id": client_info.client_id,
                            "client_secret": client_info.client_secret,
                        },
                        timeout=10,
                    )
                )
                assert reply.status_code == 200, reply.text

                mcp_calls = len(log.statuses("/mcp"))
                second = await client.call_tool("whoami", {})
                assert "username: erin" in text_of(second)
                # The revoked token was refused, the person was asked again, and the call went through.
                after_revocation = log.statuses("/mcp")[mcp_calls:]
                assert after_revocation[0] == 401
                assert after_revocation[1:] and set(after_revocation[1:]) == {200}
                assert browser.invocations == 2
                assert storage.tokens is not None and storage.tokens.access_token != revoked.access_token

        anyio.run(scenario)

        # The registration was reused: one DCR, two authorization code exchanges.
        assert [entry.path for entry in log.entries].count("/oauth/register") == 1
        assert len(log.token_requests("authorization_code")) == 2
