"""RegistrationService: RFC 7591 §2 metadata rules and the redirect URI rules (RFC 8252 §7, OAuth 2.1 §2.3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_oauth_bridge.domain.errors import InvalidClientMetadata, InvalidRedirectUri
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.domain.services.registration import (
    MAX_CONTACT_LENGTH,
    MAX_CONTACTS,
    MAX_KEYWORD_LENGTH,
    MAX_LIST_ENTRIES,
    MAX_NAME_LENGTH,
    MAX_SCOPE_LENGTH,
    RegisteredClient,
)
from mcp_oauth_bridge.domain.uris import MAX_CLIENT_URL_LENGTH, MAX_REDIRECT_URI_LENGTH

from .conftest import ISSUER, NOW, REDIRECT_URI, World


# RFC 7591 §3.2.1: the registered metadata plus what the server issues.
KNOWN_RESPONSE_FIELDS = {
    "client_id", "client_id_issued_at", "client_secret", "client_secret_expires_at", "redirect_uris",
    "grant_types", "response_types", "token_endpoint_auth_method", "client_name", "scope", "client_uri",
    "logo_uri", "tos_uri", "policy_uri", "software_id", "software_version", "application_type", "contacts",
    # RFC 7592 §3
    "registration_access_token", "registration_client_uri",
}


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
        "registration_access_token": "mob_rat_" + "3".zfill(43),
        "registration_client_uri": ISSUER + "/oauth/register/mob_client_" + "1".zfill(43),
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
        "registration_access_token": "mob_rat_" + "2".zfill(43),
        "registration_client_uri": ISSUER + "/oauth/register/mob_client_" + "1".zfill(43),
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


# -- redirect URIs are stored in the browser's form ----------------------------------------------


def test_internationalised_redirect_uri_is_stored_and_answered_in_punycode(world: World) -> None:
    registered = world.register(redirect_uris=["https://аррӏе.com/cb"])
    assert registered.client.redirect_uris == ("https://xn--80ak6aa92e.com/cb",)
    assert registered.response()["redirect_uris"] == ["https://xn--80ak6aa92e.com/cb"]
    stored = world.clients.get(registered.client.client_id)
    assert stored is not None and stored.redirect_uris == ("https://xn--80ak6aa92e.com/cb",)


def test_unicode_and_punycode_spellings_of_one_uri_are_kept_once(world: World) -> None:
    registered = world.register(redirect_uris=["https://аррӏе.com/cb", "https://xn--80ak6aa92e.com/cb"])
    assert registered.client.redirect_uris == ("https://xn--80ak6aa92e.com/cb",)


def test_refused_redirect_uri_is_named_by_its_position(world: World) -> None:
    with pytest.raises(InvalidRedirectUri) as excinfo:
        world.register(redirect_uris=[REDIRECT_URI, "search-ms:query=x"])
    assert excinfo.value.description.startswith("redirect_uris[1] search-ms:query=x")
    assert world.clients.list() == []


# -- caps ----------------------------------------------------------------------------------------


# (field, cap, a valid start, the character that pads it to a length)
STRING_CAPS = [
    ("client_name", MAX_NAME_LENGTH, "Claude", "x"),
    ("software_id", MAX_NAME_LENGTH, "claude", "x"),
    ("software_version", MAX_NAME_LENGTH, "1", "0"),
    ("scope", MAX_SCOPE_LENGTH, "mcp:read", " "),
    ("client_uri", MAX_CLIENT_URL_LENGTH, "https://client.example/", "a"),
    ("logo_uri", MAX_CLIENT_URL_LENGTH, "https://client.example/", "a"),
    ("tos_uri", MAX_CLIENT_URL_LENGTH, "https://client.example/", "a"),
    ("policy_uri", MAX_CLIENT_URL_LENGTH, "https://client.example/", "a"),
]


@pytest.mark.parametrize(("name", "limit", "start", "pad"), STRING_CAPS)
def test_every_string_field_is_capped(world: World, name: str, limit: int, start: str, pad: str) -> None:
    assert name in world.register(**{name: start + pad * (limit - len(start))}).response()
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(**{name: start + pad * (limit + 1 - len(start))})
    assert f"{name} is longer than {limit}" in excinfo.value.description
    # Only the registration at the cap was stored.
    assert len(world.clients.list()) == 1


def test_each_contact_is_capped(world: World) -> None:
    longest = "a" * (MAX_CONTACT_LENGTH - len("@client.example")) + "@client.example"
    assert world.register(contacts=[longest]).response()["contacts"] == [longest]
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(contacts=["ops@client.example", "a" + longest])
    assert "contacts" in excinfo.value.description


def test_each_redirect_uri_is_capped(world: World) -> None:
    longest = REDIRECT_URI + "/" + "a" * (MAX_REDIRECT_URI_LENGTH - len(REDIRECT_URI) - 1)
    assert world.register(redirect_uris=[longest]).client.redirect_uris == (longest,)
    with pytest.raises(InvalidRedirectUri) as excinfo:
        world.register(redirect_uris=[longest + "a"])
    assert f"longer than {MAX_REDIRECT_URI_LENGTH}" in excinfo.value.description


@pytest.mark.parametrize("name", ["token_endpoint_auth_method", "application_type"])
def test_keyword_fields_are_capped(world: World, name: str) -> None:
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(**{name: "n" * (MAX_KEYWORD_LENGTH + 1)})
    assert f"longer than {MAX_KEYWORD_LENGTH}" in excinfo.value.description


def test_number_of_contacts_is_capped(world: World) -> None:
    contacts = [f"ops{i}@client.example" for i in range(MAX_CONTACTS)]
    assert world.register(contacts=contacts).response()["contacts"] == contacts
    with pytest.raises(InvalidClientMetadata):
        world.register(contacts=contacts + ["one-more@client.example"])


@pytest.mark.parametrize(("name", "value"), [("grant_types", "authorization_code"), ("response_types", "code")])
def test_number_of_grant_and_response_type_entries_is_capped(world: World, name: str, value: str) -> None:
    assert world.register(**{name: [value] * MAX_LIST_ENTRIES}).response()[name] == [value]
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(**{name: [value] * (MAX_LIST_ENTRIES + 1)})
    assert f"more than {MAX_LIST_ENTRIES} entries" in excinfo.value.description


@pytest.mark.parametrize(("name", "value"), [("grant_types", "x" * 65), ("response_types", "x" * 65)])
def test_grant_and_response_type_entries_are_capped_in_length(world: World, name: str, value: str) -> None:
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(**{name: ["authorization_code", "code", value]})
    assert f"at most {MAX_KEYWORD_LENGTH} characters" in excinfo.value.description


def test_only_known_fields_are_stored(world: World) -> None:
    registered = world.register(
        jwks={"keys": []}, post_logout_redirect_uris=["https://client.example/bye"], x_custom="kept?", software_id="s"
    )
    assert set(registered.client.extra_metadata) == {"software_id"}
    assert set(registered.response()) <= KNOWN_RESPONSE_FIELDS


# -- text UTF-8 cannot encode (a lone surrogate) -----------------------------------------------------

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"client_name": "Claude" + SURROGATE}, "client_name"),
        ({"client_uri": "https://client.example/" + SURROGATE}, "client_uri"),
        ({"logo_uri": "https://client.example/" + SURROGATE}, "logo_uri"),
        ({"tos_uri": "https://client.example/" + SURROGATE}, "tos_uri"),
        ({"policy_uri": "https://client.example/" + SURROGATE}, "policy_uri"),
        ({"software_id": SURROGATE}, "software_id"),
        ({"software_version": SURROGATE}, "software_version"),
        ({"scope": "mcp:read " + SURROGATE}, "scope"),
        ({"contacts": ["ops@client.example", SURROGATE]}, "contacts[1]"),
        ({"redirect_uris": [REDIRECT_URI, "https://client.example/" + SURROGATE]}, "redirect_uris[1]"),
        ({"grant_types": ["authorization_code", SURROGATE]}, "grant_types[1]"),
        ({"response_types": [SURROGATE]}, "response_types[0]"),
        ({"token_endpoint_auth_method": SURROGATE}, "token_endpoint_auth_method"),
        ({"application_type": SURROGATE}, "application_type"),
        ({"x_unknown": SURROGATE}, "x_unknown"),
        ({"x_unknown": {"deep": [1, {"deeper": SURROGATE}]}}, "x_unknown.deep[1].deeper"),
        ({"x" + SURROGATE: "value"}, "a field name"),
    ],
)
def test_text_that_utf8_cannot_encode_is_refused_anywhere(world: World, metadata: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidClientMetadata) as excinfo:
        world.register(**metadata)
    assert excinfo.value.description.startswith(where)
    assert "UTF-8" in excinfo.value.description
    assert world.clients.list() == []


def test_text_outside_the_basic_plane_is_accepted(world: World) -> None:
    # A properly paired character (here an emoji) encodes as UTF-8: only lone surrogates are refused.
    assert world.register(client_name="Claude \U0001F916").client.client_name == "Claude \U0001F916"


# -- client_name is one line of plain text (the consent page names the client by it) ----------------


@pytest.mark.parametrize(
    "name",
    ["Claude\u202eedualC", "Claude\u2066x\u2069", "Claude\nSupport", "Claude\tSupport", "Claude\u2028x", "Claude\x00", "\u200fClaude"],
)
def test_client_name_with_control_or_bidi_characters_is_refused(world: World, name: str) -> None:
    with pytest.raises(InvalidClientMetadata) as caught:
        world.register(client_name=name)
    assert "U+" in (caught.value.description or "")
    assert world.clients.list() == []


@pytest.mark.parametrize("name", ["Claude", "Bücher & Co — Tools ✓", "مساعد", "クロード"])
def test_client_names_in_any_script_are_kept(world: World, name: str) -> None:
    assert world.register(client_name=name).client.client_name == name
