"""A new operator's first hour with the command line: --version, help for every command, a
check-config that writes nothing, and serve on a taken port."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.entrypoints.cli import COMMANDS, main as cli_main

from .conftest import environment_for


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    name, _, version = out.partition(" ")
    assert name == "mcp-oauth-bridge" and version[:1].isdigit()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_describes_itself(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main([command, "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    description = COMMANDS[command][0]
    # The description paragraph, not only the one-line summary in the command list.
    assert description[0].upper() + description[1:] in " ".join(help_text.split())


def test_serve_help_names_the_gunicorn_settings_it_honours(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for name in ("BIND", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "WORKER_THREADS", "KEEPALIVE_TIMEOUT"):
        assert name in help_text


def test_check_config_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ENCRYPTION_KEYS", "TOKEN_HASH_KEY", "TOKEN_HASH_KEYS", "STORAGE_URL", "DATA_DIR", "PUBLIC_URL", "IDP_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "would generate them into data/secrets.json (nothing was written)" in out
    assert "configuration is valid" in out
    assert list(tmp_path.iterdir()) == []


def test_check_config_reads_keys_generated_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("ENCRYPTION_KEYS", "TOKEN_HASH_KEY", "TOKEN_HASH_KEYS", "STORAGE_URL", "DATA_DIR", "PUBLIC_URL", "IDP_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["migrate"]) == 0  # generates the keys, as serve would
    secrets_file = tmp_path / "data" / "secrets.json"
    before = secrets_file.read_bytes()
    capsys.readouterr()
    assert cli_main(["check-config"]) == 0
    assert "would generate" not in capsys.readouterr().out
    assert secrets_file.read_bytes() == before


def test_check_config_prints_the_access_policy_and_the_token_hash_key_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    new, old = "n" * 43, "o" * 43
    values = environment_for(
        tmp_path / "data", IDP_PROVIDER="oidc", OIDC_ISSUER="https://idp.example.com", OIDC_CLIENT_ID="bridge",
        OIDC_CLIENT_SECRET="s", OIDC_REQUIRED_CLAIMS="groups=mcp-users,groups=admins,email_verified=true",
        TOKEN_HASH_KEYS=f"{new},{old}",
    )
    del values["TOKEN_HASH_KEY"]
    monkeypatch.delenv("TOKEN_HASH_KEY", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "access policy: groups one of admins, mcp-users; email_verified one of true" in out
    ids = TokenHasher(base64.urlsafe_b64decode(new + "="), base64.urlsafe_b64decode(old + "=")).key_ids
    assert f"token hash keys: {ids[0]} hashes new values; older, still accepted: {ids[1]}" in out


@pytest.mark.slow
def test_serve_on_a_taken_port_exits_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **environment_for(tmp_path, PUBLIC_URL=f"http://127.0.0.1:{port}")}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "serve", "--bind", f"127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
    assert result.returncode != 0
    assert f"address 127.0.0.1:{port} is already in use" in result.stderr
    assert "serving" not in result.stdout + result.stderr
    # At once: no gunicorn retry loop (it retries for several seconds before giving up).
    assert time.monotonic() - started < 30
