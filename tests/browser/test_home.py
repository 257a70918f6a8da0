"""``/``, the status page (issue 10 §3), in Chromium at both widths: names the service, says what
the address is, gives the MCP URL to paste into Claude and links to both metadata documents."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from .harness import DESKTOP_WIDTH, PHONE_WIDTH, SERVICE_NAME, LiveServer, PageWatch, assert_sound, text_of

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("width", [DESKTOP_WIDTH, PHONE_WIDTH], ids=["1280px", "390px"])
def test_status_page(server: LiveServer, page: Page, watch: PageWatch, width: int) -> None:
    response = page.goto(server.base_url + "/")
    assert response is not None and response.status == 200
    assert text_of(page, "h1") == SERVICE_NAME
    assert "Settings → Connectors → Add custom connector" in text_of(page, "main")
    assert text_of(page, ".copy code") == server.base_url + "/mcp"
    assert_sound(page, watch, service_name=SERVICE_NAME)

    for link, document_key, value in (
        ("Authorization server metadata", "issuer", server.base_url),
        ("Protected resource metadata", "resource", server.base_url + "/mcp"),
    ):
        href = page.get_by_role("link", name=link).get_attribute("href")
        assert href is not None
        # Fetched, not opened: a JSON document is not one of our pages (Chromium asks the server
        # for a favicon beside it, which is not there).
        document = page.request.get(href)
        assert document.status == 200
        assert document.json()[document_key] == value
    watch.assert_clean()
