"""The redirect URI rule (RFC 6749 §3.1.2, OAuth 2.1 §2.3.1, RFC 8252 §7.1/§7.3, RFC 9700 §4.1 and
§4.11, WHATWG URL) and where the consent page says the browser goes, with the recorded WHATWG
parses of tests/fakes.py (tests/integration/test_web_url.py runs the same tables on ada)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_oauth_bridge.domain.errors import InvalidClientMetadata, InvalidRedirectUri, InvalidRequest
from mcp_oauth_bridge.domain.ports import WebUrlParser
from mcp_oauth_bridge.domain.uris import (
    MAX_CLIENT_URL_LENGTH,
    MAX_REDIRECT_URI_LENGTH,
    RedirectDestination,
    canonical_client_url,
    canonical_redirect_uri,
    redirect_destination,
)
from tests.fakes import RecordedWebUrlParser

PARSER: WebUrlParser = RecordedWebUrlParser()

# (as sent, as stored)
ACCEPTED_REDIRECT_URIS = [
    ("https://claude.ai/api/mcp/auth_callback", "https://claude.ai/api/mcp/auth_callback"),
    ("https://client.example:8443/cb?x=1&y=2", "https://client.example:8443/cb?x=1&y=2"),
    ("https://client.example/cb?tenant=a", "https://client.example/cb?tenant=a"),
    ("https://192.0.2.10/cb", "https://192.0.2.10/cb"),
    ("https://example.com./cb", "https://example.com./cb"),
    ("http://127.0.0.1/cb", "http://127.0.0.1/cb"),
    ("http://127.0.0.1:33418/callback", "http://127.0.0.1:33418/callback"),
    ("http://127.5.6.7:8080/cb", "http://127.5.6.7:8080/cb"),
    ("http://[::1]:8080/cb", "http://[::1]:8080/cb"),
    ("http://localhost:6274/oauth/callback", "http://localhost:6274/oauth/callback"),
    ("com.example.app:/oauth/callback", "com.example.app:/oauth/callback"),
    ("io.github.someone.app:/cb", "io.github.someone.app:/cb"),
    ("com.example.app://callback", "com.example.app://callback"),
    # Internationalised hosts are stored as the browser sends them: punycode.
    ("https://аррӏе.com/cb", "https://xn--80ak6aa92e.com/cb"),
    ("https://bücher.example:8443/cb", "https://xn--bcher-kva.example:8443/cb"),
    ("https://xn--80ak6aa92e.com/cb", "https://xn--80ak6aa92e.com/cb"),
]

OS = "handed by browsers to the operating system"
REVERSE_DOMAIN = "reverse-domain form"
CANONICAL = "not in canonical form; use "
# (as sent, a fragment of the refusal)
REFUSED_REDIRECT_URIS: list[tuple[Any, str]] = [
    # schemes a browser hands to the operating system or runs
    ("search-ms:query=invoice&crumb=location:evil.example", OS),
    ("search:query=invoice", OS),
    ("ms-officecmd:open", OS),
    ("ms-msdt:-id%20PCWDiagnostic", OS),
    ("ms-settings:privacy", OS),
    ("ms-word.example:/x", OS),
    ("file:///etc/passwd", OS),
    ("javascript:alert(1)", OS),
    ("JavaScript:alert(document.cookie)", OS),
    ("data:text/html,hi", OS),
    ("vbscript:msgbox(1)", OS),
    ("about:blank", OS),
    ("blob:https://client.example/1c3b", OS),
    ("filesystem:https://client.example/temporary/x", OS),
    ("mailto:ops@client.example", OS),
    ("tel:+15551234", OS),
    ("sms:+15551234", OS),
    ("intent:scan", OS),
    ("ftp://client.example/cb", OS),
    # other schemes that are not reverse-domain private-use schemes
    ("myapp://callback", REVERSE_DOMAIN),
    ("custom:/cb", REVERSE_DOMAIN),
    ("ws://127.0.0.1/cb", REVERSE_DOMAIN),
    ("com.:/cb", REVERSE_DOMAIN),
    ("com..example:/cb", REVERSE_DOMAIN),
    ("com.example-:/cb", REVERSE_DOMAIN),
    # plain http off loopback
    ("http://client.example/cb", "loopback"),
    ("HTTP://client.example/cb", "loopback"),
    ("http://localhost.evil.example/cb", "loopback"),
    ("http://127.0.0.1.evil.example/cb", "loopback"),
    ("http://10.0.0.1/cb", "loopback"),
    ("http://192.168.1.10:8080/cb", "loopback"),
    # not the browser's own serialization
    ("HTTPS://EXAMPLE.com/cb", CANONICAL + "https://example.com/cb"),
    ("Com.Example.App:/cb", CANONICAL + "com.example.app:/cb"),
    ("https://example.com:443/cb", CANONICAL + "https://example.com/cb"),
    ("http://127.0.0.1:80/cb", CANONICAL + "http://127.0.0.1/cb"),
    ("https://example.com/a/../b", CANONICAL + "https://example.com/b"),
    ("https://example.com/./cb", CANONICAL + "https://example.com/cb"),
    ("https://example.com/%2e%2e/", CANONICAL + "https://example.com/"),
    ("https://ex%61mple.com/", CANONICAL + "https://example.com/"),
    ("https://0x7f.1/", CANONICAL + "https://127.0.0.1/"),
    ("http://0x7f.1/cb", CANONICAL + "http://127.0.0.1/cb"),
    ("http://127.1/cb", CANONICAL + "http://127.0.0.1/cb"),
    ("http://2130706433/cb", CANONICAL + "http://127.0.0.1/cb"),
    ("http://[0:0:0:0:0:0:0:1]/cb", CANONICAL + "http://[::1]/cb"),
    ("http://LOCALHOST:8080/cb", CANONICAL + "http://localhost:8080/cb"),
    ("https://example.com", CANONICAL + "https://example.com/"),
    ("https:example.com/cb", CANONICAL + "https://example.com/cb"),
    ("https:///no-host", CANONICAL + "https://no-host/"),
    ("https://@client.example/cb", CANONICAL + "https://client.example/cb"),
    ("https://exämple.com/päth", CANONICAL + "https://xn--exmple-cua.com/p%C3%A4th"),
    ("https://example.com/ü", CANONICAL + "https://example.com/%C3%BC"),
    # hosts that are not plain names or addresses
    ("https://%2e.example.com/", "plain host name"),
    ("https://..example.com/cb", "plain host name"),
    ("https://a!b.example/cb", "plain host name"),
    ("com.example.app://Ex%41/cb", "plain host name"),
    # user information
    ("https://user@client.example/cb", "user information"),
    ("https://user:password@client.example/cb", "user information"),
    ("https://client.example@evil.example/cb", "user information"),
    ("http://user@127.0.0.1:8080/cb", "user information"),
    # backslashes: browsers read them as "/" (this one goes to evil.example)
    ("https://evil.example\\.claude.ai/cb", "backslash"),
    ("https://client.example/cb\\x", "backslash"),
    # fragments, even empty
    ("https://client.example/cb#fragment", "fragment"),
    ("https://client.example/cb#", "fragment"),
    ("http://127.0.0.1:8080/cb#x", "fragment"),
    ("com.example.app:/cb#", "fragment"),
    # whitespace and control characters
    ("https://client.example/c b", "whitespace or control"),
    ("https://exa mple.com/", "whitespace or control"),
    ("https://client.example/cb\n", "whitespace or control"),
    ("\thttps://client.example/cb", "whitespace or control"),
    ("https://client.example/cb\x00", "whitespace or control"),
    ("https://client.example/cb\x7f", "whitespace or control"),
    ("https://client.example/\u0085cb", "whitespace or control"),
    ("https://client.example/\u00a0cb", "whitespace or control"),
    # text UTF-8 cannot encode
    ("https://client.example/\ud800", "UTF-8"),
    # not a URI, not a valid URL, too long, not a string
    ("/relative/callback", "absolute URI"),
    ("client.example/cb", "absolute URI"),
    ("1http://client.example/cb", "absolute URI"),
    ("http://[::1", "not a valid URL"),
    ("https://client.example/" + "a" * MAX_REDIRECT_URI_LENGTH, f"longer than {MAX_REDIRECT_URI_LENGTH}"),
    ("", "non-empty string"),
    (None, "non-empty string"),
    (7, "non-empty string"),
    (["https://client.example/cb"], "non-empty string"),
]


@pytest.mark.parametrize(("uri", "stored"), ACCEPTED_REDIRECT_URIS)
def test_accepted_redirect_uri_is_kept_in_the_browsers_form(uri: str, stored: str) -> None:
    assert canonical_redirect_uri(uri, PARSER) == stored


@pytest.mark.parametrize(("uri", "reason"), REFUSED_REDIRECT_URIS)
def test_refused_redirect_uri_says_why(uri: Any, reason: str) -> None:
    with pytest.raises(InvalidRedirectUri) as excinfo:
        canonical_redirect_uri(uri, PARSER)
    assert reason in excinfo.value.description


def test_refusal_names_the_field_and_shows_only_plain_ascii() -> None:
    with pytest.raises(InvalidRedirectUri) as excinfo:
        canonical_redirect_uri("https://client.example/cb#x", PARSER, name="redirect_uris[2]")
    assert excinfo.value.description.startswith("redirect_uris[2] https://client.example/cb#x ")
    # RFC 6749 §5.2: error_description is ASCII without '"' or '\': such a URI is not repeated.
    for uri in ("https://evil.example\\.claude.ai/cb", "https://exämple.com/päth", 'https://client.example/"#'):
        with pytest.raises(InvalidRedirectUri) as excinfo:
            canonical_redirect_uri(uri, PARSER, name="redirect_uris[0]")
        description = excinfo.value.description
        assert description.startswith("redirect_uris[0]") and uri not in description
        assert "\\" not in description and '"' not in description


CURSOR = "cursor://anysphere.cursor-mcp/oauth/callback"


def test_an_app_scheme_outside_reverse_domain_form_needs_the_operator() -> None:
    with pytest.raises(InvalidRedirectUri) as excinfo:
        canonical_redirect_uri(CURSOR, PARSER)
    assert "reverse-domain" in excinfo.value.description
    assert canonical_redirect_uri(CURSOR, PARSER, extra_schemes=frozenset({"cursor"})) == CURSOR
    # Admitting one scheme admits no other, and never a scheme browsers hand to the OS.
    with pytest.raises(InvalidRedirectUri):
        canonical_redirect_uri("vscode://callback", PARSER, extra_schemes=frozenset({"cursor"}))
    with pytest.raises(InvalidRedirectUri) as excinfo:
        canonical_redirect_uri("search-ms:query=x", PARSER, extra_schemes=frozenset({"search-ms"}))
    assert "operating system" in excinfo.value.description


def test_redirect_uri_of_the_maximum_length_is_accepted() -> None:
    uri = "https://client.example/" + "a" * (MAX_REDIRECT_URI_LENGTH - len("https://client.example/"))
    assert canonical_redirect_uri(uri, PARSER) == uri


# -- informational URLs (client_uri, logo_uri, tos_uri, policy_uri) --------------------------------


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://client.example/", "https://client.example/"),
        ("https://client.example/terms#privacy", "https://client.example/terms#privacy"),
        ("http://127.0.0.1:8080/about", "http://127.0.0.1:8080/about"),
        ("https://bücher.example:8443/cb", "https://xn--bcher-kva.example:8443/cb"),
        # Written as people write them (Claude's metadata says "https://claude.ai"): stored as
        # the browser reads them, not refused.
        ("https://claude.ai", "https://claude.ai/"),
        ("HTTPS://EXAMPLE.com/cb", "https://example.com/cb"),
    ],
)
def test_informational_url_is_kept_in_the_browsers_form(url: str, stored: str) -> None:
    assert canonical_client_url(url, PARSER, name="client_uri") == stored


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "https URL"),
        ("com.example.app:/about", "https URL"),
        ("http://client.example/", "loopback"),
        ("https://user@client.example/cb", "user information"),
        ("https://evil.example\\.claude.ai/cb", "backslash"),
        ("https://client.example/\ud800", "UTF-8"),
        ("https://client.example/" + "a" * MAX_CLIENT_URL_LENGTH, f"longer than {MAX_CLIENT_URL_LENGTH}"),
    ],
)
def test_refused_informational_url_says_why(url: str, reason: str) -> None:
    with pytest.raises(InvalidClientMetadata) as excinfo:
        canonical_client_url(url, PARSER, name="client_uri")
    assert reason in excinfo.value.description


# -- where the consent page says the browser goes ---------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "destination"),
    [
        ("https://claude.ai/api/mcp/auth_callback", RedirectDestination("claude.ai", None, app=False)),
        ("https://client.example:8443/cb?x=1&y=2", RedirectDestination("client.example:8443", None, app=False)),
        ("https://example.com./cb", RedirectDestination("example.com.", None, app=False)),
        ("https://192.0.2.10/cb", RedirectDestination("192.0.2.10", None, app=False)),
        ("http://127.0.0.1:9999/callback", RedirectDestination("http://127.0.0.1:9999", None, app=False)),
        ("http://[::1]:8080/cb", RedirectDestination("http://[::1]:8080", None, app=False)),
        ("http://localhost/cb", RedirectDestination("http://localhost", None, app=False)),
        ("com.example.app:/oauth/callback", RedirectDestination("com.example.app:", None, app=True)),
        ("com.example.app://callback", RedirectDestination("com.example.app:", None, app=True)),
        ("https://xn--80ak6aa92e.com/cb", RedirectDestination("xn--80ak6aa92e.com", "аррӏе.com", app=False)),
        (
            "https://xn--bcher-kva.example:8443/cb",
            RedirectDestination("xn--bcher-kva.example:8443", "bücher.example", app=False),
        ),
    ],
)
def test_destination_is_what_the_parser_says_the_browser_goes_to(uri: str, destination: RedirectDestination) -> None:
    assert redirect_destination(uri, PARSER) == destination


def test_destination_comes_from_the_parse_not_the_string() -> None:
    # A stored URI a browser rewrites is shown as the browser reads it (here: a registration made
    # under older rules; today's registration refuses it).
    assert redirect_destination("https://client.example@evil.example/cb", PARSER).site == "evil.example"
    assert redirect_destination("https://0x7f.1/", PARSER).site == "127.0.0.1"
    assert redirect_destination("HTTPS://EXAMPLE.com/cb", PARSER).site == "example.com"


def test_destination_of_an_unparseable_uri_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        redirect_destination("http://[::1", PARSER)
