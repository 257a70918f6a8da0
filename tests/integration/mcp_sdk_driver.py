"""Drive /mcp with the official MCP Python SDK client and a headless "browser".

The SDK's ``OAuthClientProvider`` discovers the server (protected resource metadata, then
authorization server metadata), registers (DCR) or presents its client ID metadata document's
URL as its client id (``client_metadata_url``), and runs the authorization code flow with
PKCE. It hands the authorization URL to a *redirect handler* and then awaits a *callback
handler* for the redirect back. ``HeadlessBrowser`` plays the person: with a ``requests``
session (cookies matter: the consent form is bound to the browser cookie) it opens the consent
page, approves, signs in at the fake identity provider, follows ``/oauth/callback``, and takes
the final redirect to the client's ``redirect_uri`` apart (``code``, ``state``, ``iss``; the
redirect URI itself is never served). ``examples/whoami.py`` mirrors this module.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import AsyncIterator, Callable
from urllib.parse import parse_qs, urljoin, urlsplit

import anyio
import httpx2
import requests
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:9999/callback"


class InMemoryTokenStorage:
    """The SDK's ``TokenStorage`` protocol, in memory, keeping every token set it was given."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.token_history: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class BrowserError(AssertionError):
    """The headless browser met a page or redirect it did not expect."""


class _FormReader(HTMLParser):
    """The first POST form of a page: its action and hidden inputs, whatever the attribute order,
    quoting or markup around them (the pages' styling is free to change)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found_form = False
        self.action: str | None = None
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and not self.found_form and attributes.get("method", "get").lower() == "post":
            self.found_form = True
            self.action = attributes.get("action") or None
        elif tag == "input" and attributes.get("type", "").lower() == "hidden" and "name" in attributes:
            self.hidden.setdefault(attributes["name"], attributes.get("value", ""))


def _read_form(html: str) -> _FormReader:
    reader = _FormReader()
    reader.feed(html)
    reader.close()
    return reader


def _hidden_fields(html: str) -> dict[str, str]:
    return _read_form(html).hidden


def _expect(response: requests.Response, status: int, step: str) -> None:
    if response.status_code != status:
        raise BrowserError(f"{step}: expected HTTP {status}, got {response.status_code}: {response.text[:500]}")


def _form_action(page: requests.Response) -> str:
    """Where the page's form posts to (no action: back to the page's own path)."""
    form = _read_form(page.text)
    if not form.found_form:
        raise BrowserError(f"no form on {page.url}: {page.text[:500]}")
    action: str = form.action or urlsplit(page.url).path
    return urljoin(page.url, action)


def _location(response: requests.Response) -> str:
    # Location may be relative (RFC 9110 §10.2.2).
    return urljoin(response.url, response.headers["Location"])


def sign_in_with_fake_idp(
    session: requests.Session,
    authorization_url: str,
    username: str,
    *,
    consent_pages: list[str] | None = None,
    final_redirects: list[str] | None = None,
    timeout: float = 30,
) -> dict[str, str]:
    """Consent page → approve → fake sign-in → /oauth/callback; return the query of the final
    redirect to the client's redirect URI (``code``, ``state``, ``iss``, or ``error``).
    The consent page's HTML is appended to ``consent_pages`` and the final redirect's whole URL
    (captured, never followed) to ``final_redirects`` when given."""
    consent_page = session.get(authorization_url, allow_redirects=False, timeout=timeout)
    _expect(consent_page, 200, "consent page")
    if consent_pages is not None:
        consent_pages.append(consent_page.text)
    form = _hidden_fields(consent_page.text)
    if not {"pending_id", "csrf_token"} <= form.keys():
        raise BrowserError(f"consent page without its form: {consent_page.text[:500]}")
    to_idp = session.post(_form_action(consent_page), data={**form, "decision": "approve"}, allow_redirects=False, timeout=timeout)
    _expect(to_idp, 303, "consent decision")

    sign_in_url = _location(to_idp)
    sign_in_page = session.get(sign_in_url, allow_redirects=False, timeout=timeout)
    _expect(sign_in_page, 200, "fake identity provider sign-in page")
    sign_in_form = {**_hidden_fields(sign_in_page.text), "action": "sign_in", "username": username}
    to_callback = session.post(_form_action(sign_in_page), data=sign_in_form, allow_redirects=False, timeout=timeout)
    _expect(to_callback, 303, "fake sign-in")

    back = session.get(_location(to_callback), allow_redirects=False, timeout=timeout)
    _expect(back, 302, "identity provider callback")
    # The client's redirect URI: not fetched, only read.
    if final_redirects is not None:
        final_redirects.append(_location(back))
    return {key: values[0] for key, values in parse_qs(urlsplit(_location(back)).query).items()}


def sign_in_with_redirecting_idp(
    session: requests.Session,
    authorization_url: str,
    username: str,
    *,
    consent_pages: list[str] | None = None,
    timeout: float = 30,
) -> dict[str, str]:
    """Consent page → approve → the upstream provider's authorize endpoint, where the person is
    already signed in (it redirects straight back) → /oauth/callback; return the query of the
    final redirect to the client's redirect URI. ``username`` is the upstream's to decide."""
    consent_page = session.get(authorization_url, allow_redirects=False, timeout=timeout)
    _expect(consent_page, 200, "consent page")
    if consent_pages is not None:
        consent_pages.append(consent_page.text)
    form = _hidden_fields(consent_page.text)
    if not {"pending_id", "csrf_token"} <= form.keys():
        raise BrowserError(f"consent page without its form: {consent_page.text[:500]}")
    to_idp = session.post(_form_action(consent_page), data={**form, "decision": "approve"}, allow_redirects=False, timeout=timeout)
    _expect(to_idp, 303, "consent decision")

    upstream = session.get(_location(to_idp), allow_redirects=False, timeout=timeout)
    _expect(upstream, 302, "identity provider authorize endpoint")
    back = session.get(_location(upstream), allow_redirects=False, timeout=timeout)
    _expect(back, 302, "identity provider callback")
    # The client's redirect URI: not fetched, only read.
    return {key: values[0] for key, values in parse_qs(urlsplit(_location(back)).query).items()}


@dataclass
class HeadlessBrowser:
    """The SDK's redirect and callback handlers, played by a scripted browser."""

    username: str
    session: requests.Session = field(default_factory=requests.Session)
    authorization_urls: list[str] = field(default_factory=list)
    consent_pages: list[str] = field(default_factory=list)
    _result: dict[str, str] | None = None
    # How the person signs in upstream (default: the fake identity provider's form).
    sign_in: Callable[..., dict[str, str]] = sign_in_with_fake_idp

    @property
    def invocations(self) -> int:
        return len(self.authorization_urls)

    async def redirect_handler(self, authorization_url: str) -> None:
        self.authorization_urls.append(authorization_url)
        # requests blocks: keep the event loop free while the "person" clicks through.
        self._result = await anyio.to_thread.run_sync(
            lambda: self.sign_in(
                self.session, authorization_url, self.username, consent_pages=self.consent_pages
            )
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        if result is None:
            raise BrowserError("callback handler called before the redirect handler")
        if "code" not in result:
            raise BrowserError(f"authorization failed: {result}")
        # iss goes to the SDK, which checks it against the discovered issuer (RFC 9207 §2.4).
        return AuthorizationCodeResult(code=result["code"], state=result.get("state"), iss=result.get("iss"))


CLIENT_NAME = "MCP SDK end-to-end test"


def client_metadata(redirect_uri: str = REDIRECT_URI, client_name: str = CLIENT_NAME) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[redirect_uri],  # type: ignore[list-item]  # pydantic parses the string
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_post",
    )


def oauth_provider(
    mcp_url: str,
    storage: InMemoryTokenStorage,
    browser: HeadlessBrowser,
    redirect_uri: str = REDIRECT_URI,
    client_metadata_url: str | None = None,
) -> OAuthClientProvider:
    """The SDK's OAuth provider; with ``client_metadata_url`` (an https URL, the SDK insists) it
    presents that URL as its client id wherever the server advertises
    ``client_id_metadata_document_supported``, instead of registering."""
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=client_metadata(redirect_uri),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        client_metadata_url=client_metadata_url,
    )


@dataclass(frozen=True)
class SentRequest:
    method: str
    path: str
    grant_type: str | None
    status: int


@dataclass
class RequestLog:
    """Every request the SDK's HTTP client sent (the auth flow's own included) and its status."""

    entries: list[SentRequest] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        grant_type = None
        if request.method == "POST" and request.url.path.endswith("/token"):
            form = parse_qs(request.content.decode())
            grant_type = form.get("grant_type", [None])[0]
        self.entries.append(SentRequest(request.method, request.url.path, grant_type, response.status_code))

    def token_requests(self, grant_type: str) -> list[SentRequest]:
        return [entry for entry in self.entries if entry.grant_type == grant_type]

    def statuses(self, path: str) -> list[int]:
        return [entry.status for entry in self.entries if entry.path == path]


@asynccontextmanager
async def connected_client(
    mcp_url: str, auth: OAuthClientProvider, mode: str, log: RequestLog | None = None
) -> AsyncIterator[Client]:
    """An SDK ``Client`` over Streamable HTTP with ``auth`` on its HTTP client."""
    hooks = {"response": [log.on_response]} if log is not None else {}
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0), event_hooks=hooks) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode=mode) as client:
            yield client


def text_of(result: object) -> str:
    """The text blocks of a CallToolResult, joined."""
    content = getattr(result, "content", [])
    return "\n".join(getattr(block, "text", "") for block in content)
