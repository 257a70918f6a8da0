"""Rotating the token hash key with people connected (issue 11 §2), on SQLite and PostgreSQL, as
an operator does it: put a new key first in TOKEN_HASH_KEYS and restart; nobody is disconnected
(their access token, refresh token, client secret and registration access token all keep
working); `keys status` says what still depends on the old key until nothing does; then the old
key is removed and everyone still works."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .oauth_flow import FlaskTransport, OAuthClient
from .postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures)
from .test_cli_admin import Cli, Connection, app, cli, env, registered  # noqa: F401  (fixtures)

NEW_KEY = "n" * 43


def restarted(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], token_hash_keys: str) -> Flask:
    """The server started again (and the CLI's environment) with TOKEN_HASH_KEYS set."""
    monkeypatch.delenv("TOKEN_HASH_KEY", raising=False)
    monkeypatch.setenv("TOKEN_HASH_KEYS", token_hash_keys)
    values = {name: value for name, value in env.items() if name != "TOKEN_HASH_KEY"}
    return create_app(load_settings({**values, "TOKEN_HASH_KEYS": token_hash_keys}, dotenv_path=None))


def moved(connection: Connection, app: Flask) -> Connection:
    """The same person and client, talking to ``app``."""
    connection.app = app
    connection.client = replace(connection.client, http=FlaskTransport(app.test_client()))
    return connection


def registration_read(app: Flask, client: OAuthClient) -> int:
    """RFC 7592 §2.1 with the client's registration access token."""
    path = urlsplit(client.registration["registration_client_uri"]).path
    token = client.registration["registration_access_token"]
    return int(app.test_client().get(path, headers={"Authorization": f"Bearer {token}"}).status_code)


def key(status: dict[str, Any], position: int) -> dict[str, Any]:
    return status["token_hash_keys"][position - 1]


def test_rotating_the_token_hash_key_disconnects_nobody(
    app: Flask, env: dict[str, str], cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = env["TOKEN_HASH_KEY"]
    alice = Connection(app, registered(app, "Claude"), "alice")
    first_access_token = alice.access_token
    before = cli.json("keys", "status")
    assert [k["current"] for k in before["token_hash_keys"]] == [True]
    assert set(key(before, 1)["in_use_by"]) == {"access_tokens", "refresh_tokens", "client_secrets", "registration_tokens"}
    status, out, _ = cli.run("keys", "status")
    assert status == 0 and "one key: there is nothing to retire" in out

    # The new key first, the old one after it.
    rotated = restarted(monkeypatch, env, f"{NEW_KEY},{old_key}")
    status_doc = cli.json("keys", "status")
    old_id = key(before, 1)["id"]
    assert key(status_doc, 2)["id"] == old_id and not key(status_doc, 1)["in_use_by"]
    assert key(status_doc, 2)["in_use_by"]["access_tokens"]["count"] == 1
    assert key(status_doc, 2)["in_use_by"]["client_secrets"] == {"count": 1, "last_expires_at": None}
    assert key(status_doc, 2)["can_be_removed"] is False
    status, out, _ = cli.run("keys", "status")
    assert f"2. {old_id}  older" in out and "still needed by: 1 access token (the last expires" in out
    assert "no older key can be removed yet" in out

    # Nobody notices: the old access token, the refresh (the client's secret), RFC 7592.
    moved(alice, rotated)
    assert alice.mcp_status() == 200
    assert alice.refresh()[0] == 200
    assert registration_read(rotated, alice.client) == 200
    # The client secret and registration token now hang on the new key; the old key still holds
    # the first access token and the refresh token the new one replaced.
    needed = key(cli.json("keys", "status"), 2)["in_use_by"]
    assert set(needed) == {"access_tokens", "refresh_tokens"}
    assert alice.client.revoke(first_access_token).status == 200
    assert alice.refresh()[0] == 200
    done = cli.json("keys", "status")
    assert key(done, 2)["in_use_by"] == {} and key(done, 2)["can_be_removed"] is True
    assert set(key(done, 1)["in_use_by"]) == {"access_tokens", "refresh_tokens", "client_secrets", "registration_tokens"}
    status, out, _ = cli.run("keys", "status")
    assert f"key 2 ({old_id}) can be removed: nothing stored depends on it any more" in out

    # The old key removed: still connected, still managing its registration.
    retired = restarted(monkeypatch, env, NEW_KEY)
    moved(alice, retired)
    assert alice.mcp_status() == 200
    assert alice.refresh()[0] == 200
    assert registration_read(retired, alice.client) == 200
    # Introspection authenticates the client with its secret, now hashed under the new key.
    assert alice.client.introspect(alice.access_token)["active"] is True


def test_a_token_still_under_the_removed_key_stops_working(
    app: Flask, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = env["TOKEN_HASH_KEY"]
    bob = Connection(app, registered(app, "Claude"), "bob")
    # Removed before anything moved to the new key (what `keys status` warns against).
    retired = restarted(monkeypatch, env, NEW_KEY)
    moved(bob, retired)
    assert bob.mcp_status() == 401
    assert bob.refresh()[0] == 401  # the client secret is under the old key too: invalid_client
    # Put back, everything works again: nothing was lost.
    moved(bob, restarted(monkeypatch, env, f"{NEW_KEY},{old_key}"))
    assert bob.mcp_status() == 200 and bob.refresh()[0] == 200


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TOKEN_HASH_KEY": "k" * 43, "TOKEN_HASH_KEYS": "n" * 43}, "TOKEN_HASH_KEYS and TOKEN_HASH_KEY are both set"),
        ({"TOKEN_HASH_KEYS": f"{'n' * 43},short"}, "TOKEN_HASH_KEYS must be comma-separated keys"),
        ({"TOKEN_HASH_KEYS": f"{'n' * 43}, {'n' * 43}"}, "TOKEN_HASH_KEYS lists the same key twice"),
        ({"TOKEN_HASH_KEYS": " , "}, "TOKEN_HASH_KEYS names no key"),
        ({"TOKEN_HASH_KEY": "short"}, "TOKEN_HASH_KEY must be comma-separated keys"),
    ],
)
def test_bad_token_hash_keys_are_configuration_errors(
    tmp_path: Any, variables: dict[str, str], message: str
) -> None:
    from mcp_oauth_bridge.entrypoints.config import ConfigError

    from .conftest import environment_for

    values = {name: value for name, value in environment_for(tmp_path).items() if name != "TOKEN_HASH_KEY"}
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings({**values, **variables}, dotenv_path=None)
    # The one problem, not a second one about the encryption keys that were set correctly.
    assert "ENCRYPTION_KEYS" not in str(raised.value)
