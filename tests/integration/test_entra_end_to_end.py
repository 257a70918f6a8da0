"""The real Entra ID adapter and Graph mail tools against a local stand-in for Entra and Graph.

gunicorn with 2 workers is configured only through environment variables
(``IDP_PROVIDER=azure``, ``AZURE_AUTHORITY_HOST``, ``GRAPH_BASE_URL``, ...); the official MCP SDK
client registers, authorizes (consent here, sign-in at the stand-in) and calls ``mail_search``.
Then the upstream access token comes within the refresh margin and a burst of concurrent calls
through both workers spends the single-use upstream refresh token exactly once.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import anyio
import pytest
import requests

from mcp_oauth_bridge.domain.services.upstream import REFRESH_MARGIN

from .entra_standin import DISPLAY_NAME, SUBJECT, USER_OID, USERNAME, EntraStandIn, entra_standin  # noqa: F401
from .mcp_calls import MODERN, json_rpc_result, modern_tool_call
from .mcp_sdk_driver import (
    HeadlessBrowser,
    InMemoryTokenStorage,
    RequestLog,
    connected_client,
    oauth_provider,
    sign_in_with_fake_idp,
    sign_in_with_redirecting_idp,
    text_of,
)
from .servers import REPO_ROOT, RunningServer, running_server

pytestmark = pytest.mark.slow

# The code exchange's access token lives this long: fresh (more than REFRESH_MARGIN left) for a
# few seconds after sign-in, then due for refresh without waiting two minutes.
WINDOW = 8
BURST = 8
# The usual gunicorn command with each access-log line prefixed by the answering worker's pid.
PID_LOG_FORMAT = 'pid=%(p)s "%(m)s %(U)s %(H)s" %(s)s'
GUNICORN_WITH_PIDS = [
    sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:{port}",
    "--workers", "2", "--access-logformat", PID_LOG_FORMAT, "wsgi:app",
]
MCP_POST = re.compile(r'pid=<(\d+)> "POST /mcp HTTP/1\.1" (\d+)')


def access_lines_after(server: RunningServer, skip: int, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
    """(pid, status) of the /mcp POSTs after the first ``skip``, once ``count`` are logged
    (a worker writes its access line just after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = MCP_POST.findall(server.log_text())[skip:]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_sdk_client_reads_mail_through_entra_and_refreshes_upstream_once_under_concurrency(
    tmp_path: Path, entra_standin: EntraStandIn
) -> None:
    entra = entra_standin
    entra.code_expires_in = REFRESH_MARGIN + WINDOW
    entra.refresh_delay = 1.0
    with running_server(tmp_path, command=GUNICORN_WITH_PIDS, workers=2, cwd=REPO_ROOT, **entra.server_environment()) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        browser = HeadlessBrowser(username=USERNAME, sign_in=sign_in_with_redirecting_idp)
        log = RequestLog()

        async def scenario() -> str:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), MODERN, log) as client:
                tools = [tool.name for tool in (await client.list_tools()).tools]
                assert {"whoami", "mail_search", "mail_list", "mail_get"} <= set(tools)
                result = await client.call_tool("mail_search", {"query": "quarterly report"})
                assert result.is_error is False, text_of(result)
                return text_of(result)

        first_text = anyio.run(scenario)

        # Registration → consent → Entra sign-in → callback → code → mail_search result.
        assert SUBJECT in first_text
        assert "Megan Bowen" in first_text
        assert browser.invocations == 1
        assert len(log.token_requests("authorization_code")) == 1
        assert log.statuses("/mcp")[0] == 401 and 401 not in log.statuses("/mcp")[1:]
        # Upstream: one authorization request with PKCE S256, state, nonce, Graph's Mail.Read, no resource.
        assert len(entra.authorize_requests) == 1
        upstream = entra.authorize_requests[0]
        assert upstream["code_challenge_method"] == "S256"
        assert upstream["redirect_uri"] == server.base_url + "/oauth/callback"
        assert upstream["nonce"] and upstream["state"]
        assert "resource" not in upstream
        assert {"openid", "offline_access", "https://graph.microsoft.com/Mail.Read"} <= set(upstream["scope"].split())
        assert [call.grant_type for call in entra.token_calls] == ["authorization_code"]
        assert entra.token_calls[0].status == 200
        # Graph got the upstream token (never ours), a $search and the eventual-consistency header.
        graph = entra.graph_snapshot()
        assert len(graph) == 1 and graph[0].valid
        assert graph[0].query["$search"] == ['"quarterly report"']
        assert graph[0].consistency_level == "eventual"
        assert storage.tokens is not None and storage.tokens.access_token.startswith("mob_at_")
        assert all(call.token != storage.tokens.access_token for call in graph)
        first_upstream_token = graph[0].token
        assert entra.refresh_count == 0, "the first call came too late: the token was already due"

        # The upstream token is now due for refresh (expires in less than REFRESH_MARGIN seconds,
        # by the server's whole-second clock).
        exchanged_at = entra.code_exchanges[0]
        time.sleep(max(0.0, exchanged_at + WINDOW + 1.5 - time.time()))

        bearer = storage.tokens.access_token
        barrier = threading.Barrier(BURST)

        def one_call(number: int) -> requests.Response:
            barrier.wait(timeout=30)
            return modern_tool_call(server.base_url, bearer, "mail_search", {"query": "quarterly"}, number)

        mcp_lines_before = len(MCP_POST.findall(server.log_text()))
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            replies = list(pool.map(one_call, range(1, BURST + 1)))
        elapsed = time.monotonic() - started

        for reply in replies:
            assert reply.status_code == 200, reply.text
            message = json_rpc_result(reply)
            assert "result" in message, message
            assert message["result"]["isError"] is False, message
            assert SUBJECT in "\n".join(block.get("text", "") for block in message["result"]["content"])

        # Exactly one upstream refresh for the whole burst, and Graph saw only valid tokens.
        refreshes = entra.refresh_calls()
        assert [call.status for call in refreshes] == [200], (refreshes, server.log_text()[-4000:])
        assert entra.violations == []
        burst_graph = entra.graph_snapshot()[1:]
        assert len(burst_graph) == BURST
        assert all(call.valid for call in burst_graph)
        assert {call.token for call in burst_graph} != {first_upstream_token}
        assert len({call.token for call in burst_graph}) == 1  # the refreshed one, shared
        assert elapsed < 30
        # Both gunicorn workers answered part of the burst.
        burst_lines = access_lines_after(server, mcp_lines_before, BURST)
        assert len(burst_lines) == BURST and {status for _, status in burst_lines} == {"200"}
        assert len({pid for pid, _ in burst_lines}) == 2, burst_lines

        # The grant is intact: a later call needs no refresh.
        later = json_rpc_result(modern_tool_call(server.base_url, bearer, "mail_search", {"query": "review"}, 99))
        assert later["result"]["isError"] is False
        assert entra.refresh_count == 1
        assert entra.violations == []


@pytest.mark.parametrize("provider", ["fake", "azure"])
def test_whoami_with_either_provider_is_configuration_only(
    tmp_path: Path, entra_standin: EntraStandIn, provider: str
) -> None:
    if provider == "fake":
        env: dict[str, str] = {"IDP_PROVIDER": "fake", "TOOLSETS": "identity"}
        browser = HeadlessBrowser(username="erin", sign_in=sign_in_with_fake_idp)
        expected = {"subject": "fake:erin", "username": "erin"}
    else:
        env = entra_standin.server_environment(toolsets="identity")
        browser = HeadlessBrowser(username=USERNAME, sign_in=sign_in_with_redirecting_idp)
        expected = {
            "subject": f"{entra_standin.tenant}:{USER_OID}",
            "username": USERNAME,
            "name": DISPLAY_NAME,
            "email": USERNAME,
        }

    with running_server(tmp_path, command=None, workers=2, cwd=REPO_ROOT, **env) as server:
        mcp_url = server.base_url + "/mcp"
        storage = InMemoryTokenStorage()
        log = RequestLog()

        async def scenario() -> None:
            async with connected_client(mcp_url, oauth_provider(mcp_url, storage, browser), MODERN, log) as client:
                tools = [tool.name for tool in (await client.list_tools()).tools]
                assert tools == ["whoami"]
                result = await client.call_tool("whoami", {})
                assert result.is_error is False, text_of(result)
                assert result.structured_content == expected
                assert f"username: {expected['username']}" in text_of(result)

        anyio.run(scenario)

    # The same flow, step for step, whichever provider signs the person in.
    assert browser.invocations == 1
    params = dict(parse_qsl(urlsplit(browser.authorization_urls[0]).query))
    assert params["resource"] == mcp_url
    assert len(log.token_requests("authorization_code")) == 1
    assert log.statuses("/mcp")[0] == 401 and 401 not in log.statuses("/mcp")[1:]
    if provider == "azure":
        assert len(entra_standin.authorize_requests) == 1
        assert [call.grant_type for call in entra_standin.token_calls] == ["authorization_code"]
        assert entra_standin.violations == []
    else:
        assert entra_standin.authorize_requests == [] and entra_standin.token_calls == []
