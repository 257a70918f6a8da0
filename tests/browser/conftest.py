"""Fixtures of the browser tests: one Chromium for all of them (Debian's, see chromium.py), a fresh
browser context per test at the width the test asks for, the app served over loopback HTTP, and the
client's redirect URI.

The browser, the server and the callback live as long as this package's tests (scope "package":
each pytest worker runs them one after another, and tears them down before it moves on). Not
longer: Playwright's synchronous API marks an asyncio loop as running in the thread while it is
open, and the tests after these (the MCP SDK's, anyio's) start loops of their own."""

from __future__ import annotations

from typing import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from .chromium import ChromiumUnavailable, chromium_executable
from .harness import DESKTOP_WIDTH, SERVICE_NAME, VIEWPORT_HEIGHT, ClientCallback, LiveServer, PageWatch

# Every name resolves to nothing inside the browser: whatever a page links or redirects to, no
# request (not even a DNS query) leaves loopback. The tests use 127.0.0.1 only.
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
# Every timeout a page action may wait: generous for a loaded CI machine, bounded all the same.
ACTION_TIMEOUT_MS = 15_000


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    try:
        executable = chromium_executable()
    except ChromiumUnavailable as exc:
        # Never skipped: the tests say what to install.
        pytest.fail(str(exc), pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=[LOOPBACK_ONLY])
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def client_callback() -> Iterator[ClientCallback]:
    callback = ClientCallback()
    yield callback
    callback.stop()


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("browser-server"), SERVICE_NAME=SERVICE_NAME)
    yield live
    live.stop()


@pytest.fixture
def width() -> int:
    """The viewport's width; a test checked at both widths parametrizes it (BOTH_WIDTHS)."""
    return DESKTOP_WIDTH


@pytest.fixture
def context(browser: Browser, width: int) -> Iterator[BrowserContext]:
    """A fresh context (no cookies, no storage) per test."""
    context = browser.new_context(viewport={"width": width, "height": VIEWPORT_HEIGHT})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(context: BrowserContext, watch: PageWatch) -> Page:
    page = context.new_page()
    watch.attach(page)
    return page
