"""`mcp-oauth-bridge clients add`: an operator-created client, its secret printed once, and the
flow it then completes (confidential, with the secret) with exact redirect URIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.cli import main as cli_main
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair

REDIRECT = "https://claude.ai/api/mcp/auth_callback"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = environment_for(tmp_path / "data", CLIENT_REGISTRATION="closed")
    monkeypatch.delenv("STORAGE_URL", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


def test_clients_add_json_then_the_client_signs_in(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["clients", "add", "--name", "Claude (Contoso)", "--redirect-uri", REDIRECT, "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["client_id"].startswith("mob_client_") and created["client_secret"].startswith("mob_cs_")
    assert created["redirect_uris"] == [REDIRECT]

    app = create_app(load_settings(env, dotenv_path=None))
    try:
        client = OAuthClient(FlaskTransport(app.test_client()), client_id=created["client_id"],
                             client_secret=created["client_secret"], redirect_uri=REDIRECT)
        code, verifier = client.login()
        assert client.exchange(code, verifier).status == 200
        # Trusted: an error before consent goes back to the client at once.
        _, challenge = pkce_pair()
        refused = client.authorize(challenge, code_challenge_method="plain")
        assert refused.status == 302 and refused.location.startswith(REDIRECT + "?")
        assert refused.query()["error"] == "invalid_request"
        # The secret is checked.
        wrong = OAuthClient(FlaskTransport(app.test_client()), client_id=created["client_id"], client_secret="mob_cs_wrong")
        assert wrong.refresh("x").status == 401
    finally:
        app.extensions["container"].storage_admin().close()


def test_clients_add_prints_the_secret_once_in_text(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["clients", "add", "--name", "Desktop", "--redirect-uri", "http://127.0.0.1/callback",
                     "--redirect-uri", "http://[::1]/callback", "--public"]) == 0
    out = capsys.readouterr().out
    assert "public" in out and "client_id:" in out and "client_secret" not in out
    assert "http://[::1]/callback" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "x", "--redirect-uri", "http://example.com/cb"], "https"),
        (["--name", "x", "--redirect-uri", "not a uri"], "redirect"),
        (["--name", " ", "--redirect-uri", REDIRECT], "name"),
    ],
)
def test_clients_add_refuses_bad_input(env: dict[str, str], capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert cli_main(["clients", "add", *args]) == 1
    err = capsys.readouterr().err
    assert "cannot create the client" in err and message in err


def test_clients_add_requires_a_redirect_uri(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["clients", "add", "--name", "x"])
    assert exited.value.code == 2
