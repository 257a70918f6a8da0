"""The administration CLI against a running gunicorn server (2 workers, SQLite), as an operator
runs it: a separate process on the same storage. Offboarding a person answers their next /mcp
call with 401 on every worker and their next refresh with invalid_grant; a disabled client's
token is refused at once, and once enabled it refreshes again (issue 11 §2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from .oauth_flow import HttpTransport, OAuthClient
from .servers import running_server

pytestmark = pytest.mark.slow


def mcp_statuses(base_url: str, token: str, calls: int = 6) -> set[int]:
    """The statuses of a few pings (new connections, so that both workers answer some)."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    return {requests.post(base_url + "/mcp", json=body, headers=headers, timeout=10).status_code for _ in range(calls)}


def test_offboarding_and_disabling_with_the_server_running(tmp_path: Path) -> None:
    keys = {"DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "TOKEN_HASH_KEY": "admin-e2e-" + "k" * 40}

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", *args, "--json"],
            env={**os.environ, **keys, "STORAGE_URL": ""}, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    with running_server(tmp_path, workers=2, **keys) as server:
        people = {}
        for name in ("alice", "bob"):
            oauth = OAuthClient(HttpTransport(server.base_url))
            assert oauth.register(client_name=f"{name}'s Claude").status == 201
            code, verifier = oauth.login(username=name)
            issued = oauth.exchange(code, verifier)
            assert issued.status == 200, issued.text
            people[name] = (oauth, issued.json())
            assert mcp_statuses(server.base_url, issued.json()["access_token"]) == {200}

        assert {g["subject"] for g in cli("grants", "list")} == {"fake:alice", "fake:bob"}
        assert len(cli("grants", "revoke", "--user", "fake:alice")["revoked"]) == 1
        oauth, tokens = people["alice"]
        assert mcp_statuses(server.base_url, tokens["access_token"]) == {401}
        refused = oauth.refresh(tokens["refresh_token"])
        assert refused.status == 400 and refused.json()["error"] == "invalid_grant"

        oauth, tokens = people["bob"]
        assert mcp_statuses(server.base_url, tokens["access_token"]) == {200}
        cli("clients", "disable", oauth.client_id)
        assert mcp_statuses(server.base_url, tokens["access_token"]) == {401}
        assert oauth.refresh(tokens["refresh_token"]).json()["error"] == "invalid_client"
        cli("clients", "enable", oauth.client_id)
        refreshed = oauth.refresh(tokens["refresh_token"])
        assert refreshed.status == 200, refreshed.text
        assert mcp_statuses(server.base_url, refreshed.json()["access_token"]) == {200}
