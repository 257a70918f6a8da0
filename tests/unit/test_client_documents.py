"""Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document-02): the URL rules
(§3), the document rules (§4), the operator's host policy and the redirect URI allowlist."""

from __future__ import annotations

import json

import pytest

from mcp_oauth_bridge.domain.client_documents import (
    MAX_DOCUMENT_BYTES,
    MetadataDocumentPolicy,
    RedirectUriAllowlist,
    check_client_id_url,
    check_document,
    parse_document,
)
from mcp_oauth_bridge.domain.errors import InvalidClient, InvalidClientMetadata

CLIENT_ID = "https://app.example.com/oauth/client.json"


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/client",
        "https://app.example.com:8443/a/b.json",
        "https://app.example.com/client?v=1",
    ],
)
def test_valid_client_id_urls(url: str) -> None:
    check_client_id_url(url)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://app.example.com/client", "https"),
        ("ftp://app.example.com/client", "https"),
        ("https://app.example.com", "path"),
        ("https://app.example.com/", "path"),
        ("https://user:pw@app.example.com/client", "user name"),
        ("https://user@app.example.com/client", "user name"),
        ("https://app.example.com/client#frag", "fragment"),
        ("https://app.example.com/a/../client", ". or .."),
        ("https://app.example.com/./client", ". or .."),
        ("https://app.example.com/a/%2e%2E/client", ". or .."),
        ("https:///client", "host"),
        ("https://app.example.com/cl ient", "ASCII"),
        ("https://app.example.com:99999/client", "valid URL"),
        ("http://127.0.0.1:8000/client", "https"),
    ],
)
def test_client_id_url_rules(url: str, rule: str) -> None:
    with pytest.raises(InvalidClient) as caught:
        check_client_id_url(url)
    assert rule in (caught.value.description or "")


def test_loopback_http_only_when_allowed() -> None:
    check_client_id_url("http://127.0.0.1:8000/client", allow_loopback=True)
    check_client_id_url("http://localhost:8000/client", allow_loopback=True)
    with pytest.raises(InvalidClient):
        check_client_id_url("http://app.example.com/client", allow_loopback=True)


def _document(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_name": "App",
        "redirect_uris": ["https://app.example.com/callback"],
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def test_document_rules_accept_a_minimal_document() -> None:
    check_document(_document(), CLIENT_ID)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": "https://app.example.com/oauth/client.json/"}, "client_id"),
        ({"client_id": "https://APP.example.com/oauth/client.json"}, "client_id"),
        ({"client_id": None}, "client_id"),
        ({"client_name": None}, "client_name"),
        ({"redirect_uris": None}, "redirect_uris"),
        ({"client_secret": "s3cret"}, "client_secret"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "shared secret"),
        ({"token_endpoint_auth_method": "client_secret_post"}, "shared secret"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "not supported"),
    ],
)
def test_document_rules_refuse(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidClientMetadata) as caught:
        check_document(_document(**overrides), CLIENT_ID)
    assert message in (caught.value.description or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>hello</html>", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"{" + b" " * MAX_DOCUMENT_BYTES + b"}", "larger than"),
    ],
)
def test_parse_document_refuses_what_is_not_one_small_object(body: bytes, message: str) -> None:
    with pytest.raises(InvalidClientMetadata) as caught:
        parse_document(body)
    assert message in (caught.value.description or "")


def test_parse_document_reads_an_object() -> None:
    assert parse_document(json.dumps(_document()).encode()) == _document()


@pytest.mark.parametrize(
    ("allowed", "denied", "client_id", "accepted"),
    [
        ((), (), CLIENT_ID, True),
        (("app.example.com",), (), CLIENT_ID, True),
        (("other.example.com",), (), CLIENT_ID, False),
        (("*.example.com",), (), CLIENT_ID, True),
        # *.example.com is the subdomains only.
        (("*.example.com",), (), "https://example.com/client", False),
        # Not a suffix match on the string: evilexample.com is not under example.com.
        (("*.example.com",), (), "https://evilexample.com/client", False),
        ((), ("app.example.com",), CLIENT_ID, False),
        (("*.example.com",), ("app.example.com",), CLIENT_ID, False),
        ((), ("*.example.com",), "https://deep.app.example.com/c", False),
    ],
)
def test_host_policy(allowed: tuple[str, ...], denied: tuple[str, ...], client_id: str, accepted: bool) -> None:
    policy = MetadataDocumentPolicy(allowed_hosts=allowed, denied_hosts=denied)
    if accepted:
        policy.check_host(client_id)
    else:
        with pytest.raises(InvalidClient):
            policy.check_host(client_id)


@pytest.mark.parametrize(
    ("max_age", "lifetime"),
    [(None, 3600), (0, 60), (30, 60), (600, 600), (10**9, 24 * 3600)],
)
def test_cache_lifetime_is_bounded(max_age: int | None, lifetime: int) -> None:
    assert MetadataDocumentPolicy().cache_lifetime(max_age) == lifetime


ALLOWLIST = RedirectUriAllowlist(("https://claude.ai/api/mcp/auth_callback", "http://127.0.0.1:*/callback"))


@pytest.mark.parametrize(
    ("uri", "admitted"),
    [
        ("https://claude.ai/api/mcp/auth_callback", True),
        ("http://127.0.0.1:33418/callback", True),
        ("http://127.0.0.1/callback", True),
        ("https://claude.ai/api/mcp/auth_callback/", False),
        ("https://claude.ai/api/mcp/auth_callback?x=1", False),
        ("https://evil.example/api/mcp/auth_callback", False),
        ("http://127.0.0.1:33418/callback/extra", False),
        ("http://127.0.0.1:33418@evil.example/callback", False),
        ("http://127.0.0.1:abc/callback", False),
        ("http://127.0.0.2:33418/callback", False),
    ],
)
def test_redirect_uri_allowlist(uri: str, admitted: bool) -> None:
    assert ALLOWLIST.admits(uri) is admitted


def test_wildcards_stay_within_one_component() -> None:
    allowlist = RedirectUriAllowlist(("https://*.example.com/cb",))
    assert allowlist.admits("https://app.example.com/cb")
    assert not allowlist.admits("https://evil.example/x.example.com/cb")
    assert not allowlist.admits("https://evil.example#.example.com/cb")


def test_an_empty_allowlist_admits_everything() -> None:
    assert RedirectUriAllowlist().admits("https://anything.example/cb")
