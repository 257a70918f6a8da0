"""The consent page in Chromium (issue 10 §3), for each kind of client, at a laptop's and a phone's
width: what it says of the client (verified, trusted or self-declared), the scopes in plain words,
that Allow leads through the fake sign-in to the client's redirect URI with a code and Deny to
error=access_denied, that hostile names stay text and long ones wrap, and the keyboard."""

from __future__ import annotations

import secrets
import time
from typing import Iterator

import pytest
import requests
from playwright.sync_api import Page

from mcp_oauth_bridge.domain.model import OPERATOR_CLIENT_KIND, Client

from .harness import DESKTOP_WIDTH, PHONE_WIDTH, SERVICE_NAME, ClientCallback, LiveServer, PageWatch, assert_sound, text_of

pytestmark = pytest.mark.slow
BOTH_WIDTHS = pytest.mark.parametrize("width", [DESKTOP_WIDTH, PHONE_WIDTH], ids=["1280px", "390px"])

USER_READ_ROW = ["Read your basic profile (name, username and email address)", "User.Read"]


def scope_rows(page: Page) -> list[list[str]]:
    rows = page.locator("table.scopes tbody tr")
    return [[" ".join(cell.split()) for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]


def stored_client(client_id: str, redirect_uri: str, *, kind: str, client_name: str, **extra: object) -> Client:
    return Client(
        client_id=client_id,
        redirect_uris=(redirect_uri,),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        token_endpoint_auth_method="none",
        issued_at=int(time.time()),
        client_name=client_name,
        extra_metadata=dict(extra),
        kind=kind,
    )


def sign_in_at_fake_idp(page: Page, watch: PageWatch, username: str = "alice") -> None:
    page.wait_for_url("**/fake-idp/authorize?**")
    assert_sound(page, watch, service_name=SERVICE_NAME)
    page.get_by_label("Username").fill(username)
    page.get_by_role("button", name="Sign in", exact=True).click()


def wait_for_client(page: Page, client_callback: ClientCallback) -> None:
    page.wait_for_url(lambda url: url.startswith(client_callback.redirect_uri + "?"))


@BOTH_WIDTHS
def test_self_registered_client_is_shown_as_self_declared_and_allow_returns_a_code(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch, width: int
) -> None:
    client = server.register(client_callback.redirect_uri, client_name="Claude", client_uri="https://claude.ai")
    state = secrets.token_urlsafe(8)
    url, verifier = server.authorize_url(client["client_id"], client_callback.redirect_uri, state)
    response = page.goto(url)
    assert response is not None and response.status == 200

    heading = f"“Claude” wants to use your tools at {SERVICE_NAME}"
    assert text_of(page, "h1") == heading
    assert page.title() == heading
    # The line that counts comes first: where the browser (and the code) will go.
    port = client_callback.redirect_uri.split(":")[2].split("/")[0]
    assert text_of(page, "h1 + p.destination") == f"After you sign in, you will be sent back to http://127.0.0.1:{port}."
    assert text_of(page, ".declared") == (
        "Name Claude unverified · self-declared Website https://claude.ai/ unverified · self-declared"
    )
    # Nothing it declared is styled as checked.
    assert page.locator(".verified, .trusted, .mark").count() == 0
    assert "✓" not in page.locator("main").inner_text()
    assert scope_rows(page) == [USER_READ_ROW]
    assert_sound(page, watch, service_name=SERVICE_NAME)

    page.get_by_role("button", name="Allow and sign in").click()
    sign_in_at_fake_idp(page, watch)
    wait_for_client(page, client_callback)
    arrival = client_callback.arrival(state)
    assert arrival["iss"] == server.base_url
    # The code is a real one: the client redeems it.
    token = requests.post(
        server.base_url + "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client["client_id"],
            "code": arrival["code"],
            "redirect_uri": client_callback.redirect_uri,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    watch.assert_clean()


@BOTH_WIDTHS
def test_metadata_document_client_shows_its_document_host_as_verified(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch, width: int
) -> None:
    # The document as a fetch leaves it in the cache (nothing here is fetched from outside).
    client_id = f"https://apps.example.com/{secrets.token_hex(4)}/client-metadata.json"
    server.cache_document(
        {
            "client_id": client_id,
            "client_name": "Example App",
            "client_uri": "https://elsewhere.example",
            "redirect_uris": [client_callback.redirect_uri],
        }
    )
    state = secrets.token_urlsafe(8)
    url, _ = server.authorize_url(client_id, client_callback.redirect_uri, state)
    page.goto(url)

    assert text_of(page, "h1") == f"Example App wants to use your tools at {SERVICE_NAME}"
    assert text_of(page, ".verified") == "✓ Verified: this application's details are published at apps.example.com."
    assert page.locator(".unverified, .declared, .warning").count() == 0
    # What the document says of itself beyond its host is not vouched for, so not shown.
    assert "elsewhere.example" not in page.content()
    assert scope_rows(page) == [USER_READ_ROW]
    assert_sound(page, watch, service_name=SERVICE_NAME)

    page.get_by_role("button", name="Allow and sign in").click()
    sign_in_at_fake_idp(page, watch)
    wait_for_client(page, client_callback)
    assert client_callback.arrival(state)["code"].startswith("mob_ac_")
    watch.assert_clean()


@BOTH_WIDTHS
def test_operator_client_is_shown_as_trusted_and_deny_returns_access_denied(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch, width: int
) -> None:
    client_id = "mob_client_operator_" + secrets.token_hex(4)
    server.add_client(
        stored_client(client_id, client_callback.redirect_uri, kind=OPERATOR_CLIENT_KIND, client_name="Contoso Assistant")
    )
    state = secrets.token_urlsafe(8)
    url, _ = server.authorize_url(client_id, client_callback.redirect_uri, state)
    page.goto(url)

    assert text_of(page, "h1") == f"Contoso Assistant wants to use your tools at {SERVICE_NAME}"
    assert text_of(page, ".trusted") == f"✓ Added by the administrators of {SERVICE_NAME} as Contoso Assistant."
    assert page.locator(".unverified, .declared, .warning").count() == 0
    assert_sound(page, watch, service_name=SERVICE_NAME)

    page.get_by_role("button", name="Deny").click()
    wait_for_client(page, client_callback)
    arrival = client_callback.arrival(state)
    assert arrival["error"] == "access_denied"
    assert "code" not in arrival
    watch.assert_clean()


def test_keyboard_reaches_deny_then_allow_with_visible_focus_and_completes_the_sign_in(
    server: LiveServer, client_callback: ClientCallback, page: Page, watch: PageWatch
) -> None:
    client = server.register(client_callback.redirect_uri, client_name="Keyboard Client")
    state = secrets.token_urlsafe(8)
    page.goto(server.authorize_url(client["client_id"], client_callback.redirect_uri, state)[0])

    focused = (
        "() => { const e = document.activeElement, s = getComputedStyle(e);"
        " return [e.tagName, e.textContent.trim(), e.matches(':focus-visible'), s.outlineStyle, parseFloat(s.outlineWidth)]; }"
    )
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == ["BUTTON", "Deny", True, "solid", 3]
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == ["BUTTON", "Allow and sign in", True, "solid", 3]
    page.keyboard.press("Enter")

    page.wait_for_url("**/fake-idp/authorize?**")
    # The username field takes the focus (autofocus, which the browser applies when it next
    # renders, after the load event); Enter in it signs in (never cancels).
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'username'", timeout=5_000)
    assert page.evaluate("() => document.activeElement.id") == "username"
    page.keyboard.type("bob")
    page.keyboard.press("Enter")
    wait_for_client(page, client_callback)
    assert client_callback.arrival(state)["code"].startswith("mob_ac_")
    watch.assert_clean()


# -- hostile and overlong names ------------------------------------------------------------------

INJECTED_NAME = "<img src=x onerror=alert(1)>"
INJECTED_SCOPE = "<img/src=x/onerror=alert(2)>"
# Unbroken runs of the widest letters: nothing may stick out of a 390 px screen.
LONG_SERVICE_NAME = "W" * 80
LONG_SCOPE = "Files." + "W" * 300
LONG_HOST = ".".join(["w" * 63] * 3) + ".example"


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("hostile-server"),
        SERVICE_NAME=LONG_SERVICE_NAME,
        SCOPES=f"{INJECTED_SCOPE} {LONG_SCOPE}",
    )
    yield live
    live.stop()


@BOTH_WIDTHS
def test_hostile_and_overlong_self_declared_names_stay_text_and_wrap(
    hostile_server: LiveServer, page: Page, watch: PageWatch, width: int
) -> None:
    client_name = INJECTED_NAME + "W" * (200 - len(INJECTED_NAME))
    client = hostile_server.register(
        f"https://{LONG_HOST}/callback",
        client_name=client_name,
        client_uri="https://claude.ai/" + "w" * 400 + "?<b>bold</b>",
    )
    url, _ = hostile_server.authorize_url(
        client["client_id"], f"https://{LONG_HOST}/callback", "s", scope=f"User.Read {INJECTED_SCOPE} {LONG_SCOPE}"
    )
    page.goto(url)

    assert text_of(page, "h1") == f"“{client_name}” wants to use your tools at {LONG_SERVICE_NAME}"
    assert page.locator("main img, main b, main script").count() == 0
    assert text_of(page, ".declared dd >> nth=1").startswith("https://claude.ai/www")
    assert f"sent back to {LONG_HOST}." in text_of(page, ".destination")
    assert scope_rows(page) == [
        USER_READ_ROW,
        ["A permission without a description here: ask the administrators what it allows", INJECTED_SCOPE],
        ["A permission without a description here: ask the administrators what it allows", LONG_SCOPE],
    ]
    assert_sound(page, watch, service_name=LONG_SERVICE_NAME)


@BOTH_WIDTHS
def test_overlong_verified_host_and_name_wrap(hostile_server: LiveServer, page: Page, watch: PageWatch, width: int) -> None:
    client_id = f"https://{LONG_HOST}/client.json"
    hostile_server.cache_document(
        {"client_id": client_id, "client_name": "W" * 200, "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}
    )
    page.goto(hostile_server.authorize_url(client_id, "https://claude.ai/api/mcp/auth_callback", "s")[0])

    assert text_of(page, ".verified") == f"✓ Verified: this application's details are published at {LONG_HOST}."
    assert_sound(page, watch, service_name=LONG_SERVICE_NAME)
