"""Start-up configuration: the embedded default needs nothing; bad values name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mcp_oauth_bridge.entrypoints.config import ConfigError, load_settings

from .conftest import environment_for


def test_embedded_default_needs_no_configuration(tmp_path: Path) -> None:
    settings = load_settings({"DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.idp_provider == "fake"
    assert settings.storage_url == f"sqlite:///{tmp_path / 'data' / 'mcp-oauth-bridge.db'}"
    assert settings.toolsets == ("identity",)
    secrets_file = tmp_path / "data" / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    # The generated keys are persisted and reused: every worker gets the same ones.
    again = load_settings({"DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    assert again.token_hash_key == settings.token_hash_key
    assert again.encryption_keys == settings.encryption_keys


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("https://MCP.Example.com/", "https://mcp.example.com"),
        ("https://mcp.example.com:443", "https://mcp.example.com"),
        ("HTTPS://mcp.example.com:8443", "https://mcp.example.com:8443"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_public_url_is_normalised_to_the_origin_browsers_send(tmp_path: Path, raw: str, expected: str) -> None:
    env = environment_for(tmp_path, PUBLIC_URL=raw, FAKE_IDP_ALLOW_NON_LOOPBACK="true")
    assert load_settings(env, dotenv_path=None).public_url == expected


@pytest.mark.parametrize(
    "overrides, variable",
    [
        ({"PUBLIC_URL": "mcp.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://mcp.example.com/bridge"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "http://mcp.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://mcp.example.com:99999"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://mcp.example.com"}, "IDP_PROVIDER=fake"),
        ({"IDP_PROVIDER": "okta-magic"}, "IDP_PROVIDER"),
        ({"STORAGE_URL": "mysql://db/x"}, "STORAGE_URL"),
        ({"STORAGE_URL": "sqlite://relative.db"}, "STORAGE_URL"),
        ({"ENCRYPTION_KEYS": "not-a-fernet-key"}, "ENCRYPTION_KEYS"),
        ({"TOKEN_HASH_KEY": "short"}, "TOKEN_HASH_KEY"),
        ({"TOKEN_HASH_KEY": ""}, "TOKEN_HASH_KEY"),
        ({"ACCESS_TOKEN_TTL": "soon"}, "ACCESS_TOKEN_TTL"),
        ({"ACCESS_TOKEN_TTL": "0"}, "ACCESS_TOKEN_TTL"),
        ({"REFRESH_GRACE_PERIOD": "-1"}, "REFRESH_GRACE_PERIOD"),
        ({"FAKE_IDP_ALLOW_NON_LOOPBACK": "maybe"}, "FAKE_IDP_ALLOW_NON_LOOPBACK"),
        ({"TOOLSETS": "identity,telepathy"}, "TOOLSETS"),
        ({"TOOLSETS": "identity,mail"}, "TOOLSETS=mail needs IDP_PROVIDER=azure"),
        ({"MCP_ALLOWED_ORIGINS": "localhost:6274"}, "MCP_ALLOWED_ORIGINS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_invalid_configuration_names_the_variable(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environment_for(tmp_path, **overrides), dotenv_path=None)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("ACCESS_TOKEN_TTL=120\nREFRESH_GRACE_PERIOD=5\n")
    settings = load_settings(environment_for(tmp_path, REFRESH_GRACE_PERIOD="7"), dotenv_path=str(dotenv))
    assert settings.access_token_ttl == 120
    assert settings.refresh_grace_period == 7


def test_cli_refuses_to_start_and_names_the_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "check-config"],
        cwd=tmp_path,
        env=environment_for(tmp_path, PUBLIC_URL="http://mcp.example.com"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "configuration error: PUBLIC_URL" in result.stderr
