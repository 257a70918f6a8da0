"""Start-up configuration: the embedded default needs nothing; bad values name the variable."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from mcp_oauth_bridge.entrypoints.config import SECRET_VARIABLES, ConfigError, RateLimitSettings, load_settings

from .conftest import environment_for, run_check_config

GUID_ID = "0f5d6a3c-2b1e-4c8d-9f7a-6e5d4c3b2a10"


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
    assert again.token_hash_keys == settings.token_hash_keys
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
        ({"STORAGE_URL": "sqlite:///"}, "STORAGE_URL"),
        ({"STORAGE_URL": "postgresql://db.internal:5432"}, "STORAGE_URL"),
        ({"STORAGE_URL": "postgresql://db.internal/bridge?sslmode"}, "STORAGE_URL"),
        ({"STORAGE_POOL_SIZE": "0"}, "STORAGE_POOL_SIZE"),
        ({"STORAGE_POOL_SIZE": "many"}, "STORAGE_POOL_SIZE"),
        ({"STORAGE_STATEMENT_TIMEOUT": "0"}, "STORAGE_STATEMENT_TIMEOUT"),
        ({"STORAGE_CONNECT_TIMEOUT": "-1"}, "STORAGE_CONNECT_TIMEOUT"),
        ({"ENCRYPTION_KEYS": "not-a-fernet-key"}, "ENCRYPTION_KEYS"),
        ({"TOKEN_HASH_KEY": "short"}, "TOKEN_HASH_KEY"),
        ({"TOKEN_HASH_KEY": ""}, "TOKEN_HASH_KEY"),
        ({"ACCESS_TOKEN_TTL": "soon"}, "ACCESS_TOKEN_TTL"),
        ({"ACCESS_TOKEN_TTL": "0"}, "ACCESS_TOKEN_TTL"),
        ({"REFRESH_GRACE_PERIOD": "-1"}, "REFRESH_GRACE_PERIOD"),
        ({"FAKE_IDP_ALLOW_NON_LOOPBACK": "maybe"}, "FAKE_IDP_ALLOW_NON_LOOPBACK"),
        ({"TOOLSETS": "identity,telepathy"}, "TOOLSETS"),
        ({"EXTRA_REDIRECT_SCHEMES": "cursor,search-ms"}, "EXTRA_REDIRECT_SCHEMES"),
        ({"EXTRA_REDIRECT_SCHEMES": "ms-word"}, "EXTRA_REDIRECT_SCHEMES"),
        ({"EXTRA_REDIRECT_SCHEMES": "https"}, "EXTRA_REDIRECT_SCHEMES"),
        ({"EXTRA_REDIRECT_SCHEMES": "not a scheme"}, "EXTRA_REDIRECT_SCHEMES"),
        ({"TOOLSETS": "identity,mail"}, "TOOLSETS=mail needs IDP_PROVIDER=azure"),
        ({"MCP_ALLOWED_ORIGINS": "localhost:6274"}, "MCP_ALLOWED_ORIGINS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"RATE_LIMITS": "sometimes"}, "RATE_LIMITS"),
        ({"RATE_LIMIT_REGISTER": "30 a minute"}, "RATE_LIMIT_REGISTER"),
        ({"RATE_LIMIT_AUTHORIZE": "0/minute"}, "RATE_LIMIT_AUTHORIZE"),
        ({"RATE_LIMIT_REFRESH": "30"}, "RATE_LIMIT_REFRESH"),
        ({"RATE_LIMIT_CODE_EXCHANGE": "60/fortnight"}, "RATE_LIMIT_CODE_EXCHANGE"),
        ({"RATE_LIMIT_CLIENT_AUTH_FAILURES": "-1/minute"}, "RATE_LIMIT_CLIENT_AUTH_FAILURES"),
        ({"RATE_LIMIT_INTROSPECT": "600/minute;x"}, "RATE_LIMIT_INTROSPECT"),
        ({"RATE_LIMIT_REVOKE": "none"}, "RATE_LIMIT_REVOKE"),
        ({"RATE_LIMIT_STORAGE_URL": "memory://"}, "RATE_LIMIT_STORAGE_URL"),
        ({"RATE_LIMIT_STORAGE_URL": "redis://"}, "RATE_LIMIT_STORAGE_URL"),
        ({"RATE_LIMIT_STORAGE_URL": "sqlite:///data/limits.db"}, "RATE_LIMIT_STORAGE_URL"),
        ({"FORWARDED_ALLOW_IPS": "proxy.internal"}, "FORWARDED_ALLOW_IPS"),
        # gunicorn refuses host bits in a network too.
        ({"FORWARDED_ALLOW_IPS": "127.0.0.1,10.0.0.1/8"}, "FORWARDED_ALLOW_IPS"),
        ({"CLIENT_REGISTRATION": "invite-only"}, "CLIENT_REGISTRATION"),
        ({"REDIRECT_URI_ALLOWLIST": "claude.ai/callback"}, "REDIRECT_URI_ALLOWLIST"),
        ({"CIMD_ALLOWED_HOSTS": "https://claude.ai"}, "CIMD_ALLOWED_HOSTS"),
        ({"CIMD_DENIED_HOSTS": "evil example"}, "CIMD_DENIED_HOSTS"),
        ({"CIMD_ALLOW_LOOPBACK": "sure"}, "CIMD_ALLOW_LOOPBACK"),
        ({"CIMD_PINNED_ONLY": "sure"}, "CIMD_PINNED_ONLY"),
        ({"CIMD_CACHE_MIN_TTL": "0"}, "CIMD_CACHE_MIN_TTL"),
        ({"CIMD_CACHE_MIN_TTL": "600", "CIMD_CACHE_MAX_TTL": "60"}, "CIMD_CACHE_MIN_TTL"),
        ({"CIMD_STALE_TTL": "60"}, "CIMD_STALE_TTL"),
        # Fetching documents from loopback over http is for development only.
        (
            {"CIMD_ALLOW_LOOPBACK": "true", "PUBLIC_URL": "https://mcp.example.com", "IDP_PROVIDER": "fake",
             "FAKE_IDP_ALLOW_NON_LOOPBACK": "true"},
            "CIMD_ALLOW_LOOPBACK",
        ),
    ],
)
def test_invalid_configuration_names_the_variable(tmp_path: Path, overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(environment_for(tmp_path, **overrides), dotenv_path=None)


def test_rate_limit_settings(tmp_path: Path) -> None:
    defaults = load_settings(environment_for(tmp_path, RATE_LIMITS=""), dotenv_path=None).rate_limits
    assert defaults == RateLimitSettings(
        enabled=True,
        storage_url=None,
        register="30/minute",
        authorize="60/minute",
        refresh="30/minute",
        code_exchange="60/minute",
        client_auth_failures="10/minute",
        introspect="600/minute",
        revoke="600/minute",
        forwarded_allow_ips=("127.0.0.1",),
    )
    chosen = load_settings(
        environment_for(
            tmp_path,
            RATE_LIMITS="off",
            RATE_LIMIT_STORAGE_URL="rediss://:secret@redis.internal:6380/2",
            RATE_LIMIT_REGISTER="5 per second; 100/hour",
            RATE_LIMIT_INTROSPECT="OFF",
            FORWARDED_ALLOW_IPS=" 10.0.0.0/8 , ::1,*",
        ),
        dotenv_path=None,
    ).rate_limits
    assert (chosen.enabled, chosen.storage_url, chosen.register, chosen.introspect) == (
        False, "rediss://:secret@redis.internal:6380/2", "5 per second; 100/hour", None
    )
    assert chosen.forwarded_allow_ips == ("10.0.0.0/8", "::1", "*")
    assert "secret" not in repr(chosen)
    assert load_settings(environment_for(tmp_path, FORWARDED_ALLOW_IPS=""), dotenv_path=None).rate_limits.forwarded_allow_ips == ()


def test_a_refused_rate_limit_storage_url_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environment_for(tmp_path, RATE_LIMIT_STORAGE_URL="memcached://user:hunter2@cache:11211"), dotenv_path=None)
    assert "hunter2" not in str(refused.value)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("ACCESS_TOKEN_TTL=120\nREFRESH_GRACE_PERIOD=5\n")
    settings = load_settings(environment_for(tmp_path, REFRESH_GRACE_PERIOD="7"), dotenv_path=str(dotenv))
    assert settings.access_token_ttl == 120
    assert settings.refresh_grace_period == 7


def test_cli_refuses_to_start_and_names_the_variable(tmp_path: Path) -> None:
    result = run_check_config(tmp_path, environment_for(tmp_path, PUBLIC_URL="http://mcp.example.com"))
    assert result.returncode == 2
    assert "configuration error: PUBLIC_URL" in result.stderr


def test_check_config_says_where_the_rate_limits_count_without_the_redis_password(tmp_path: Path) -> None:
    result = run_check_config(tmp_path, environment_for(tmp_path, RATE_LIMITS="on", RATE_LIMIT_STORAGE_URL="rediss://:hunter2@redis.internal:6380/0"))
    assert result.returncode == 0, result.stderr
    assert "RATE_LIMITS=on, counters in Redis" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("postgresql://bridge:pw@db.internal:5432/bridge?sslmode=require", "postgresql"),
        ("postgres://bridge@db.internal/bridge", "postgresql"),
        ("sqlite:///data/bridge.db", "sqlite"),
    ],
)
def test_the_storage_backend_follows_the_url_scheme(tmp_path: Path, url: str, backend: str) -> None:
    settings = load_settings(environment_for(tmp_path, STORAGE_URL=url, STORAGE_POOL_SIZE="4"), dotenv_path=None)
    assert settings.storage_backend == backend
    assert settings.storage_url == url
    assert settings.storage_pool_size == 4


def test_the_postgresql_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgresql://bridge:hunter2@db.internal:5432/bridge?sslmode=require"
    settings = load_settings(environment_for(tmp_path, STORAGE_URL=url), dotenv_path=None)
    assert "hunter2" not in repr(settings)
    assert settings.storage_url_for_display == "postgresql://bridge:***@db.internal:5432/bridge?sslmode=require"
    with pytest.raises(ConfigError) as refused:
        load_settings(environment_for(tmp_path, STORAGE_URL="postgresql://bridge:hunter2@db.internal:5432"), dotenv_path=None)
    assert "hunter2" not in str(refused.value)
    result = run_check_config(tmp_path, environment_for(tmp_path, STORAGE_URL=url))
    assert result.returncode == 0, result.stderr
    assert "STORAGE_URL=postgresql://bridge:***@db.internal" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_client_registration_settings(tmp_path: Path) -> None:
    settings = load_settings(
        environment_for(
            tmp_path,
            CLIENT_REGISTRATION="Metadata-Documents",
            REDIRECT_URI_ALLOWLIST="https://claude.ai/api/mcp/auth_callback, http://127.0.0.1:*/callback",
            CIMD_ALLOWED_HOSTS="claude.ai,*.Example.com.",
            CIMD_DENIED_HOSTS="bad.example.com",
            CIMD_PINNED_ONLY="true",
            CIMD_CACHE_MAX_TTL="7200",
        ),
        dotenv_path=None,
    )
    assert settings.client_registration == "metadata-documents"
    assert settings.redirect_uri_allowlist.patterns == ("https://claude.ai/api/mcp/auth_callback", "http://127.0.0.1:*/callback")
    documents = settings.metadata_documents
    assert documents.allowed_hosts == ("claude.ai", "*.example.com")
    assert documents.denied_hosts == ("bad.example.com",)
    assert documents.pinned_only and not documents.allow_loopback
    assert (documents.min_cache_ttl, documents.max_cache_ttl, documents.stale_ttl) == (60, 7200, 7 * 24 * 3600)
    defaults = load_settings(environment_for(tmp_path), dotenv_path=None)
    assert defaults.client_registration == "open" and defaults.redirect_uri_allowlist.patterns == ()

# -- SERVICE_NAME ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "public_url, raw, expected",
    [
        ("https://mcp.contoso.com", None, "mcp.contoso.com"),
        ("https://mcp.contoso.com:8443", "", "mcp.contoso.com"),
        # An internationalised host is shown as a person reads it.
        ("https://xn--bcher-kva.example", "  ", "bücher.example"),
        ("https://mcp.contoso.com", "  Contoso  ", "Contoso"),
        ("https://mcp.contoso.com", "Contoso Ltd. — Tools ✓", "Contoso Ltd. — Tools ✓"),
    ],
)
def test_service_name_is_stripped_and_defaults_to_the_public_host(tmp_path: Path, public_url: str, raw: str | None, expected: str) -> None:
    env = environment_for(tmp_path, PUBLIC_URL=public_url, IDP_PROVIDER="oidc", OIDC_ISSUER="https://idp.example",
                          OIDC_CLIENT_ID="id", OIDC_CLIENT_SECRET="secret")  # fmt: skip
    if raw is not None:
        env["SERVICE_NAME"] = raw
    assert load_settings(env, dotenv_path=None).service_name == expected


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ("C" * 81, "at most 80 characters"),
        ("Contoso\nTools", "U+000A"),
        ("Contoso\tTools", "U+0009"),
        ("Contoso\u2028Tools", "U+2028"),
        # Right-to-left override: "Contoso\u202eslooT" would read as "ContosoTools" reversed.
        ("Contoso\u202eslooT", "U+202E"),
    ],
)
def test_service_name_must_be_one_short_line_of_plain_text(tmp_path: Path, raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="SERVICE_NAME") as error:
        load_settings(environment_for(tmp_path, SERVICE_NAME=raw), dotenv_path=None)
    assert fragment in str(error.value)


# -- secrets from files (NAME_FILE) ------------------------------------------------------------


def test_secret_variables_can_be_read_from_files(tmp_path: Path) -> None:
    secret_dir = tmp_path / "run-secrets"
    secret_dir.mkdir()
    fernet_key = Fernet.generate_key().decode()
    # A trailing newline (what echo and editors add) is not part of the value.
    (secret_dir / "encryption_keys").write_text(fernet_key + "\n")
    (secret_dir / "token_hash_key").write_text("h" * 43)
    (secret_dir / "storage_url").write_text("postgresql://bridge:hunter2@db.internal/bridge\n")
    (secret_dir / "oidc_client_secret").write_text("s3cr3t~value\n")
    env = environment_for(
        tmp_path,
        ENCRYPTION_KEYS_FILE=str(secret_dir / "encryption_keys"),
        TOKEN_HASH_KEY_FILE=str(secret_dir / "token_hash_key"),
        STORAGE_URL_FILE=str(secret_dir / "storage_url"),
        OIDC_CLIENT_SECRET_FILE=str(secret_dir / "oidc_client_secret"),
        IDP_PROVIDER="oidc",
        OIDC_ISSUER="https://idp.example",
        OIDC_CLIENT_ID="bridge",
    )
    del env["ENCRYPTION_KEYS"], env["TOKEN_HASH_KEY"]
    settings = load_settings(env, dotenv_path=None)
    assert settings.encryption_keys == (fernet_key,)
    assert settings.token_hash_keys == (base64.urlsafe_b64decode("h" * 43 + "="),)
    assert settings.storage_url == "postgresql://bridge:hunter2@db.internal/bridge"
    assert settings.oidc is not None and settings.oidc.client_secret == "s3cr3t~value"


def test_every_secret_variable_has_a_file_variant(tmp_path: Path) -> None:
    """The mechanism is one list: each name in it (including those other parts read) resolves."""
    assert {"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "OIDC_CLIENT_SECRET", "ENCRYPTION_KEYS",
            "TOKEN_HASH_KEY", "TOKEN_HASH_KEYS", "STORAGE_URL", "METRICS_TOKEN"} <= set(SECRET_VARIABLES)  # fmt: skip
    (tmp_path / "secret").write_text("from-a-file\n")
    env = environment_for(tmp_path, AZURE_CLIENT_SECRET_FILE=str(tmp_path / "secret"), IDP_PROVIDER="azure",
                          AZURE_TENANT_ID="contoso.onmicrosoft.com", AZURE_CLIENT_ID=GUID_ID)  # fmt: skip
    settings = load_settings(env, dotenv_path=None)
    assert settings.entra is not None and settings.entra.client_secret == "from-a-file"


def test_a_secret_set_both_ways_is_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k" * 43)
    with pytest.raises(ConfigError, match="TOKEN_HASH_KEY and TOKEN_HASH_KEY_FILE are both set"):
        load_settings(environment_for(tmp_path, TOKEN_HASH_KEY_FILE=str(tmp_path / "key")), dotenv_path=None)


def test_an_unreadable_secret_file_names_the_variable_not_the_content(tmp_path: Path) -> None:
    env = environment_for(tmp_path, STORAGE_URL_FILE=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="STORAGE_URL_FILE: cannot read") as missing:
        load_settings(env, dotenv_path=None)
    assert str(tmp_path / "missing") in str(missing.value)
    # Not text: named, and its bytes are not echoed.
    (tmp_path / "binary").write_bytes(b"\xffhunter2\xfe")
    with pytest.raises(ConfigError, match="STORAGE_URL_FILE: cannot read") as binary:
        load_settings(environment_for(tmp_path, STORAGE_URL_FILE=str(tmp_path / "binary")), dotenv_path=None)
    assert "hunter2" not in str(binary.value)
    # A file holding a refused value is reported under NAME, without the password.
    (tmp_path / "url").write_text("mysql://bridge:hunter2@db/x\n")
    with pytest.raises(ConfigError, match="STORAGE_URL") as refused:
        load_settings(environment_for(tmp_path, STORAGE_URL_FILE=str(tmp_path / "url")), dotenv_path=None)
    assert "hunter2" not in str(refused.value)


# -- every problem at once ---------------------------------------------------------------------


def test_entra_with_nothing_set_reports_every_missing_variable_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environment_for(tmp_path, IDP_PROVIDER="azure"), dotenv_path=None)
    lines = str(error.value).splitlines()
    assert lines[0] == "3 problems:"
    assert [line.split()[0] for line in lines[1:]] == ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
    assert error.value.problems == tuple(line.strip() for line in lines[1:])


def test_missing_and_malformed_variables_of_every_section_are_reported_together(tmp_path: Path) -> None:
    env = environment_for(
        tmp_path,
        PUBLIC_URL="mcp.example.com",
        IDP_PROVIDER="oidc",
        OIDC_ISSUER="http://idp.example",
        STORAGE_URL="mysql://db/x",
        ACCESS_TOKEN_TTL="soon",
        LOG_LEVEL="LOUD",
        RATE_LIMIT_REGISTER="30 a minute",
        TOKEN_HASH_KEY="short",
        SERVICE_NAME="C" * 81,
    )
    with pytest.raises(ConfigError) as error:
        load_settings(env, dotenv_path=None)
    named = [problem.split()[0].rstrip(":") for problem in error.value.problems]
    assert sorted(named) == sorted([
        "PUBLIC_URL", "STORAGE_URL", "TOKEN_HASH_KEY", "ACCESS_TOKEN_TTL", "LOG_LEVEL", "OIDC_ISSUER",
        "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "RATE_LIMIT_REGISTER", "SERVICE_NAME",
    ])  # fmt: skip
    assert len(str(error.value).splitlines()) == 1 + len(named)


def test_keys_are_not_generated_when_the_configuration_is_wrong(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "LOUD"}
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_settings(env, dotenv_path=None)
    assert not (tmp_path / "data" / "secrets.json").exists()


def test_the_cli_prints_every_problem(tmp_path: Path) -> None:
    result = run_check_config(tmp_path, environment_for(tmp_path, IDP_PROVIDER="azure", LOG_LEVEL="LOUD"))
    assert result.returncode == 2
    assert "configuration error: 4 problems:" in result.stderr
    for variable in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "LOG_LEVEL"):
        assert f"\n  {variable} " in result.stderr


def test_a_variable_read_by_two_checks_is_reported_once(tmp_path: Path) -> None:
    env = environment_for(tmp_path, PUBLIC_URL="https://mcp.example.com", FAKE_IDP_ALLOW_NON_LOOPBACK="maybe")
    with pytest.raises(ConfigError) as error:
        load_settings(env, dotenv_path=None)
    assert error.value.problems == ("FAKE_IDP_ALLOW_NON_LOOPBACK must be true or false (on or off), got 'maybe'",)
