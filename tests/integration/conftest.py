"""HTTP fixtures: an app on a temporary SQLite file with the fake IdP, and a scripted client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import responses
from cryptography.fernet import Fernet
from flask import Flask

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import Settings, load_settings

from .oauth_flow import FlaskTransport, OAuthClient

PUBLIC_URL = "http://127.0.0.1:8000"


def environment_for(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "PUBLIC_URL": PUBLIC_URL,
        "DATA_DIR": str(data_dir),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_HASH_KEY": "k" * 43,
        # Tests drive many flows from one address; the rate-limit tests turn the limits on.
        "RATE_LIMITS": "off",
    }
    env.update(overrides)
    return env


def run_check_config(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`check-config` in a child process with exactly ``env`` (nothing of this process's own)."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "check-config"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    """The upstream provider's HTTP, answered by ``responses`` (a URL not registered fails)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(environment_for(tmp_path), dotenv_path=None)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["container"].storage_admin().close()


@pytest.fixture
def http(app: Flask) -> FlaskTransport:
    return FlaskTransport(app.test_client())


@pytest.fixture
def oauth(http: FlaskTransport) -> OAuthClient:
    client = OAuthClient(http)
    reply = client.register()
    assert reply.status == 201, reply.text
    return client


@pytest.fixture
def tokens(oauth: OAuthClient) -> dict[str, Any]:
    code, verifier = oauth.login()
    reply = oauth.exchange(code, verifier)
    assert reply.status == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result
