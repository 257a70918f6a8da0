#!/usr/bin/env python3
"""Call the `whoami` tool of an mcp-oauth-bridge server with the official MCP Python SDK.

The SDK does what Claude does: it calls /mcp, gets a 401 pointing at the protected resource
metadata, discovers the authorization server, registers itself (Dynamic Client Registration),
and runs the authorization code flow with PKCE; then it lists the tools and calls `whoami`.

Needs the official MCP SDK, 2.3 or later (for `Client(mode=...)` and RFC 9207 `iss` checks),
and requests:

    pip install mcp requests

Two ways to sign in:

- In your browser (the default): the script listens on http://127.0.0.1:<port>/callback,
  opens the consent page in the system browser, and waits for the redirect back.

      python examples/whoami.py --url http://127.0.0.1:8000/mcp

- Headless, for the built-in fake identity provider only: the script approves the consent page
  and signs in as NAME itself, over HTTP, like a browser would.

      python examples/whoami.py --username alice

`--mode` picks how the client talks MCP: `legacy` (the initialize handshake, protocol
2025-11-25), `2026-07-28` (stateless, no handshake), or `auto` (try `server/discover`, fall back
to initialize). Tokens are kept in memory only, so every run signs in again.
"""

from __future__ import annotations

import argparse
import logging
import queue
import re
import sys
import threading
import webbrowser
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

try:
    import anyio
    import httpx2
    import requests
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthRegistrationError, OAuthTokenError
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
except ImportError as missing:  # pragma: no cover - an install hint, not logic
    raise SystemExit(f"{missing}: this example needs the MCP SDK 2.3 or later and requests: pip install 'mcp>=2.3' requests")

DEFAULT_URL = "http://127.0.0.1:8000/mcp"
# Headless mode never serves its redirect URI: it only reads the redirect that points there.
HEADLESS_REDIRECT_URI = "http://127.0.0.1:9999/callback"
CALLBACK_WAIT_SECONDS = 300
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
FORM_ACTION = re.compile(r'<form method="post"(?: action="([^"]*)")?>')


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class SignInFailed(Exception):
    """The sign-in did not end with an authorization code."""


class InMemoryTokenStorage:
    """The SDK's TokenStorage protocol, in memory: the registration and tokens of this run."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def result_from_redirect(params: dict[str, str]) -> AuthorizationCodeResult:
    if "code" not in params:
        error = params.get("error", "no code in the redirect")
        raise SignInFailed(f"authorization failed: {error}: {params.get('error_description', '')}".rstrip(": "))
    # The SDK checks iss against the issuer it discovered (RFC 9207).
    return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


# -- sign-in in the system browser, with a loopback callback listener ----------------------------


class LoopbackCallback:
    """Listens on http://127.0.0.1:<port>/callback for the authorization server's redirect."""

    def __init__(self, port: int = 0) -> None:
        self._results: queue.Queue[dict[str, str]] = queue.Queue()
        results = self._results

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                if parts.path != "/callback":
                    self.send_error(404)
                    return
                results.put({key: values[0] for key, values in parse_qs(parts.query).items()})
                body = b"<!doctype html><title>Signed in</title><p>Done: you can close this tab and go back to the terminal.</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query carries the code: keep it off the terminal

        self._server = HTTPServer(("127.0.0.1", port), Handler)
        self.redirect_uri = f"http://127.0.0.1:{self._server.server_port}/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @contextmanager
    def running(self) -> Iterator[LoopbackCallback]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    async def redirect_handler(self, authorization_url: str) -> None:
        say("Opening the sign-in page in your browser. If it does not open, visit:")
        say(f"  {authorization_url}")
        webbrowser.open(authorization_url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        say(f"Waiting for the redirect to {self.redirect_uri} ...")
        try:
            params = await anyio.to_thread.run_sync(lambda: self._results.get(timeout=CALLBACK_WAIT_SECONDS))
        except queue.Empty:
            raise SignInFailed(f"no redirect came back within {CALLBACK_WAIT_SECONDS} seconds") from None
        return result_from_redirect(params)


# -- headless sign-in at the fake identity provider ----------------------------------------------


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(HIDDEN_INPUT.findall(html))


def _form_action(page: requests.Response) -> str:
    match = FORM_ACTION.search(page.text)
    if match is None:
        raise SignInFailed(f"no form on {page.url} (is the server using IDP_PROVIDER=fake?)")
    action: str = match.group(1) or urlsplit(page.url).path
    return urljoin(page.url, action)


def _expect(response: requests.Response, status: int, step: str) -> None:
    if response.status_code != status:
        raise SignInFailed(f"{step}: expected HTTP {status}, got {response.status_code} from {response.url}")


def _location(response: requests.Response) -> str:
    return urljoin(response.url, response.headers["Location"])


def sign_in_with_fake_idp(session: requests.Session, authorization_url: str, username: str) -> dict[str, str]:
    """Consent page → approve → fake sign-in → /oauth/callback; the query of the final redirect."""
    consent_page = session.get(authorization_url, allow_redirects=False, timeout=30)
    _expect(consent_page, 200, "consent page")
    to_idp = session.post(
        _form_action(consent_page),
        data={**_hidden_fields(consent_page.text), "decision": "approve"},
        allow_redirects=False,
        timeout=30,
    )
    _expect(to_idp, 303, "consent")
    sign_in_page = session.get(_location(to_idp), allow_redirects=False, timeout=30)
    _expect(sign_in_page, 200, "sign-in page (headless mode needs the fake identity provider)")
    to_callback = session.post(
        _form_action(sign_in_page),
        data={**_hidden_fields(sign_in_page.text), "action": "sign_in", "username": username},
        allow_redirects=False,
        timeout=30,
    )
    _expect(to_callback, 303, "fake sign-in")
    back = session.get(_location(to_callback), allow_redirects=False, timeout=30)
    _expect(back, 302, "identity provider callback")
    return {key: values[0] for key, values in parse_qs(urlsplit(_location(back)).query).items()}


class HeadlessBrowser:
    def __init__(self, username: str) -> None:
        self.username = username
        self.session = requests.Session()  # keeps the consent cookie
        self.redirect_uri = HEADLESS_REDIRECT_URI
        self._params: dict[str, str] | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        say(f"Approving the consent page and signing in as {self.username!r} at the fake identity provider")
        self._params = await anyio.to_thread.run_sync(
            sign_in_with_fake_idp, self.session, authorization_url, self.username
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        params, self._params = self._params, None
        if params is None:
            raise SignInFailed("the callback came before the sign-in")
        return result_from_redirect(params)


# -- the MCP client ------------------------------------------------------------------------------


async def whoami(url: str, mode: str, browser: LoopbackCallback | HeadlessBrowser) -> int:
    storage = InMemoryTokenStorage()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-oauth-bridge whoami example",
            redirect_uris=[browser.redirect_uri],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool("whoami", {})
            server = client.server_info  # None when a 2026-07-28 client skipped server/discover
            about = f"{server.name} {server.version}, " if server else ""
            print(f"Connected to {url} ({about}protocol {client.protocol_version})")
            print(f"Tools: {', '.join(tool.name for tool in tools.tools)}")
            print("whoami:")
            for block in result.content:
                for line in getattr(block, "text", "").splitlines():
                    print(f"  {line}")
            return 1 if result.is_error else 0


EXPECTED_ERRORS = (SignInFailed, OAuthFlowError, OAuthRegistrationError, OAuthTokenError, httpx2.HTTPError, requests.RequestException)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups: the SDK runs the transport in a task group."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def run(url: str, mode: str, browser: LoopbackCallback | HeadlessBrowser) -> int:
    try:
        return anyio.run(whoami, url, mode, browser)
    except Exception as error:
        expected = [leaf for leaf in _leaves(error) if isinstance(leaf, EXPECTED_ERRORS)]
        if not expected:
            raise
        for leaf in expected:
            say(f"error: {leaf}" + (f" ({url})" if isinstance(leaf, httpx2.TransportError) else ""))
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the MCP endpoint (default {DEFAULT_URL})")
    parser.add_argument(
        "--username",
        help="sign in headless as NAME at the fake identity provider (default: open the system browser)",
    )
    parser.add_argument(
        "--mode",
        choices=("legacy", "2026-07-28", "auto"),
        default="auto",
        help="legacy: initialize handshake; 2026-07-28: stateless; auto: discover, then fall back (default)",
    )
    parser.add_argument("--port", type=int, default=0, help="port of the browser-mode callback listener (default: any free port)")
    parser.add_argument("--verbose", action="store_true", help="log what the SDK does (HTTP requests, OAuth steps)")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    else:
        # The SDK logs a traceback for a failed OAuth flow; main() reports the error itself.
        logging.getLogger("mcp").setLevel(logging.CRITICAL)

    if args.username:
        return run(args.url, args.mode, HeadlessBrowser(args.username))
    with LoopbackCallback(args.port).running() as callback:
        return run(args.url, args.mode, callback)


if __name__ == "__main__":
    sys.exit(main())
