"""Two apps built in one process stay independent (DESIGN.md, "Only the entrypoints know the
container"): each answers with its own PUBLIC_URL (RFC 8414 §2 ``issuer``, RFC 9728 §2
``resource``, RFC 9207 ``iss``) and keeps its own clients, grants and tokens, whatever order
their requests come in. Process-wide wiring broke this: the app built last served both."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask

from mcp_oauth_bridge.adapters.identity.fake import CALLBACK_PATH, SIGN_IN_PATH
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient, Reply, pkce_pair
from .test_mcp_http import modern_call, rpc_result

FIRST_URL = "http://127.0.0.1:8000"
SECOND_URL = "http://127.0.0.1:9000"
PROTECTED_RESOURCE_METADATA = "/.well-known/oauth-protected-resource/mcp"


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[Flask, Flask]]:
    """Two apps, each with its own PUBLIC_URL and data directory; the second built last."""
    built = tuple(
        create_app(load_settings(environment_for(tmp_path / name, PUBLIC_URL=url), dotenv_path=None))
        for name, url in (("first", FIRST_URL), ("second", SECOND_URL))
    )
    first, second = built
    yield first, second
    for app in built:
        app.extensions["container"].storage_admin().close()


def bare_challenge_names(public_url: str, app: Flask, token: str | None = None) -> bool:
    response = modern_call(app.test_client(), "tools/list", token=token)
    assert response.status_code == 401, response.get_data(as_text=True)
    return f'resource_metadata="{public_url}{PROTECTED_RESOURCE_METADATA}"' in response.headers["WWW-Authenticate"]


def test_each_app_publishes_its_own_issuer_and_resource(apps: tuple[Flask, Flask]) -> None:
    first, second = apps
    for app, url in ((first, FIRST_URL), (second, SECOND_URL), (first, FIRST_URL)):
        client = app.test_client()
        server = client.get("/.well-known/oauth-authorization-server").get_json()
        assert server["issuer"] == url
        assert server["token_endpoint"] == url + "/oauth/token"
        resource = client.get(PROTECTED_RESOURCE_METADATA).get_json()
        assert resource["resource"] == url + "/mcp"
        assert resource["authorization_servers"] == [url]
        assert bare_challenge_names(url, app)


def _from(url: str, reply: Reply, path: str) -> bool:
    return reply.location.startswith(url + path + "?")


def test_interleaved_sign_ins_each_use_their_own_app(apps: tuple[Flask, Flask]) -> None:
    first, second = apps
    one = OAuthClient(FlaskTransport(first.test_client()))
    two = OAuthClient(FlaskTransport(second.test_client()))
    assert one.register().status == 201
    assert two.register().status == 201

    # Each app keeps its own clients: the second's is unknown to the first.
    stranger = OAuthClient(one.http, client_id=two.client_id)
    assert stranger.authorize(pkce_pair()[1]).status == 400

    verifiers = {}
    pages = {}
    for client in (one, two):
        verifiers[client.client_id], challenge = pkce_pair()
        pages[client.client_id] = client.authorize(challenge)
        assert pages[client.client_id].status == 200
    to_idp_one = one.consent(pages[one.client_id])
    to_idp_two = two.consent(pages[two.client_id])
    assert _from(FIRST_URL, to_idp_one, SIGN_IN_PATH), to_idp_one.location
    assert _from(SECOND_URL, to_idp_two, SIGN_IN_PATH), to_idp_two.location
    to_callback_one = one.fake_sign_in(to_idp_one, "alice")
    to_callback_two = two.fake_sign_in(to_idp_two, "bob")
    assert _from(FIRST_URL, to_callback_one, CALLBACK_PATH), to_callback_one.location
    assert _from(SECOND_URL, to_callback_two, CALLBACK_PATH), to_callback_two.location
    back_one = one.http.get(to_callback_one.location)
    back_two = two.http.get(to_callback_two.location)
    # RFC 9207: each authorization response names its own issuer.
    assert back_one.query()["iss"] == FIRST_URL
    assert back_two.query()["iss"] == SECOND_URL

    issued_two = two.exchange(back_two.query()["code"], verifiers[two.client_id])
    issued_one = one.exchange(back_one.query()["code"], verifiers[one.client_id])
    assert issued_one.status == 200 and issued_two.status == 200
    token_one = issued_one.json()["access_token"]
    token_two = issued_two.json()["access_token"]

    whoami = {"name": "whoami", "arguments": {}}
    assert rpc_result(modern_call(first.test_client(), "tools/call", whoami, token_one))["structuredContent"]["username"] == "alice"
    assert rpc_result(modern_call(second.test_client(), "tools/call", whoami, token_two))["structuredContent"]["username"] == "bob"
    # A token is good only where it was issued; each refusal points to its own metadata.
    assert bare_challenge_names(SECOND_URL, second, token_one)
    assert bare_challenge_names(FIRST_URL, first, token_two)
