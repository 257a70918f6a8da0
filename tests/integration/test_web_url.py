"""The WebUrlParser adapter on ada (WHATWG URL Standard) for real: what browsers make of tricky
URLs, the redirect URI rule run on it, and the unit tests' recorded fake checked against it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mcp_oauth_bridge.adapters.web_url import AdaWebUrlParser
from mcp_oauth_bridge.domain.errors import InvalidRedirectUri
from mcp_oauth_bridge.domain.ports import WebUrl
from mcp_oauth_bridge.domain.uris import RedirectDestination, canonical_redirect_uri, redirect_destination
from tests.fakes import RECORDED_WHATWG_PARSES, plain_url
from tests.unit.test_uris import ACCEPTED_REDIRECT_URIS, REFUSED_REDIRECT_URIS

PARSER = AdaWebUrlParser()


# -- what a browser makes of a URL ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "href", "hostname"),
    [
        # The consent page once showed "evil.example\.claude.ai"; a browser goes to evil.example.
        ("https://evil.example\\.claude.ai/cb", "https://evil.example/.claude.ai/cb", "evil.example"),
        ("https://client.example@evil.example/cb", "https://client.example@evil.example/cb", "evil.example"),
        ("HTTPS://EXAMPLE.com/cb", "https://example.com/cb", "example.com"),
        ("https://ex%61mple.com/", "https://example.com/", "example.com"),
        ("https://%2e.example.com/", "https://..example.com/", "..example.com"),
        ("https://0x7f.1/", "https://127.0.0.1/", "127.0.0.1"),
        ("https://аррӏе.com/cb", "https://xn--80ak6aa92e.com/cb", "xn--80ak6aa92e.com"),
        ("https://example.com:443/cb", "https://example.com/cb", "example.com"),
        ("https://example.com/%2e%2e/", "https://example.com/", "example.com"),
    ],
)
def test_ada_reads_urls_as_browsers_do(url: str, href: str, hostname: str) -> None:
    parsed = PARSER.parse(url)
    assert parsed is not None
    assert (parsed.href, parsed.hostname) == (href, hostname)


def test_punycode_hosts_are_also_given_in_unicode_for_display() -> None:
    parsed = PARSER.parse("https://xn--80ak6aa92e.com/cb")
    assert parsed is not None and parsed.unicode_hostname == "аррӏе.com"
    parsed = PARSER.parse("http://[::1]:8080/cb")
    assert parsed is not None and (parsed.hostname, parsed.port, parsed.unicode_hostname) == ("[::1]", "8080", "[::1]")


@pytest.mark.parametrize("url", ["http://[::1", "https://exa mple.com/", "https://client.example/\ud800", "not a url", ""])
def test_what_is_not_a_url_parses_to_none(url: str) -> None:
    assert PARSER.parse(url) is None


# -- the redirect URI rule on the real parser -------------------------------------------------------


@pytest.mark.parametrize(("uri", "stored"), ACCEPTED_REDIRECT_URIS)
def test_accepted_redirect_uri_with_ada(uri: str, stored: str) -> None:
    assert canonical_redirect_uri(uri, PARSER) == stored


@pytest.mark.parametrize(("uri", "reason"), REFUSED_REDIRECT_URIS)
def test_refused_redirect_uri_with_ada(uri: Any, reason: str) -> None:
    with pytest.raises(InvalidRedirectUri) as excinfo:
        canonical_redirect_uri(uri, PARSER)
    assert reason in excinfo.value.description


@pytest.mark.parametrize(
    ("uri", "site", "unicode_host"),
    [
        ("https://evil.example\\.claude.ai/cb", "evil.example", None),
        ("https://client.example@evil.example/cb", "evil.example", None),
        ("HTTPS://EXAMPLE.com/cb", "example.com", None),
        ("https://ex%61mple.com/", "example.com", None),
        ("https://0x7f.1/", "127.0.0.1", None),
        ("https://example.com:8443/cb", "example.com:8443", None),
        ("https://example.com./cb", "example.com.", None),
        ("https://аррӏе.com/cb", "xn--80ak6aa92e.com", "аррӏе.com"),
    ],
)
def test_destination_of_any_uri_is_the_hosts_a_browser_goes_to(uri: str, site: str, unicode_host: str | None) -> None:
    assert redirect_destination(uri, PARSER) == RedirectDestination(site, unicode_host, app=False)


# -- the unit tests' fake tells the truth -----------------------------------------------------------


@pytest.mark.parametrize("url", sorted(RECORDED_WHATWG_PARSES))
def test_recorded_parse_is_adas(url: str) -> None:
    assert PARSER.parse(url) == RECORDED_WHATWG_PARSES[url]


def _plain_candidates(rng: random.Random, count: int) -> list[str]:
    """URLs built near the fake's plain shape: most are in it, some just outside."""
    schemes = ["https", "http", "com.example.app", "io.github.x-y.app", "HTTPS", "a1.b"]
    hosts = ["client.example", "a.b.c", "localhost", "127.0.0.1", "192.0.2.255", "[::1]", "x-y.example",
             "1.2.3.400", "0x7f.1", "a.0", "example.123", "xn--80ak6aa92e.com", "a--b.example", "-a.example", "a_b.example"]
    ports = ["", ":8080", ":443", ":80", ":65535", ":65536", ":0", ":080"]
    segments = ["cb", "a.b", ".", "..", "%2e", "A~z", "x-y_z", "", "callback"]
    queries = ["", "?x=1", "?a=b&c=d", "?", "?x=%20"]
    fragments = ["", "#", "#frag", "#a=b"]
    urls = []
    for _ in range(count):
        scheme = rng.choice(schemes)
        authority = "//" + rng.choice(hosts) + rng.choice(ports) if rng.random() < 0.85 else ""
        path = "/" + "/".join(rng.choice(segments) for _ in range(rng.randint(0, 3)))
        urls.append(f"{scheme}:{authority}{path}{rng.choice(queries)}{rng.choice(fragments)}")
    return urls


def test_every_url_the_fake_calls_plain_is_left_as_it_is_by_ada() -> None:
    rng = random.Random(8)
    plain = 0
    for url in _plain_candidates(rng, 3000):
        expected = plain_url(url)
        if expected is None:
            continue
        plain += 1
        assert PARSER.parse(url) == expected, url
    # The sample exercises the shape, not only its edges.
    assert plain > 300


def test_the_fake_parse_of_plain_urls_has_every_field_right() -> None:
    assert plain_url("http://127.0.0.1:9999/callback?x=1") == WebUrl(
        href="http://127.0.0.1:9999/callback?x=1", scheme="http", username="", password="",
        hostname="127.0.0.1", port="9999", unicode_hostname="127.0.0.1",
    )
    assert PARSER.parse("http://127.0.0.1:9999/callback?x=1") == plain_url("http://127.0.0.1:9999/callback?x=1")
