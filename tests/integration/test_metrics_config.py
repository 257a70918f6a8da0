"""METRICS_ALLOWED_IPS, METRICS_TOKEN and LOG_FORMAT (issue 11 §4): parsed in config.py, each
error naming its variable; the token never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_oauth_bridge.entrypoints.config import ConfigError, load_settings

from .conftest import environment_for


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environment_for(tmp_path), dotenv_path=None)
    assert settings.metrics_allowed_ips == ("127.0.0.0/8", "::1")
    assert settings.metrics_token is None
    assert settings.log_format == "text"


def test_values_are_read(tmp_path: Path) -> None:
    env = environment_for(tmp_path, METRICS_ALLOWED_IPS="10.0.0.0/8, 2001:db8::/32", METRICS_TOKEN="t" * 20, LOG_FORMAT="JSON")
    settings = load_settings(env, dotenv_path=None)
    assert settings.metrics_allowed_ips == ("10.0.0.0/8", "2001:db8::/32")
    assert settings.metrics_token == "t" * 20
    assert settings.log_format == "json"
    assert "t" * 20 not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("METRICS_ALLOWED_IPS", "10.0.0.1/8"), ("METRICS_ALLOWED_IPS", "localhost"), ("METRICS_TOKEN", "short"), ("LOG_FORMAT", "xml")],
)
def test_bad_values_name_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environment_for(tmp_path, **{variable: value}), dotenv_path=None)
    assert variable in str(raised.value)
    if variable == "METRICS_TOKEN":
        assert value not in str(raised.value)


def test_the_token_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "metrics-token"
    secret.write_text("from-a-file-0123456789\n")
    settings = load_settings(environment_for(tmp_path, METRICS_TOKEN_FILE=str(secret)), dotenv_path=None)
    assert settings.metrics_token == "from-a-file-0123456789"
