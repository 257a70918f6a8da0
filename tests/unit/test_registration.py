"""RegistrationService: RFC 7591 §2 metadata rules and the redirect URI rules (RFC 8252 §7, OAuth 2.1 §2.3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_oauth_bridge.domain.errors import InvalidClientMetadata, InvalidRedirectUri
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.domain.services.registration import RegisteredClient

from .conftest import NOW, REDIRECT_URI, World


def register_raw(world: World, **metadata: Any) -> RegisteredClient:
    return world.registration.register(metadata)


# -- redirect_uris presence and shape ------------------------------------------------------------


def test_missing_redirect_uris_is_rejected(world: World) -> None:
    with pytest.raises(InvalidRedirectUri):
        register_raw(world, token_endpoint_auth_method="none")
    assert world.clients.list() == []


@pytest.mark.parametrize("value", ["https://client.example/cb", {"uri": "https://client.example/cb"}, 42])
def test_non_list_redirect_uris_are_rejected(world: World, value: Any) -> None:
    with pytest.raises(InvalidRedirectUri):
        register_raw(world, redirect_uris=value)
    assert world.clients.list() == []


def test_empty_redirect_uris_are_rejected(world: World) -> None:
    with pytest.raises(InvalidRedirectUri):
        register_raw(world, redirect_uris=[])


@pytest.mark.parametrize("value", ["", None, 7])
def test_redirect_uri_entries_must_be_non_empty_strings(world: World, value: Any) -> None:
    with pytest.raises(InvalidRedirectUri):
        register_raw(world, redirect_uris=[value])


def test_more_than_ten_redirect_uris_are_rejected(world: World) -> None:
    with pytest.raises(InvalidRedirectUri):
        register_raw(world, redirect_uris=[f"https://client.example/cb{i}" for i in range(11)])


def test_ten_redirect_uris_are_accepted(world: World) -> None:
    uris = [f"https://client.example/cb{i}" for i in range(10)]
    assert world.register(redirect_uris=uris).client.redirect_uris == tuple(uris)


def test_duplicate_redirect_uris_are_kept_once(world: World) -> None:
    registered = world.register(redirect_uris=[REDIRECT_URI, REDIRECT_URI, "https://client.example/other"])
    assert registered.client.redirect_uris == (REDIRECT_URI, "https://client.example/other")


# -- redirect URI rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://client.example/cb#fragment",
        "https://client.example/cb#",
        "http://127.0.0.1:8080/cb#x",
    ],
)
def test_redirect_uri_with_fragment_is_rejected(world: World, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[uri])


@pytest.mark.parametrize(
    "uri",
    [
        "http://client.example/cb",
        "http://localhost.evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://10.0.0.1/cb",
        "http://192.168.1.10:8080/cb",
        "HTTP://client.example/cb",
    ],
)
def test_http_redirect_uri_on_non_loopback_host_is_rejected(world: World, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[uri])


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/cb",
        "http://127.0.0.1:33418/callback",
        "http://localhost:6274/oauth/callback",
        "http://[::1]:8080/cb",
        "https://claude.ai/api/mcp/auth_callback",
        "com.example.app:/oauth/callback",
    ],
)
def test_https_loopback_http_and_private_use_schemes_are_accepted(world: World, uri: str) -> None:
    assert world.register(redirect_uris=[uri]).client.redirect_uris == (uri,)


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "vbscript:msgbox(1)",
    ],
)
def test_dangerous_schemes_are_rejected(world: World, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[uri])


@pytest.mark.parametrize(
    "uri",
    [
        "https://user@client.example/cb",
        "https://user:password@client.example/cb",
        "https://client.example@evil.example/cb",
        "http://user@127.0.0.1:8080/cb",
    ],
)
def test_redirect_uri_with_userinfo_is_rejected(world: World, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[uri])


@pytest.mark.parametrize(
    "uri",
    [
        "/relative/callback",
        "client.example/cb",
        "https:///no-host",
        "https://client.example/c b",
        "https://client.example/cb\n",
        "https://client.example/" + "a" * 2000,
    ],
)
def test_relative_hostless_whitespace_and_overlong_uris_are_rejected(world: World, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[uri])


def test_one_bad_redirect_uri_rejects_the_whole_registration(world: World) -> None:
    with pytest.raises(InvalidRedirectUri):
        world.register(redirect_uris=[REDIRECT_URI, "http://evil.example/cb"])
    assert world.clients.list() == []


# -- grant types, response types, auth methods ---------------------------------------------------


def test_defaults_grant_both_code_and_refresh_and_response_type_code(world: World) -> None:
    client = register_raw(world, redirect_uris=[REDIRECT_URI]).client
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.response_types == ("code",)
    assert client.token_endpoint_auth_method == "client_secret_basic"


@pytest.mark.parametrize(
    "grant_types",
    [["authorization_code", "implicit"], ["authorization_code", "password"], ["client_credentials"], ["refresh_token"]],
)
def test_unknown_or_insufficient_grant_types_are_rejected(world: World, grant_types: list[str]) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(grant_types=grant_types)


@pytest.mark.parametrize("grant_types", ["authorization_code", ["authorization_code", 1]])
def test_grant_types_must_be_an_array_of_strings(world: World, grant_types: Any) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(grant_types=grant_types)


@pytest.mark.parametrize("response_types", [["token"], ["code", "id_token"], ["code token"], []])
def test_unknown_response_types_are_rejected(world: World, response_types: list[str]) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(response_types=response_types)


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt", "tls_client_auth", "NONE"])
def test_unknown_token_endpoint_auth_method_is_rejected(world: World, method: str) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(token_endpoint_auth_method=method)


def test_authorization_code_only_client_is_accepted(world: World) -> None:
    assert world.register(grant_types=["authorization_code"]).client.grant_types == ("authorization_code",)


def test_application_type_must_be_web_or_native(world: World) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(application_type="desktop")
    assert world.register(application_type="native").response()["application_type"] == "native"


def test_informational_urls_must_be_https(world: World) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(logo_uri="javascript:alert(1)")
    with pytest.raises(InvalidClientMetadata):
        world.register(client_uri="http://client.example/")
    assert world.register(client_uri="https://client.example/").response()["client_uri"] == "https://client.example/"


# -- scope ---------------------------------------------------------------------------------------


def test_scope_is_narrowed_to_supported_scopes(world: World) -> None:
    registered = world.register(scope="mcp:read admin:all mcp:read openid")
    assert registered.client.scope == "mcp:read"
    assert registered.response()["scope"] == "mcp:read"


def test_scope_with_no_supported_value_is_dropped(world: World) -> None:
    registered = world.register(scope="admin:all")
    assert registered.client.scope is None
    assert "scope" not in registered.response()


# -- secrets -------------------------------------------------------------------------------------


def test_public_client_gets_no_secret(world: World) -> None:
    registered = world.register(token_endpoint_auth_method="none")
    assert registered.client_secret is None
    assert registered.client.secret_hash is None
    assert registered.client.is_public
    stored = world.clients.get(registered.client.client_id)
    assert stored is not None and stored.secret_hash is None
    response = registered.response()
    assert "client_secret" not in response
    assert "client_secret_expires_at" not in response


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_confidential_client_secret_is_stored_only_as_its_keyed_hash(world: World, method: str) -> None:
    registered = world.register(token_endpoint_auth_method=method)
    secret = registered.client_secret
    assert secret is not None and secret.startswith("mob_cs_")
    stored = world.clients.get(registered.client.client_id)
    assert stored is not None
    assert stored.secret_hash is not None
    assert stored.secret_hash != secret
    assert secret not in repr(stored)
    assert stored.secret_hash == world.hasher.hash(secret)
    assert world.hasher.matches(secret, stored.secret_hash)
    assert not world.hasher.matches(secret + "x", stored.secret_hash)
    # The hash is keyed: another server key does not reproduce it.
    assert TokenHasher(b"another-key-that-is-32-bytes-long").hash(secret) != stored.secret_hash


def test_response_shape_for_confidential_client(world: World) -> None:
    registered = world.register(
        token_endpoint_auth_method="client_secret_post",
        client_name="  Claude  ",
        scope="mcp:read mcp:write",
        contacts=["ops@client.example"],
        software_id="claude",
        unknown_field="dropped",
    )
    assert registered.response() == {
        "client_id": "mob_client_" + "1".zfill(43),
        "client_id_issued_at": NOW,
        "client_secret": "mob_cs_" + "2".zfill(43),
        "client_secret_expires_at": 0,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post",
        "client_name": "Claude",
        "scope": "mcp:read mcp:write",
        "contacts": ["ops@client.example"],
        "software_id": "claude",
    }


def test_response_shape_for_public_client(world: World) -> None:
    registered = world.register()
    assert registered.response() == {
        "client_id": "mob_client_" + "1".zfill(43),
        "client_id_issued_at": NOW,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "client_name": "Test Client",
    }


def test_each_registration_is_a_new_client(world: World) -> None:
    first = world.register()
    second = world.register()
    assert first.client.client_id != second.client.client_id
    assert {c.client_id for c in world.clients.list()} == {first.client.client_id, second.client.client_id}


def test_registered_client_is_stored(world: World) -> None:
    registered = world.register_confidential()
    assert world.clients.get(registered.client.client_id) == registered.client
    assert registered.client.issued_at == NOW
    assert registered.client.kind == "registered"


def test_client_name_too_long_is_rejected(world: World) -> None:
    with pytest.raises(InvalidClientMetadata):
        world.register(client_name="x" * 201)
