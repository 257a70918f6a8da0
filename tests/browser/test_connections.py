"""The connections page in Chromium at a laptop's and a phone's width: sign in through the fake
identity provider, see the connection an application made, revoke it (the application's token
stops working at once), with the pages' usual checks (no overflow, contrast, no CSP violation)."""

from __future__ import annotations

import secrets

import pytest
import requests
from playwright.sync_api import Page

from .harness import DESKTOP_WIDTH, PHONE_WIDTH, SERVICE_NAME, ClientCallback, LiveServer, PageWatch, assert_sound, text_of
from .test_consent import sign_in_at_fake_idp, wait_for_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("width", [DESKTOP_WIDTH, PHONE_WIDTH], ids=["1280px", "390px"])
def test_a_person_revokes_a_connection(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch, width: int
) -> None:
    username = f"carol{secrets.token_hex(3)}"
    client = server.register(client_callback.redirect_uri, client_name="W" * 120 + " Assistant")
    state = secrets.token_urlsafe(8)
    url, verifier = server.authorize_url(client["client_id"], client_callback.redirect_uri, state)
    page.goto(url)
    page.get_by_role("button", name="Allow and sign in").click()
    sign_in_at_fake_idp(page, watch, username)
    wait_for_client(page, client_callback)
    token = requests.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "authorization_code", "client_id": client["client_id"], "code": client_callback.arrival(state)["code"],
              "redirect_uri": client_callback.redirect_uri, "code_verifier": verifier},
        timeout=10,
    ).json()["access_token"]

    page.goto(server.base_url + "/connections")
    assert text_of(page, "h1") == f"Your connections to {SERVICE_NAME}"
    assert_sound(page, watch, service_name=SERVICE_NAME)
    page.get_by_role("button", name="Sign in").click()
    sign_in_at_fake_idp(page, watch, username)
    page.wait_for_url(server.base_url + "/connections")
    assert page.locator("section.connection").count() == 1
    assert "Assistant" in text_of(page, "section.connection h2")
    assert_sound(page, watch, service_name=SERVICE_NAME)

    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(server.base_url + "/connections?revoked=1")
    assert page.locator("section.connection").count() == 0
    assert "was revoked" in text_of(page, "[role=status]")
    assert_sound(page, watch, service_name=SERVICE_NAME)
    mcp = requests.post(server.base_url + "/mcp", headers={"Authorization": f"Bearer {token}"},
                        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert mcp.status_code == 401
    watch.assert_clean()
