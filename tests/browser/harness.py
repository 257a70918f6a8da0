"""What the browser tests run against: the real app served over loopback HTTP by a werkzeug
server thread (in this process, so a test can reach its storage), a stand-in for the client's
redirect URI that records what arrives there, and checks every page must pass in Chromium."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from cryptography.fernet import Fernet
from flask import Flask
from playwright.sync_api import ConsoleMessage, Dialog, Page, Response
from werkzeug.serving import BaseWSGIServer, make_server

from mcp_oauth_bridge.domain.model import Client
from mcp_oauth_bridge.domain.ports import CachedMetadataDocument
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from tests.integration.oauth_flow import pkce_pair
from tests.integration.servers import LoopbackHttpServer, free_port

# The name the test server's pages give the service (SERVICE_NAME).
SERVICE_NAME = "Contoso Tools"
VIEWPORT_HEIGHT = 900
# The two widths every page is checked at: a laptop, and a phone (iPhone 12 to 15: 390 CSS px).
DESKTOP_WIDTH = 1280
PHONE_WIDTH = 390


class LiveServer:
    """create_app() served by a threaded werkzeug server on a free loopback port."""

    def __init__(self, data_dir: Path, **environment: str) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        env = {
            "PUBLIC_URL": self.base_url,
            "DATA_DIR": str(data_dir),
            "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "TOKEN_HASH_KEY": "b" * 43,
            # One browser drives many flows from one address.
            "RATE_LIMITS": "off",
            **environment,
        }
        self.app: Flask = create_app(load_settings(env, dotenv_path=None))
        self._server: BaseWSGIServer = make_server("127.0.0.1", port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="browser-test-server", daemon=True)
        self._thread.start()

    @property
    def container(self) -> Any:
        return self.app.extensions["container"]

    def add_client(self, client: Client) -> None:
        """A client put straight into storage (operator-created and metadata-document clients)."""
        self.container.clients().add(client)

    def cache_document(self, document: dict[str, Any]) -> None:
        """A client ID metadata document as a fetch leaves it in the shared cache, fresh for an
        hour: the server uses it without fetching (these tests never leave loopback)."""
        now = int(time.time())
        self.container.metadata_documents().put_document(
            CachedMetadataDocument(
                client_id=document["client_id"], document=document, fetched_at=now, fresh_until=now + 3600, stale_until=now + 7200
            )
        )

    def register(self, redirect_uri: str, **metadata: Any) -> dict[str, Any]:
        """Dynamic Client Registration (RFC 7591) as a client does it, over HTTP."""
        body = {"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none", **metadata}
        reply = requests.post(self.base_url + "/oauth/register", json=body, timeout=10)
        assert reply.status_code == 201, reply.text
        result: dict[str, Any] = reply.json()
        return result

    def authorize_url(self, client_id: str, redirect_uri: str, state: str, **extra: str | None) -> tuple[str, str]:
        """The authorization request URL (and the PKCE verifier) a client sends the browser to."""
        verifier, challenge = pkce_pair()
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state,
            **extra,
        }
        query = urlencode({name: value for name, value in params.items() if value is not None})
        return f"{self.base_url}/oauth/authorize?{query}", verifier

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.container.storage_admin().close()


class ClientCallback:
    """The client's redirect URI on loopback: it records each request's query and answers a plain
    page, so that the browser's arrival there is seen without any real client."""

    def __init__(self) -> None:
        self.arrivals: list[dict[str, str]] = []
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                arrivals.append({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
                body = b"<!doctype html><html lang='en'><title>client</title><p>received</p></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = LoopbackHttpServer(Handler, name="client-callback")
        self.redirect_uri = f"http://127.0.0.1:{self._http.port}/callback"

    def arrival(self, state: str) -> dict[str, str]:
        """What reached the redirect URI for ``state`` (exactly one arrival)."""
        found = [query for query in self.arrivals if query.get("state") == state]
        assert len(found) == 1, f"expected one arrival with state {state!r}, got {self.arrivals!r}"
        return found[0]

    def stop(self) -> None:
        self._http.stop()


# Records a Content-Security-Policy violation as a console error, which PageWatch collects
# (Chromium logs most of them itself; the event names every one).
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("securitypolicyviolation: " + event.violatedDirective + " blocked " + event.blockedURI);
});
"""


# What Chromium logs for a response with an error status.
DOCUMENT_STATUS_MESSAGE = "Failed to load resource: the server responded with a status of"


@dataclass
class PageWatch:
    """Everything a page must not do: log an error, throw, open a dialog."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    # Pages answered with an error status on purpose (the error pages are 400 or 503).
    error_documents: set[str] = field(default_factory=set)

    def attach(self, page: Page) -> None:
        page.add_init_script(CSP_LISTENER)
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("dialog", self._dialog)

    def _response(self, response: Response) -> None:
        if response.request.is_navigation_request() and response.status >= 400:
            self.error_documents.add(response.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "warning"):
            return
        # Chromium logs a page's own error status as a failed load; that status is the page's
        # point, and any other resource failing is still reported.
        if message.text.startswith(DOCUMENT_STATUS_MESSAGE) and message.location.get("url") in self.error_documents:
            return
        self.console_errors.append(f"{message.type}: {message.text} ({message.location.get('url')})")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def assert_clean(self) -> None:
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        assert self.dialogs == [], self.dialogs


# Elements that stick out of the viewport on either side (a long name that does not wrap, a
# table wider than the screen), described for the failure message.
OVERFLOWING_ELEMENTS = """
() => {
  const width = document.documentElement.clientWidth;
  const out = [];
  for (const element of document.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > width + 0.5 || box.left < -0.5) {
      out.push(`${element.tagName.toLowerCase()}.${element.className}: ${Math.round(box.left)}..${Math.round(box.right)} of ${width}`);
    }
  }
  return out;
}
"""

# Text whose colour on its background has a contrast below WCAG 2.2 §1.4.3's minimum (4.5:1;
# 3:1 for large text). The background is the nearest ancestor's opaque background colour.
LOW_CONTRAST_TEXT = """
() => {
  const channel = (c) => { c /= 255; return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  const parse = (css) => (css.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const rgba = parse(getComputedStyle(e).backgroundColor);
      if (rgba.length === 3 || (rgba.length === 4 && rgba[3] === 1)) return rgba.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const element of document.body.querySelectorAll("*")) {
    const ownText = [...element.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (!ownText || element.getClientRects().length === 0) continue;
    const style = getComputedStyle(element);
    const [l1, l2] = [luminance(parse(style.color)), luminance(background(element))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) out.push(`${element.tagName.toLowerCase()}.${element.className}: ${ratio.toFixed(2)}`);
  }
  return out;
}
"""


def assert_sound(page: Page, watch: PageWatch, *, service_name: str) -> None:
    """The checks every page of ours passes, at whatever width the page is open."""
    overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert overflow[0] <= overflow[1], f"the page scrolls sideways: {overflow[0]} px wide in {overflow[1]} px"
    assert page.evaluate(OVERFLOWING_ELEMENTS) == []
    assert page.evaluate(LOW_CONTRAST_TEXT) == []
    assert page.evaluate("() => document.documentElement.lang") == "en"
    assert page.locator("h1").count() == 1
    assert service_name in page.title()
    watch.assert_clean()


def text_of(page: Page, selector: str) -> str:
    """The element's text as a person reads it (whitespace collapsed)."""
    return " ".join(page.locator(selector).inner_text().split())

