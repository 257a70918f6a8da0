"""Who may connect, end to end (issue 11 §1): gunicorn with the real Entra adapter against the
local Entra stand-in, AZURE_ALLOWED_GROUPS and AZURE_REQUIRED_APP_ROLES set, group overage so
that membership comes from Graph ``checkMemberGroups``.

A person in the group with the role connects; an Entra outage at a refresh answers
temporarily_unavailable and disconnects nobody; removed from the group, they are cut off at the
next refresh after the upstream token expired (invalid_grant, then /mcp 401), with no one
acting; a person outside the group is shown the access-denied page at sign-in.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from .entra_standin import EntraStandIn, entra_standin  # noqa: F401
from .mcp_calls import modern_tool_call
from .oauth_flow import HttpTransport, OAuthClient, pkce_pair
from .servers import running_server

pytestmark = pytest.mark.slow

MCP_USERS = "8f1c2a55-2d8e-4b8f-9a53-1c3e0f4b7d21"
OTHER_GROUP = "1d9a7c33-5b2e-4f0a-8c61-7e2b9d0c4a58"
# Upstream access tokens live this long, so that the test waits a few seconds, not an hour.
UPSTREAM_SECONDS = 2


def sign_in(oauth: OAuthClient) -> tuple[int, str, str, str]:
    """Authorize → consent → the stand-in (already signed in) → our callback: (status, page,
    Location, verifier)."""
    verifier, challenge = pkce_pair()
    page = oauth.authorize(challenge, state="client-state")
    assert page.status == 200, page.text
    to_idp = oauth.consent(page)
    assert to_idp.status == 303, to_idp.text
    to_callback = oauth.http.get(to_idp.location)
    assert to_callback.status == 302, to_callback.text
    back = oauth.http.get(to_callback.location)
    return back.status, back.text, back.headers.get("Location", ""), verifier


def whoami(base_url: str, access_token: str) -> int:
    return modern_tool_call(base_url, access_token, "whoami", {}, 1).status_code


def test_a_member_connects_and_is_cut_off_after_removal_from_the_group(tmp_path: Path, entra_standin: EntraStandIn) -> None:
    entra = entra_standin
    entra.code_expires_in = UPSTREAM_SECONDS
    entra.refresh_expires_in = UPSTREAM_SECONDS
    entra.group_overage = True
    entra.set_membership(groups=[MCP_USERS, OTHER_GROUP], roles=["MCP.User"])
    environment = entra.server_environment(toolsets="identity")
    environment.update(AZURE_ALLOWED_GROUPS=MCP_USERS, AZURE_REQUIRED_APP_ROLES="MCP.User", ACCESS_DENIED_CONTACT="the IT service desk")
    with running_server(tmp_path, workers=2, **environment) as server:
        oauth = OAuthClient(HttpTransport(server.base_url))
        assert oauth.register().status == 201

        # In the group (read from Graph: overage) and holding the role: connected.
        status, text, location, verifier = sign_in(oauth)
        assert status == 302, text
        code = parse_qs(urlsplit(location).query)["code"][0]
        tokens = oauth.exchange(code, verifier).json()
        assert whoami(server.base_url, tokens["access_token"]) == 200
        checks = [call for call in entra.graph_snapshot() if call.path == "/v1.0/me/checkMemberGroups"]
        assert len(checks) == 1 and checks[0].valid
        # User.Read was asked for: checkMemberGroups for the signed-in user needs it.
        assert "https://graph.microsoft.com/User.Read" in entra.authorize_requests[0]["scope"].split()

        # The upstream token expires; our refresh refreshes it upstream and checks again: still in.
        time.sleep(UPSTREAM_SECONDS + 1.5)
        reply = oauth.refresh(tokens["refresh_token"])
        assert reply.status == 200, reply.text
        tokens = reply.json()
        assert entra.refresh_count == 1
        assert len([call for call in entra.graph_snapshot() if call.path == "/v1.0/me/checkMemberGroups"]) == 2

        # Entra is down when the upstream token has expired again: nobody is disconnected.
        time.sleep(UPSTREAM_SECONDS + 1.5)
        entra.token_outage = True
        reply = oauth.refresh(tokens["refresh_token"])
        assert reply.status == 503, reply.text
        assert reply.json()["error"] == "temporarily_unavailable"
        assert reply.headers["Retry-After"] == "2"
        assert whoami(server.base_url, tokens["access_token"]) == 200
        entra.token_outage = False

        # An administrator removes the person from the group; nobody does anything else.
        entra.set_membership(groups=[OTHER_GROUP])
        assert whoami(server.base_url, tokens["access_token"]) == 200
        reply = oauth.refresh(tokens["refresh_token"])
        assert reply.status == 400, reply.text
        assert reply.json()["error"] == "invalid_grant"
        # The refresh during the outage, then the one that found the person outside the group.
        assert [call.status for call in entra.refresh_calls()] == [200, 503, 200]
        # The grant is revoked: the access token issued before stops working at once.
        assert whoami(server.base_url, tokens["access_token"]) == 401

        # Signing in again while outside the group: the page says so, the client gets access_denied.
        status, text, location, _ = sign_in(oauth)
        assert status == 403, text
        assert "You are not allowed to connect" in text and "the IT service desk" in html.unescape(text)
        link = re.search(r'<a href="([^"]+)">Return to the application', text)
        assert link is not None
        assert parse_qs(urlsplit(html.unescape(link.group(1))).query)["error"] == ["access_denied"]
    assert entra.violations == []
