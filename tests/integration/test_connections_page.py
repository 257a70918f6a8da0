"""The connections page: a person signs in through the identity provider (here the fake one),
sees the connections made in their name, and revokes one; the revocation takes effect at once."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from .oauth_flow import FlaskTransport, OAuthClient, Reply, hidden_fields


class Person:
    """A browser on the connections page (its own cookies)."""

    def __init__(self, app: Flask) -> None:
        self.http = FlaskTransport(app.test_client())

    def sign_in(self, username: str) -> Reply:
        start = self.http.get("/connections/sign-in")
        assert start.status == 302 and "/fake-idp/authorize?" in start.location
        to_callback = OAuthClient(self.http).fake_sign_in(start, username)
        assert to_callback.status == 303, to_callback.text
        back = self.http.get(to_callback.location)
        assert back.status == 303 and back.location.endswith("/connections"), back.text
        return self.http.get("/connections")

    def revoke(self, page: Reply, grant_id: str, **override: str) -> Reply:
        form = {"csrf_token": hidden_fields(page.text)["csrf_token"], "grant_id": grant_id, **override}
        return self.http.post("/connections/revoke", data=form)


def grant_ids(page: Reply) -> list[str]:
    return re.findall(r'name="grant_id" value="([^"]+)"', page.text)


def mcp_status(app: Flask, access_token: str) -> int:
    reply = app.test_client().post(
        "/mcp",
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    return reply.status_code


def test_a_person_sees_and_revokes_their_connection(app: Flask, oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    alice = Person(app)
    first = alice.http.get("/connections")
    assert first.status == 200 and "Sign in" in first.text and "grant_id" not in first.text
    assert first.headers["Cache-Control"] == "no-store"

    page = alice.sign_in("alice")
    assert page.status == 200
    assert "Signed in as <strong>alice</strong>" in page.text
    assert "Test Client" in page.text and "Read your basic profile" in page.text
    (grant_id,) = grant_ids(page)
    assert mcp_status(app, tokens["access_token"]) != 401

    revoked = alice.revoke(page, grant_id)
    assert revoked.status == 303 and revoked.location.endswith("/connections?revoked=1")
    # At once: the access token, and the refresh token.
    assert mcp_status(app, tokens["access_token"]) == 401
    refresh = oauth.refresh(tokens["refresh_token"])
    assert refresh.status == 400 and refresh.json()["error"] == "invalid_grant"
    after = alice.http.get("/connections?revoked=1")
    assert grant_ids(after) == [] and "was revoked" in after.text


def test_nobody_revokes_another_persons_connection(app: Flask, tokens: dict[str, Any]) -> None:
    alice_page = Person(app).sign_in("alice")
    (alices_grant,) = grant_ids(alice_page)
    bob = Person(app)
    bobs_page = bob.sign_in("bob")
    assert grant_ids(bobs_page) == [] and "No application is connected" in bobs_page.text
    refused = bob.revoke(bobs_page, alices_grant)
    assert refused.status == 404
    assert mcp_status(app, tokens["access_token"]) != 401


def test_revoking_needs_the_pages_csrf_token_and_a_session(app: Flask, tokens: dict[str, Any]) -> None:
    alice = Person(app)
    page = alice.sign_in("alice")
    (grant_id,) = grant_ids(page)
    assert alice.revoke(page, grant_id, csrf_token="forged").status == 400
    stranger = Person(app)
    assert stranger.http.post("/connections/revoke", data={"csrf_token": hidden_fields(page.text)["csrf_token"], "grant_id": grant_id}).status == 400
    assert mcp_status(app, tokens["access_token"]) != 401


def test_a_forged_session_cookie_is_ignored(app: Flask, tokens: dict[str, Any]) -> None:
    browser = app.test_client()
    browser.set_cookie("mob_account", '{"sub": "fake:alice", "csrf": "x"}')
    page = browser.get("/connections")
    assert b"grant_id" not in page.data and b"Sign in" in page.data


def test_an_authorization_still_completes_while_a_connections_sign_in_is_pending(app: Flask, oauth: OAuthClient) -> None:
    # The same browser starts a sign-in on the connections page, then connects an application:
    # the callback tells the two apart by state.
    oauth.http.get("/connections/sign-in")
    code, verifier = oauth.login()
    assert oauth.exchange(code, verifier).status == 200


def test_sign_out(app: Flask, tokens: dict[str, Any]) -> None:
    alice = Person(app)
    page = alice.sign_in("alice")
    out = alice.http.post("/connections/sign-out", data={"csrf_token": hidden_fields(page.text)["csrf_token"]})
    assert out.status == 303
    assert grant_ids(alice.http.get("/connections")) == []
