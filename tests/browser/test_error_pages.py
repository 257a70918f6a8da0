"""Every error page a person's browser can reach on the way through authorize, consent, the fake
sign-in and the callback (issue 10 §3), in Chromium at a laptop's and a phone's width: its status,
heading and message, that it names the service, that a way back to the client exists exactly when
the client and redirect URI are established (RFC 9700 §4.11.2) and leads there with the error, and
the checks every page passes (no sideways scrolling, contrast, no console error or CSP violation)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Response

from .harness import DESKTOP_WIDTH, PHONE_WIDTH, SERVICE_NAME, ClientCallback, LiveServer, PageWatch, assert_sound, text_of

pytestmark = pytest.mark.slow

CANNOT_COMPLETE = "This sign-in request cannot be completed"


def _navigation(page: Page, action: Callable[[], object]) -> Response:
    with page.expect_navigation() as navigation:
        action()
    response = navigation.value
    assert response is not None
    return response


def _consent_page(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> None:
    client = server.register(client_callback.redirect_uri, client_name="Error Client")
    page.goto(server.authorize_url(client["client_id"], client_callback.redirect_uri, state)[0])


def _at_fake_sign_in(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> None:
    _consent_page(page, server, client_callback, state)
    page.get_by_role("button", name="Allow and sign in").click()
    page.wait_for_url("**/fake-idp/authorize?**")


def unknown_client(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    url, _ = server.authorize_url("mob_client_unknown", client_callback.redirect_uri, state)
    return _navigation(page, lambda: page.goto(url))


def unregistered_redirect_uri(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    client = server.register(client_callback.redirect_uri)
    url, _ = server.authorize_url(client["client_id"], client_callback.redirect_uri + "/elsewhere", state)
    return _navigation(page, lambda: page.goto(url))


def missing_pkce(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    client = server.register(client_callback.redirect_uri)
    url, _ = server.authorize_url(client["client_id"], client_callback.redirect_uri, state, code_challenge=None)
    return _navigation(page, lambda: page.goto(url))


def expired_consent(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    _consent_page(page, server, client_callback, state)
    # The pending authorization is gone by the time the person answers (its expiry purged it).
    pending_id = page.locator("input[name=pending_id]").get_attribute("value")
    assert pending_id
    server.container.authorizations().delete_pending(pending_id)
    return _navigation(page, lambda: page.get_by_role("button", name="Allow and sign in").click())


def callback_without_state(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    return _navigation(page, lambda: page.goto(server.base_url + "/oauth/callback?code=x"))


def callback_with_unknown_state(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    return _navigation(page, lambda: page.goto(server.base_url + "/oauth/callback?state=mob_st_unknown&code=x"))


def identity_provider_error(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    _at_fake_sign_in(page, server, client_callback, state)
    upstream_state = parse_qs(urlsplit(page.url).query)["state"][0]
    callback = f"{server.base_url}/oauth/callback?state={upstream_state}&error=invalid_client"
    return _navigation(page, lambda: page.goto(callback))


def fake_sign_in_without_username(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    _at_fake_sign_in(page, server, client_callback, state)
    return _navigation(page, lambda: page.get_by_role("button", name="Sign in", exact=True).click())


def fake_sign_in_malformed(page: Page, server: LiveServer, client_callback: ClientCallback, state: str) -> Response:
    return _navigation(page, lambda: page.goto(server.base_url + "/fake-idp/authorize"))


@dataclass(frozen=True)
class ErrorPage:
    reach: Callable[[Page, LiveServer, ClientCallback, str], Response]
    status: int
    heading: str
    message: str
    # The error the way back to the client carries; None: the page offers no way back.
    returns_error: str | None


ERROR_PAGES = {
    "unknown client": ErrorPage(unknown_client, 400, CANNOT_COMPLETE, "unknown client", None),
    "unregistered redirect_uri": ErrorPage(
        unregistered_redirect_uri, 400, CANNOT_COMPLETE, "redirect_uri is not registered for this client", None
    ),
    "missing PKCE": ErrorPage(missing_pkce, 400, CANNOT_COMPLETE, "code_challenge is required (PKCE with S256)", "invalid_request"),
    "expired consent": ErrorPage(
        expired_consent, 400, CANNOT_COMPLETE, "this authorization request has expired; start again from the application", None
    ),
    "callback without state": ErrorPage(
        callback_without_state, 400, CANNOT_COMPLETE, "the identity provider's response has no state", None
    ),
    "callback with unknown state": ErrorPage(
        callback_with_unknown_state, 400, CANNOT_COMPLETE, "this sign-in has expired or was already completed", None
    ),
    "identity provider error": ErrorPage(
        identity_provider_error, 400, "Sign-in did not work", "The fake identity provider answered invalid_client.", "server_error"
    ),
    "fake sign-in without username": ErrorPage(fake_sign_in_without_username, 400, "Sign in", "Type a username to sign in as.", None),
    "malformed fake sign-in": ErrorPage(fake_sign_in_malformed, 400, CANNOT_COMPLETE, "state", None),
}


@pytest.mark.parametrize("width", [DESKTOP_WIDTH, PHONE_WIDTH], ids=["1280px", "390px"])
@pytest.mark.parametrize("name", list(ERROR_PAGES))
def test_error_page(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch, name: str, width: int
) -> None:
    expected = ERROR_PAGES[name]
    state = secrets.token_urlsafe(8)
    response = expected.reach(page, server, client_callback, state)

    assert response.status == expected.status
    assert response.headers["content-type"].startswith("text/html")
    assert text_of(page, "h1") == expected.heading
    assert expected.message in text_of(page, ".error")
    assert_sound(page, watch, service_name=SERVICE_NAME)
    back = page.get_by_role("link", name="Return to the application")
    if expected.returns_error is None:
        # Never a way on to an address that was not established.
        assert back.count() == 0
        return
    back.click()
    page.wait_for_url(lambda url: url.startswith(client_callback.redirect_uri + "?"))
    arrival = client_callback.arrival(state)
    assert arrival["error"] == expected.returns_error
    assert arrival["iss"] == server.base_url
    watch.assert_clean()
