"""The whole flow over real HTTP against gunicorn with 2 workers (the production server)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import requests

from .oauth_flow import HttpTransport, OAuthClient
from .servers import running_server

pytestmark = pytest.mark.slow


def test_full_flow_over_gunicorn_with_two_workers(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2) as server:
        oauth = OAuthClient(HttpTransport(server.base_url))
        assert oauth.register(client_name="E2E").status == 201

        code, verifier = oauth.login(username="carol")
        issued = oauth.exchange(code, verifier)
        assert issued.status == 200, issued.text
        first = issued.json()
        info = oauth.introspect(first["access_token"])
        assert info["active"] is True and info["username"] == "carol" and info["sub"] == "fake:carol"

        refreshed = oauth.refresh(first["refresh_token"], resource=server.base_url + "/mcp")
        assert refreshed.status == 200, refreshed.text
        second = refreshed.json()
        # The old access token stays valid until it expires; the new one is active too.
        assert oauth.introspect(first["access_token"])["active"] is True
        assert oauth.introspect(second["access_token"])["active"] is True

        assert oauth.revoke(second["refresh_token"]).status == 200
        for token in (first["access_token"], second["access_token"], second["refresh_token"]):
            assert oauth.introspect(token) == {"active": False}

        # Several requests went to both workers; the log names both and carries no secret.
        log = server.log_text()
        workers = set(re.findall(r"Booting worker with pid: (\d+)", log))
        assert len(workers) == 2
        assert " /oauth/callback " in log  # the access log is on, without query strings
        for secret in (code, verifier, oauth.client_secret, first["access_token"], first["refresh_token"],
                       second["access_token"], second["refresh_token"]):
            assert secret and secret not in log
        assert "fake_code." not in log and "mob_st_" not in log


def test_readme_serve_command_starts_with_no_configuration(tmp_path: Path) -> None:
    """`mcp-oauth-bridge serve` in an empty directory: SQLite and keys under ./data, fake IdP."""
    command = [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "serve", "--bind", "127.0.0.1:{port}"]
    # Only the port differs from the embedded default, so that parallel test runs do not collide.
    overrides = {"ENCRYPTION_KEYS": "", "TOKEN_HASH_KEY": "", "DATA_DIR": ""}
    with running_server(tmp_path, command=command, cwd=tmp_path, **overrides) as server:
        metadata = requests.get(server.base_url + "/.well-known/oauth-authorization-server", timeout=5).json()
        assert metadata["issuer"] == server.base_url
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        resource = requests.get(server.base_url + "/.well-known/oauth-protected-resource/mcp", timeout=5).json()
        assert resource["resource"] == server.base_url + "/mcp"
    assert (tmp_path / "data" / "mcp-oauth-bridge.db").exists()
    assert (tmp_path / "data" / "secrets.json").exists()
    assert "generated keys were stored" in server.log_text()
