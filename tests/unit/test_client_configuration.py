"""RFC 7592 for dynamically registered clients: the registration access token (stored only as a
keyed hash), and read, replace and delete through the client configuration endpoint."""

from __future__ import annotations

import pytest

from mcp_oauth_bridge.domain.errors import InvalidClientMetadata, InvalidRedirectUri, InvalidToken
from mcp_oauth_bridge.domain.services.registration import RegisteredClient
from tests.unit.conftest import ISSUER, REDIRECT_URI, World


def token_of(registered: RegisteredClient) -> str:
    assert registered.registration_access_token is not None
    return registered.registration_access_token


def test_registration_returns_a_token_and_the_configuration_uri(world: World, public_client: RegisteredClient) -> None:
    response = public_client.response()
    token = token_of(public_client)
    assert response["registration_access_token"] == token
    assert response["registration_client_uri"] == f"{ISSUER}/oauth/register/{public_client.client.client_id}"
    stored = world.clients.get(public_client.client.client_id)
    assert stored is not None and stored.registration_token_hash == world.hasher.hash(token)
    assert token not in repr(stored)


def test_read_returns_the_metadata(world: World, confidential_client: RegisteredClient) -> None:
    read = world.registration.read(confidential_client.client.client_id, token_of(confidential_client))
    response = read.response()
    assert response["client_id"] == confidential_client.client.client_id
    assert response["redirect_uris"] == [REDIRECT_URI]
    # Only the secret's hash is kept: it cannot be shown again.
    assert "client_secret" not in response


@pytest.mark.parametrize("action", ["read", "replace", "delete"])
def test_a_wrong_or_missing_token_reveals_nothing(world: World, public_client: RegisteredClient, action: str) -> None:
    other = world.register()
    client_id = public_client.client.client_id
    attempts = [
        (client_id, None),
        (client_id, ""),
        (client_id, "mob_rat_guess"),
        (client_id, token_of(other)),
        ("mob_client_unknown", token_of(public_client)),
        ("mob_client_unknown", None),
    ]
    descriptions = set()
    for target, token in attempts:
        with pytest.raises(InvalidToken) as caught:
            if action == "read":
                world.registration.read(target, token)
            elif action == "replace":
                world.registration.replace(target, token, {"client_id": target, "redirect_uris": [REDIRECT_URI]})
            else:
                world.registration.delete(target, token)
        descriptions.add(caught.value.description)
    # One answer for every case: whether the client exists is not revealed.
    assert len(descriptions) == 1
    assert world.clients.get(client_id) == public_client.client


def test_operator_and_document_clients_have_no_configuration_endpoint(world: World) -> None:
    created = world.registration.create_operator_client(name="Org", redirect_uris=[REDIRECT_URI], public=True)
    assert created.registration_access_token is None
    with pytest.raises(InvalidToken):
        world.registration.read(created.client.client_id, "anything")


def test_replace_validates_like_registration_and_keeps_identity(world: World, public_client: RegisteredClient) -> None:
    client_id, token = public_client.client.client_id, token_of(public_client)
    with pytest.raises(InvalidRedirectUri):
        world.registration.replace(client_id, token, {"client_id": client_id, "redirect_uris": ["http://evil.example/cb"]})
    with pytest.raises(InvalidClientMetadata):
        world.registration.replace(client_id, token, {"client_id": "mob_client_other", "redirect_uris": [REDIRECT_URI]})
    with pytest.raises(InvalidClientMetadata):
        world.registration.replace(client_id, token, {"redirect_uris": [REDIRECT_URI]})
    updated = world.registration.replace(
        client_id,
        token,
        {
            "client_id": client_id,
            "redirect_uris": ["https://client.example/new"],
            "client_name": "Renamed",
            "token_endpoint_auth_method": "none",
            # Echoed from the last response: ignored, not refused.
            "registration_access_token": token,
            "registration_client_uri": "https://elsewhere.example/",
            "client_id_issued_at": 1,
        },
    )
    assert updated.client.client_name == "Renamed"
    assert updated.client.redirect_uris == ("https://client.example/new",)
    assert updated.client.issued_at == public_client.client.issued_at
    assert updated.response()["registration_access_token"] == token
    assert updated.response()["registration_client_uri"].startswith(ISSUER)


def test_replace_gives_a_new_secret_only_to_a_client_becoming_confidential(world: World, public_client: RegisteredClient) -> None:
    client_id, token = public_client.client.client_id, token_of(public_client)
    became = world.registration.replace(
        client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"}
    )
    assert became.client_secret is not None
    stored = world.clients.get(client_id)
    assert stored is not None and world.hasher.matches(became.client_secret, stored.secret_hash or "")
    # Staying confidential keeps that secret; a wrong client_secret in the body is refused.
    with pytest.raises(InvalidClientMetadata):
        world.registration.replace(
            client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI], "client_secret": "wrong",
                               "token_endpoint_auth_method": "client_secret_post"}
        )
    kept = world.registration.replace(
        client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI], "client_secret": became.client_secret,
                           "token_endpoint_auth_method": "client_secret_post"}
    )
    assert kept.client_secret is None and kept.client.secret_hash == stored.secret_hash
    public_again = world.registration.replace(client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"})
    assert public_again.client.secret_hash is None


def test_delete_removes_the_client_and_everything_issued_to_it(world: World, public_client: RegisteredClient) -> None:
    tokens = world.login(public_client)
    world.registration.delete(public_client.client.client_id, token_of(public_client))
    assert world.clients.get(public_client.client.client_id) is None
    assert world.storage.grants == {} and world.storage.access_tokens == {} and world.storage.refresh_tokens == {}
    assert world.hasher.hash(tokens.access_token) not in world.storage.access_tokens


def test_a_disabled_client_manages_nothing_not_even_itself(world: World, public_client: RegisteredClient) -> None:
    client_id, token = public_client.client.client_id, token_of(public_client)
    world.clients.disable(client_id, world.clock.now())
    for attempt in (
        lambda: world.registration.read(client_id, token),
        lambda: world.registration.replace(client_id, token, {"client_id": client_id, "redirect_uris": [REDIRECT_URI]}),
        lambda: world.registration.delete(client_id, token),
    ):
        with pytest.raises(InvalidToken):
            attempt()
    assert world.clients.get(client_id) is not None
    world.clients.enable(client_id)
    assert world.registration.read(client_id, token).client.client_id == client_id
