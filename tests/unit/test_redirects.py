"""Redirect URI matching (RFC 6749 §3.1.2.3, RFC 8252 §7.3) and authorization responses (RFC 9207)."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.services.redirects import ClientRedirect, redirect_uri_matches


@pytest.mark.parametrize(
    "uri",
    [
        "https://client.example/callback",
        "https://client.example/callback?tenant=a",
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
        "com.example.app:/oauth",
    ],
)
def test_identical_uri_matches(uri: str) -> None:
    assert redirect_uri_matches(uri, uri)


@pytest.mark.parametrize(
    ("requested", "registered"),
    [
        ("http://127.0.0.1:51234/callback", "http://127.0.0.1/callback"),
        ("http://127.0.0.1:51234/callback", "http://127.0.0.1:3000/callback"),
        ("http://127.0.0.1/callback", "http://127.0.0.1:3000/callback"),
        ("http://localhost:6274/oauth/callback", "http://localhost/oauth/callback"),
        ("http://[::1]:9000/cb", "http://[::1]:8000/cb"),
        ("http://127.0.0.1:4000/cb?x=1", "http://127.0.0.1/cb?x=1"),
    ],
)
def test_loopback_http_may_vary_the_port(requested: str, registered: str) -> None:
    assert redirect_uri_matches(requested, registered)


@pytest.mark.parametrize(
    ("requested", "registered"),
    [
        # path
        ("https://client.example/callback/other", "https://client.example/callback"),
        ("https://client.example/callback/", "https://client.example/callback"),
        ("https://client.example/Callback", "https://client.example/callback"),
        ("https://client.example/", "https://client.example/callback"),
        # query
        ("https://client.example/callback?x=1", "https://client.example/callback"),
        ("https://client.example/callback", "https://client.example/callback?x=1"),
        # host / case / subdomain
        ("https://CLIENT.example/callback", "https://client.example/callback"),
        ("https://evil.client.example/callback", "https://client.example/callback"),
        ("https://client.example.evil/callback", "https://client.example/callback"),
        # port on a non-loopback host
        ("https://client.example:8443/callback", "https://client.example/callback"),
        # scheme
        ("http://client.example/callback", "https://client.example/callback"),
        # fragment
        ("https://client.example/callback#x", "https://client.example/callback"),
        # userinfo
        ("https://user@client.example/callback", "https://client.example/callback"),
    ],
)
def test_non_loopback_uris_must_match_exactly(requested: str, registered: str) -> None:
    assert not redirect_uri_matches(requested, registered)


@pytest.mark.parametrize(
    ("requested", "registered"),
    [
        # https loopback: only http loopback may vary the port
        ("https://127.0.0.1:9000/cb", "https://127.0.0.1:8000/cb"),
        ("https://localhost:9000/cb", "https://localhost/cb"),
        # scheme changes
        ("https://127.0.0.1:8000/cb", "http://127.0.0.1:8000/cb"),
        ("http://127.0.0.1:8000/cb", "https://127.0.0.1:8000/cb"),
        # another loopback host
        ("http://localhost:8000/cb", "http://127.0.0.1:8000/cb"),
        ("http://127.0.0.2:8000/cb", "http://127.0.0.1:8000/cb"),
        ("http://[::1]:8000/cb", "http://127.0.0.1:8000/cb"),
        # path, trailing slash, case, query
        ("http://127.0.0.1:9000/other", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:9000/cb/", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:9000/CB", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:9000/cb?x=1", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:9000/cb", "http://127.0.0.1/cb?x=1"),
        # fragment, userinfo, bogus port
        ("http://127.0.0.1:9000/cb#frag", "http://127.0.0.1/cb"),
        ("http://user@127.0.0.1:9000/cb", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:9000@evil.example/cb", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:99999/cb", "http://127.0.0.1/cb"),
        ("http://127.0.0.1:abc/cb", "http://127.0.0.1/cb"),
        # another host entirely
        ("http://evil.example:9000/cb", "http://127.0.0.1/cb"),
        # an http registration that is not loopback never varies the port
        ("http://client.example:9000/cb", "http://client.example/cb"),
        ("http://client.example/cb", "http://client.example:8080/cb"),
        ("http://192.168.1.5:9000/cb", "http://192.168.1.5:8000/cb"),
    ],
)
def test_loopback_variations_other_than_the_port_do_not_match(requested: str, registered: str) -> None:
    assert not redirect_uri_matches(requested, registered)


def test_client_redirect_adds_state_and_iss_after_the_response_parameters() -> None:
    redirect = ClientRedirect.build("https://client.example/cb", issuer="https://as.example", state="s 1", code="abc")
    assert redirect.params == (("code", "abc"), ("state", "s 1"), ("iss", "https://as.example"))
    assert redirect.url() == "https://client.example/cb?code=abc&state=s+1&iss=https%3A%2F%2Fas.example"


def test_client_redirect_without_state_still_carries_iss() -> None:
    redirect = ClientRedirect.build("https://client.example/cb", issuer="https://as.example", state=None, error="access_denied")
    assert redirect.url() == "https://client.example/cb?error=access_denied&iss=https%3A%2F%2Fas.example"


def test_client_redirect_keeps_the_registered_query() -> None:
    redirect = ClientRedirect.build("https://client.example/cb?tenant=a", issuer="https://as.example", state=None, code="c")
    assert redirect.url() == "https://client.example/cb?tenant=a&code=c&iss=https%3A%2F%2Fas.example"
