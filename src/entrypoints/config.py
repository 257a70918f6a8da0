"""Configuration from environment variables (and a ``.env`` file), validated at start-up."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlsplit

import psycopg
from dotenv import dotenv_values
from limits import parse_many
from psycopg.conninfo import conninfo_to_dict

from ..adapters.identity.certificate import CertificateCredential, CertificatePasswordError
from ..adapters.identity.entra import DEFAULT_AUTHORITY_HOST, entra_scopes, validate_authority_host, validate_tenant
from ..adapters.identity.oidc import normalize_oidc_scopes, require_secure_url
from ..adapters.storage.crypto import SecretBox, generate_key
from ..domain.access_policy import AccessPolicy, ClaimRequirement, parse_required_claims
from ..domain.client_documents import MetadataDocumentPolicy, RedirectUriAllowlist
from ..domain.policy import ACCEPTED_CLIENT_KINDS, REGISTRATION_OPEN
from ..domain.security import TokenHasher
from ..adapters.web_url import AdaWebUrlParser
from ..domain.text import unsafe_display_character
from ..domain.uris import is_loopback_host, is_os_handler_scheme

log = logging.getLogger(__name__)
T = TypeVar("T")

IDP_PROVIDERS = ("fake", "azure", "oidc")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DEFAULT_OIDC_SCOPES = "openid profile email offline_access"
# sqlite:///path (the embedded default) or postgresql://user:password@host:5432/dbname
# (postgres:// is libpq's other spelling; query options such as sslmode pass to the driver).
STORAGE_SCHEMES = ("sqlite", "postgresql", "postgres")
POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
TOOLSETS = ("identity", "mail")
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
# OIDC_PROMPT_CONSENT: when to send prompt=consent (OIDC Core 1.0 §11: offline_access is
# ignored unless the request asks for consent).
PROMPT_CONSENT_MODES = ("auto", "always", "never")
DEFAULT_TOOLSETS = "identity"
GENERATED_SECRETS_FILE = "secrets.json"
DEFAULT_PORTS = {"http": 80, "https": 443}
TRUE_VALUES = ("1", "true", "yes", "on")
FALSE_VALUES = ("0", "false", "no", "off", "")
# Rate limits (RATE_LIMIT_<NAME>): what each counts, and its default, in limits' notation.
RATE_LIMIT_DEFAULTS = {
    # POST /register, /oauth/register: per client address (a ceiling against floods: Claude
    # registers from Anthropic's servers).
    "RATE_LIMIT_REGISTER": "30/minute",
    # GET /authorize, POST /oauth/consent, GET /oauth/callback: per client address, each step
    # counted on its own.
    "RATE_LIMIT_AUTHORIZE": "60/minute",
    # POST /token grant_type=refresh_token: per grant (never per client_id).
    "RATE_LIMIT_REFRESH": "30/minute",
    # POST /token grant_type=authorization_code: per authenticated client.
    "RATE_LIMIT_CODE_EXCHANGE": "60/minute",
    # Failed client authentications at /token, /revoke, /introspect: per client id; past it,
    # that client id is answered 429 without its secret being checked.
    "RATE_LIMIT_CLIENT_AUTH_FAILURES": "10/minute",
    # POST /introspect and POST /revoke: per authenticated client, each endpoint on its own.
    "RATE_LIMIT_INTROSPECT": "600/minute",
    "RATE_LIMIT_REVOKE": "600/minute",
}
RATE_LIMIT_STORAGE_SCHEMES = ("redis", "rediss")
# The proxies whose X-Forwarded-For is believed: the variable and default gunicorn_conf.py uses.
DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1"
# SERVICE_NAME, the organisation or service the pages name ("Claude wants to use your tools at
# Contoso"): a heading, not a paragraph.
MAX_SERVICE_NAME_LENGTH = 80
# Variables that hold secrets: each may instead be read from the file NAME_FILE names (the
# container convention: Docker and Kubernetes secrets mounted under /run/secrets/). A name
# listed here before anything reads it (TOKEN_HASH_KEYS, METRICS_TOKEN) is resolved all the same.
SECRET_VARIABLES = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "OIDC_CLIENT_SECRET",
    "ENCRYPTION_KEYS",
    "TOKEN_HASH_KEY",
    "TOKEN_HASH_KEYS",
    "STORAGE_URL",
    "RATE_LIMIT_STORAGE_URL",
    "METRICS_TOKEN",
)
FILE_SUFFIX = "_FILE"
# /metrics answers the local machine only unless METRICS_ALLOWED_IPS says otherwise.
DEFAULT_METRICS_ALLOWED_IPS = ("127.0.0.0/8", "::1")
LOG_FORMATS = ("text", "json")


# A host name (lower-case labels), optionally "*." for any of its subdomains.
HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class ConfigError(Exception):
    """Start-up configuration is invalid; the message names the variable. With several problems
    (every one of a load is reported at once) the message has one line per problem, each naming
    its variable."""

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} problems:\n" + "\n".join(f"  {problem}" for problem in problems)
        super().__init__(message)


class _Problems:
    """The problems of one configuration load, collected so that one run reports them all: each
    section's parse runs under ``check``, which notes its ConfigError and gives the fallback so
    the rest can still be checked; ``raise_any`` then raises one ConfigError with all of them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, parse: "Callable[[], T]", fallback: T) -> T:
        try:
            return parse()
        except ConfigError as exc:
            self.messages.extend(exc.problems)
            return fallback

    def raise_any(self) -> None:
        if self.messages:
            # A variable read by two checks is reported once.
            raise ConfigError(*dict.fromkeys(self.messages))


@dataclass(frozen=True)
class EntraSettings:
    """IDP_PROVIDER=azure: one app registration in Microsoft Entra ID."""

    tenant: str
    client_id: str
    # Exactly one credential: a client secret, or a certificate (AZURE_CLIENT_CERTIFICATE_PATH).
    client_secret: str = field(repr=False)
    authority_host: str = DEFAULT_AUTHORITY_HOST
    scopes: tuple[str, ...] = ()
    allowed_tenants: tuple[str, ...] = ()
    client_certificate: CertificateCredential | None = field(default=None, repr=False)
    # AZURE_ALLOWED_GROUPS (group object ids, lower case) and AZURE_REQUIRED_APP_ROLES.
    allowed_groups: tuple[str, ...] = ()
    required_app_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class OidcSettings:
    """IDP_PROVIDER=oidc: any OpenID Connect provider with discovery."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ()
    # OIDC_REQUIRED_CLAIMS, parsed.
    required_claims: AccessPolicy = field(default_factory=AccessPolicy)
    # OIDC_PROMPT_CONSENT: auto (with offline_access), always or never.
    prompt_consent: str = "auto"


@dataclass(frozen=True)
class RateLimitSettings:
    """RATE_LIMITS, RATE_LIMIT_STORAGE_URL, RATE_LIMIT_<NAME> and FORWARDED_ALLOW_IPS.

    Each limit is a string in limits' notation (``30/minute``, ``10/second;600/hour``), or None
    when it is switched off on its own.
    """

    enabled: bool = True
    # None: counters in the project's own storage (STORAGE_URL); else a redis:// URL.
    storage_url: str | None = field(default=None, repr=False)
    register: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_REGISTER"]
    authorize: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_AUTHORIZE"]
    refresh: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_REFRESH"]
    code_exchange: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_CODE_EXCHANGE"]
    client_auth_failures: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_CLIENT_AUTH_FAILURES"]
    introspect: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_INTROSPECT"]
    revoke: str | None = RATE_LIMIT_DEFAULTS["RATE_LIMIT_REVOKE"]
    # Peers whose X-Forwarded-For is believed (FORWARDED_ALLOW_IPS); "*" trusts every peer.
    forwarded_allow_ips: tuple[str, ...] = (DEFAULT_FORWARDED_ALLOW_IPS,)


@dataclass(frozen=True)
class Settings:
    public_url: str
    idp_provider: str
    # Never printed whole: a PostgreSQL URL may hold a password (see storage_url_for_display).
    storage_url: str = field(repr=False)
    data_dir: Path
    encryption_keys: tuple[str, ...] = field(repr=False)
    # Newest first (TOKEN_HASH_KEYS): the first hashes new values, every one is accepted.
    token_hash_keys: tuple[bytes, ...] = field(repr=False)
    # Scopes beyond those the enabled tools need.
    extra_scopes: tuple[str, ...]
    toolsets: tuple[str, ...] = ("identity",)
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    # Browser origins allowed to call /mcp (CORS and the Origin check).
    mcp_allowed_origins: tuple[str, ...] = ()
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    authorization_code_ttl: int = 60
    refresh_grace_period: int = 60
    unused_client_ttl: int = 24 * 3600
    idle_client_ttl: int = 90 * 24 * 3600
    purge_interval: int = 3600
    extra_redirect_schemes: tuple[str, ...] = ()
    fake_idp_allow_non_loopback: bool = False
    log_level: str = "INFO"
    entra: EntraSettings | None = None
    oidc: OidcSettings | None = None
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    # PostgreSQL: connections per worker process, and the limits on waiting for the database.
    storage_pool_size: int = 10
    storage_statement_timeout: int = 5
    storage_connect_timeout: int = 5
    # Who may become a client (CLIENT_REGISTRATION) and where self-declared clients may redirect.
    client_registration: str = REGISTRATION_OPEN
    redirect_uri_allowlist: RedirectUriAllowlist = field(default_factory=RedirectUriAllowlist)
    # Client ID metadata documents (CIMD_*).
    metadata_documents: MetadataDocumentPolicy = field(default_factory=MetadataDocumentPolicy)
    # Where keys would be generated, when they were not written (load_settings, check-config).
    keys_to_generate: Path | None = None
    # The organisation or service the pages name (SERVICE_NAME; by default PUBLIC_URL's host).
    service_name: str = ""
    # Where the audit log's JSON lines are appended (AUDIT_LOG_FILE); None: stderr.
    audit_log_file: str | None = None
    # Who may read /metrics (issue 11 §4): client addresses or networks (METRICS_ALLOWED_IPS),
    # or anyone presenting METRICS_TOKEN as a bearer token.
    metrics_allowed_ips: tuple[str, ...] = DEFAULT_METRICS_ALLOWED_IPS
    metrics_token: str | None = field(default=None, repr=False)
    # LOG_FORMAT: "text" (human-readable lines) or "json" (one JSON object per line).
    log_format: str = "text"
    # Whom the access-denied page names (ACCESS_DENIED_CONTACT) and GRANT_MAX_LIFETIME.
    access_denied_contact: str = ""
    grant_max_lifetime: int = 30 * 24 * 3600

    @property
    def access_policy(self) -> AccessPolicy:
        """Who may connect, from the provider's policy variables (none: everyone who signs in)."""
        if self.entra is not None:
            requirements = []
            if self.entra.allowed_groups:
                requirements.append(ClaimRequirement("groups", frozenset(self.entra.allowed_groups), case_insensitive=True))
            if self.entra.required_app_roles:
                requirements.append(ClaimRequirement("roles", frozenset(self.entra.required_app_roles)))
            return AccessPolicy.of(requirements)
        if self.oidc is not None:
            return self.oidc.required_claims
        return AccessPolicy()

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def mcp_resource(self) -> str:
        return self.public_url + "/mcp"

    @property
    def upstream_redirect_uri(self) -> str:
        """Where the upstream identity provider sends the browser back (register it there)."""
        return self.public_url + "/oauth/callback"

    @property
    def storage_scheme(self) -> str:
        return urlsplit(self.storage_url).scheme

    @property
    def storage_url_for_display(self) -> str:
        return redact_url(self.storage_url)

    @property
    def storage_backend(self) -> str:
        """sqlite or postgresql (whichever spelling STORAGE_URL uses)."""
        return "postgresql" if self.storage_scheme in POSTGRES_SCHEMES else self.storage_scheme

    @property
    def sqlite_path(self) -> str:
        # sqlite:///relative/path or sqlite:////absolute/path
        return self.storage_url[len("sqlite:///") :]

    @property
    def uses_https(self) -> bool:
        return self.public_url.startswith("https://")


def _merged_environment(environ: Mapping[str, str], dotenv_path: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    # Real environment variables win over .env entries.
    values.update(environ)
    return values


def _read_secret_file(name: str, path: str) -> str:
    """The content of NAME_FILE's file with one trailing newline stripped (what ``echo`` and
    most editors add); errors name NAME_FILE and the path, never the content."""
    variable = name + FILE_SUFFIX
    try:
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{variable}: cannot read {path!r} ({reason})") from None
    return content.removesuffix("\n").removesuffix("\r")


def _resolve_secret_files(env: dict[str, str]) -> list[str]:
    """Replace each NAME_FILE of SECRET_VARIABLES with NAME (the file's content) in ``env``, so
    every later parse reads NAME as usual. Returns the problems (both set, unreadable file)."""
    problems: list[str] = []
    for name in SECRET_VARIABLES:
        path = env.pop(name + FILE_SUFFIX, None)
        if path is None or not path.strip():
            continue
        if env.get(name):
            problems.append(f"{name} and {name}{FILE_SUFFIX} are both set: set only one of them")
            continue
        try:
            env[name] = _read_secret_file(name, path.strip())
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _public_url(value: str | None) -> str:
    url = (value or DEFAULT_PUBLIC_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme.lower() != parts.scheme:
        parts = urlsplit(parts.scheme.lower() + url[len(parts.scheme):])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"PUBLIC_URL must be an absolute http(s) URL such as https://mcp.example.com, got {url!r}")
    if parts.path or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"PUBLIC_URL must be an origin without path, query or user (e.g. https://mcp.example.com), got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(f"PUBLIC_URL must use https for a non-loopback host (clients such as Claude require it), got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"PUBLIC_URL has an invalid port, got {url!r}") from None
    # The issuer and the Origin check compare strings: use the form browsers send
    # (lower-case host, no default port).
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _service_name(raw: str | None, public_url: str) -> str:
    """SERVICE_NAME stripped, or PUBLIC_URL's host as a person reads it (an internationalised
    name in Unicode, no port)."""
    name = (raw or "").strip()
    if not name:
        parsed = AdaWebUrlParser().parse(public_url)
        return parsed.unicode_hostname if parsed is not None else (urlsplit(public_url).hostname or public_url)
    if len(name) > MAX_SERVICE_NAME_LENGTH:
        raise ConfigError(f"SERVICE_NAME must be at most {MAX_SERVICE_NAME_LENGTH} characters (a name such as Contoso), got {len(name)}")
    ch = unsafe_display_character(name)
    if ch is not None:
        raise ConfigError(
            f"SERVICE_NAME must be plain text on one line, without control or bidirectional formatting "
            f"characters; it contains U+{ord(ch):04X}"
        )
    return name


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{userinfo}@{host}").geturl()


def check_storage_url(url: str, *, name: str = "STORAGE_URL") -> str:
    """A storage URL checked as STORAGE_URL is (ConfigError naming ``name``, which may be a
    command-line option), stripped of surrounding spaces; never echoes a password."""
    url = url.strip()
    scheme = urlsplit(url).scheme
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"{name} must be sqlite:///path/to/file.db or postgresql://user:password@host:5432/dbname, "
            f"got {redact_url(url)!r}"
        )
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise ConfigError(f"{name} for SQLite must look like sqlite:///path/to/file.db, got {redact_url(url)!r}")
        return url
    try:
        # libpq's own parser: what the driver will accept (host, port, dbname, sslmode ...).
        options = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(f"{name} is not a valid PostgreSQL URL: {redact_url(url)!r}") from None
    if not options.get("dbname"):
        raise ConfigError(f"{name} for PostgreSQL must name the database (…/dbname), got {redact_url(url)!r}")
    return url


def _positive_int(
    env: Mapping[str, str], name: str, default: int, *, allow_zero: bool = False, unit: str = "number of seconds"
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer {unit}, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'zero or more' if allow_zero else 'positive'}, got {value}")
    return value


def _boolean(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in TRUE_VALUES:
        return True
    if raw in FALSE_VALUES:
        return False
    raise ConfigError(f"{name} must be true or false (on or off), got {raw!r}")


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(dict.fromkeys(o.strip().rstrip("/") for o in raw.split(",") if o.strip()))
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
            raise ConfigError(f"MCP_ALLOWED_ORIGINS must be comma-separated origins such as http://localhost:6274 (or *), got {origin!r}")
    return origins


def _rate_limit(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip() or RATE_LIMIT_DEFAULTS[name]
    if raw.lower() == "off":
        return None
    example = f"e.g. {name}={RATE_LIMIT_DEFAULTS[name]} or 10/second;{RATE_LIMIT_DEFAULTS[name]}, or off"
    try:
        items = parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name} must be one or more limits such as N/second, N/minute, N/hour ({example}), got {raw!r}") from None
    if not items or any(item.amount < 1 for item in items):
        raise ConfigError(f"{name} must allow at least one request per period ({example}), got {raw!r}")
    return raw


def _rate_limit_storage_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("RATE_LIMIT_STORAGE_URL") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in RATE_LIMIT_STORAGE_SCHEMES or not parts.hostname:
        # Nothing but the URL's scheme: it may hold a password.
        raise ConfigError(
            "RATE_LIMIT_STORAGE_URL must be empty (counters in STORAGE_URL's database) or a Redis URL "
            f"such as redis://host:6379/0 or rediss://host:6380/0, got a URL with scheme {parts.scheme!r}"
        )
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(
            "RATE_LIMIT_STORAGE_URL is a Redis URL but the redis package is not installed: "
            "pip install 'mcp-oauth-bridge[redis]'"
        )
    return raw


def _forwarded_allow_ips(env: Mapping[str, str]) -> tuple[str, ...]:
    """gunicorn's syntax (gunicorn_conf.py reads the same variable): comma-separated addresses
    or networks, host bits clear; ``*`` trusts every peer."""
    return _ip_networks(env, "FORWARDED_ALLOW_IPS", (DEFAULT_FORWARDED_ALLOW_IPS,), any_peer=True)


def _ip_networks(env: Mapping[str, str], name: str, default: tuple[str, ...], *, any_peer: bool = False) -> tuple[str, ...]:
    """A variable of comma-separated IP addresses or networks (host bits clear), each checked;
    ``*`` too where ``any_peer``; ``default`` when it is not set."""
    raw = env.get(name)
    if raw is None:
        return default
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    for entry in entries:
        if any_peer and entry == "*":
            continue
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            raise ConfigError(
                f"{name} must be comma-separated IP addresses or networks (e.g. 127.0.0.1,10.0.0.0/8)"
                f"{' or *' if any_peer else ''}, got {entry!r}"
            ) from None
    return entries


def _rate_limit_settings(env: Mapping[str, str]) -> RateLimitSettings:
    return RateLimitSettings(
        enabled=_boolean(env, "RATE_LIMITS", default=True),
        storage_url=_rate_limit_storage_url(env),
        register=_rate_limit(env, "RATE_LIMIT_REGISTER"),
        authorize=_rate_limit(env, "RATE_LIMIT_AUTHORIZE"),
        refresh=_rate_limit(env, "RATE_LIMIT_REFRESH"),
        code_exchange=_rate_limit(env, "RATE_LIMIT_CODE_EXCHANGE"),
        client_auth_failures=_rate_limit(env, "RATE_LIMIT_CLIENT_AUTH_FAILURES"),
        introspect=_rate_limit(env, "RATE_LIMIT_INTROSPECT"),
        revoke=_rate_limit(env, "RATE_LIMIT_REVOKE"),
        forwarded_allow_ips=_forwarded_allow_ips(env),
    )


def _extra_redirect_schemes(raw: str) -> tuple[str, ...]:
    schemes = tuple(dict.fromkeys(scheme.strip().lower().rstrip(":") for scheme in raw.split(",") if scheme.strip()))
    for scheme in schemes:
        if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", scheme):
            raise ConfigError(f"EXTRA_REDIRECT_SCHEMES holds URI schemes such as cursor, got {scheme!r}")
        if scheme in ("http", "https") or is_os_handler_scheme(scheme):
            raise ConfigError(
                f"EXTRA_REDIRECT_SCHEMES cannot admit {scheme!r}: "
                + ("http(s) has its own rules" if scheme in ("http", "https") else "browsers hand it to the operating system")
            )
    return schemes


def _client_registration(env: Mapping[str, str]) -> str:
    mode = (env.get("CLIENT_REGISTRATION") or REGISTRATION_OPEN).strip().lower()
    if mode not in ACCEPTED_CLIENT_KINDS:
        raise ConfigError(f"CLIENT_REGISTRATION must be one of {', '.join(ACCEPTED_CLIENT_KINDS)}, got {mode!r}")
    return mode


def _comma_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The variable's comma-separated items, stripped, without empty ones, each once (in order)."""
    return tuple(dict.fromkeys(item.strip() for item in (env.get(name) or "").split(",") if item.strip()))


def _redirect_uri_allowlist(env: Mapping[str, str]) -> RedirectUriAllowlist:
    patterns = _comma_list(env, "REDIRECT_URI_ALLOWLIST")
    for pattern in patterns:
        if not re.match(r"[a-z][a-z0-9+.\-]*:", pattern) or any(ch.isspace() for ch in pattern):
            raise ConfigError(
                "REDIRECT_URI_ALLOWLIST holds comma-separated redirect URIs in which * matches part of one "
                f"component, e.g. https://claude.ai/api/mcp/auth_callback,http://127.0.0.1:*/callback; got {pattern!r}"
            )
    return RedirectUriAllowlist(patterns)


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    hosts = tuple(host.lower().rstrip(".") for host in _comma_list(env, name))
    for host in hosts:
        if not HOST_PATTERN.fullmatch(host):
            raise ConfigError(f"{name} holds comma-separated host names or *.example.com patterns, got {host!r}")
    return hosts


def _metadata_document_policy(env: Mapping[str, str], public_url: str) -> MetadataDocumentPolicy:
    allow_loopback = _boolean(env, "CIMD_ALLOW_LOOPBACK")
    if allow_loopback and not is_loopback_host(urlsplit(public_url).hostname):
        raise ConfigError(
            "CIMD_ALLOW_LOOPBACK=true lets client metadata documents come from loopback over http: it is for "
            "development and tests, and runs only on a loopback PUBLIC_URL"
        )
    minimum = _positive_int(env, "CIMD_CACHE_MIN_TTL", 60)
    maximum = _positive_int(env, "CIMD_CACHE_MAX_TTL", 24 * 3600)
    stale = _positive_int(env, "CIMD_STALE_TTL", 7 * 24 * 3600)
    if minimum > maximum:
        raise ConfigError(f"CIMD_CACHE_MIN_TTL ({minimum}) must not exceed CIMD_CACHE_MAX_TTL ({maximum})")
    if stale < maximum:
        raise ConfigError(f"CIMD_STALE_TTL ({stale}) must be at least CIMD_CACHE_MAX_TTL ({maximum})")
    return MetadataDocumentPolicy(
        allowed_hosts=_hosts(env, "CIMD_ALLOWED_HOSTS"),
        denied_hosts=_hosts(env, "CIMD_DENIED_HOSTS"),
        allow_loopback=allow_loopback,
        pinned_only=_boolean(env, "CIMD_PINNED_ONLY"),
        min_cache_ttl=minimum,
        max_cache_ttl=maximum,
        default_cache_ttl=max(minimum, min(maximum, 3600)),
        stale_ttl=stale,
    )


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"{name} is required with {why}")
    return value


def _checked(name: str, check: "Callable[[], T]") -> "T":
    try:
        return check()
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _entra_client_id(env: Mapping[str, str], why: str) -> str:
    client_id = _required(env, "AZURE_CLIENT_ID", why)
    if not GUID.fullmatch(client_id):
        raise ConfigError(f"AZURE_CLIENT_ID must be the application (client) ID, a GUID, got {client_id!r}")
    return client_id


def _entra_allowed_tenants(env: Mapping[str, str]) -> tuple[str, ...]:
    allowed = tuple(t.strip().lower() for t in (env.get("AZURE_ALLOWED_TENANTS") or "").split(",") if t.strip())
    for value in allowed:
        if not GUID.fullmatch(value):
            raise ConfigError(f"AZURE_ALLOWED_TENANTS holds tenant ids (GUIDs), got {value!r}")
    return allowed


def _entra_certificate(path: str, password: str | None) -> CertificateCredential:
    """AZURE_CLIENT_CERTIFICATE_PATH loaded and checked: readable, a certificate with its RSA
    private key, decrypted with AZURE_CLIENT_CERTIFICATE_PASSWORD when encrypted, not expired;
    a warning is logged when it expires within 30 days."""
    try:
        credential = CertificateCredential.from_file(path, password=None if password is None else password.encode("utf-8"))
    except CertificatePasswordError as exc:
        raise ConfigError(f"AZURE_CLIENT_CERTIFICATE_PASSWORD: {exc} (the key in AZURE_CLIENT_CERTIFICATE_PATH={path!r})") from None
    except ValueError as exc:
        raise ConfigError(
            f"AZURE_CLIENT_CERTIFICATE_PATH must name a PEM file with the certificate and its private key: {exc}"
        ) from None
    warning = credential.expiry_warning()
    if credential.is_expired():
        raise ConfigError(f"AZURE_CLIENT_CERTIFICATE_PATH: {warning}; upload a new certificate to the app registration and replace the file")
    if warning:
        log.warning("AZURE_CLIENT_CERTIFICATE_PATH: %s", warning)
    return credential


def _entra_credential(env: Mapping[str, str]) -> tuple[str, CertificateCredential | None]:
    """Exactly one of AZURE_CLIENT_SECRET and AZURE_CLIENT_CERTIFICATE_PATH."""
    secret = (env.get("AZURE_CLIENT_SECRET") or "").strip()
    path = (env.get("AZURE_CLIENT_CERTIFICATE_PATH") or "").strip()
    password = env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") or None
    if secret and path:
        raise ConfigError("AZURE_CLIENT_SECRET and AZURE_CLIENT_CERTIFICATE_PATH are both set: set only one of them")
    if password is not None and not path:
        raise ConfigError("AZURE_CLIENT_CERTIFICATE_PASSWORD is set without AZURE_CLIENT_CERTIFICATE_PATH")
    if path:
        return "", _entra_certificate(path, password)
    if not secret:
        raise ConfigError(
            "AZURE_CLIENT_SECRET (a client secret) or AZURE_CLIENT_CERTIFICATE_PATH (a certificate) is required with IDP_PROVIDER=azure"
        )
    return secret, None


def _entra_settings(env: Mapping[str, str]) -> EntraSettings:
    why = "IDP_PROVIDER=azure"
    problems = _Problems()
    check = problems.check
    tenant = check(lambda: _checked("AZURE_TENANT_ID", lambda: validate_tenant(_required(env, "AZURE_TENANT_ID", why))), "")
    client_id = check(lambda: _entra_client_id(env, why), "")
    no_credential: tuple[str, CertificateCredential | None] = ("", None)
    secret, certificate = check(lambda: _entra_credential(env), no_credential)
    host = check(
        lambda: _checked(
            "AZURE_AUTHORITY_HOST",
            lambda: validate_authority_host((env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST).strip().rstrip("/")),
        ),
        DEFAULT_AUTHORITY_HOST,
    )
    scopes = tuple((env.get("AZURE_SCOPES") or "").split())
    check(lambda: _checked("AZURE_SCOPES", lambda: entra_scopes(scopes)), scopes)
    allowed: tuple[str, ...] = check(lambda: _entra_allowed_tenants(env), ())
    groups: tuple[str, ...] = check(lambda: _entra_allowed_groups(env, scopes), ())
    roles: tuple[str, ...] = check(lambda: _entra_required_app_roles(env), ())
    problems.raise_any()
    return EntraSettings(
        tenant=tenant,
        client_id=client_id,
        client_secret=secret,
        authority_host=host,
        scopes=scopes,
        allowed_tenants=allowed,
        client_certificate=certificate,
        allowed_groups=groups,
        required_app_roles=roles,
    )


def _entra_allowed_groups(env: Mapping[str, str], scopes: tuple[str, ...]) -> tuple[str, ...]:
    groups = tuple(dict.fromkeys(group.lower() for group in _comma_list(env, "AZURE_ALLOWED_GROUPS")))
    for value in groups:
        if not GUID.fullmatch(value):
            raise ConfigError(f"AZURE_ALLOWED_GROUPS holds group object ids (GUIDs, comma-separated), got {value!r}")
    if groups:
        # Membership may have to be read from Microsoft Graph, in the same token as AZURE_SCOPES.
        _checked("AZURE_ALLOWED_GROUPS", lambda: entra_scopes(scopes, reads_groups=True))
    return groups


def _entra_required_app_roles(env: Mapping[str, str]) -> tuple[str, ...]:
    roles = _comma_list(env, "AZURE_REQUIRED_APP_ROLES")
    for role in roles:
        if re.search(r"\s", role):
            raise ConfigError(f"AZURE_REQUIRED_APP_ROLES holds app role values (comma-separated, no spaces), got {role!r}")
    return roles


def _oidc_settings(env: Mapping[str, str]) -> OidcSettings:
    why = "IDP_PROVIDER=oidc"
    problems = _Problems()
    check = problems.check
    issuer = check(lambda: _checked("OIDC_ISSUER", lambda: require_secure_url(_required(env, "OIDC_ISSUER", why), what="the issuer")), "")
    scopes: tuple[str, ...] = check(lambda: _checked("OIDC_SCOPES", lambda: normalize_oidc_scopes((env.get("OIDC_SCOPES") or DEFAULT_OIDC_SCOPES).split())), ())
    client_id = check(lambda: _required(env, "OIDC_CLIENT_ID", why), "")
    client_secret = check(lambda: _required(env, "OIDC_CLIENT_SECRET", why), "")
    required_claims = check(
        lambda: _checked("OIDC_REQUIRED_CLAIMS", lambda: parse_required_claims(env.get("OIDC_REQUIRED_CLAIMS") or "")), AccessPolicy()
    )
    prompt_consent = check(lambda: _prompt_consent(env), "auto")
    problems.raise_any()
    return OidcSettings(
        issuer=issuer,
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        required_claims=required_claims,
        prompt_consent=prompt_consent,
    )


def _prompt_consent(env: Mapping[str, str]) -> str:
    value = (env.get("OIDC_PROMPT_CONSENT") or "auto").strip().lower()
    if value not in PROMPT_CONSENT_MODES:
        raise ConfigError(f"OIDC_PROMPT_CONSENT must be one of {', '.join(PROMPT_CONSENT_MODES)}, got {value!r}")
    return value


# Policy variables and the provider they belong to: set for another provider, they would
# silently restrict nothing.
POLICY_VARIABLES = {"AZURE_ALLOWED_GROUPS": "azure", "AZURE_REQUIRED_APP_ROLES": "azure", "OIDC_REQUIRED_CLAIMS": "oidc"}


def _check_policy_variables(env: Mapping[str, str], idp_provider: str) -> None:
    misplaced = [
        f"{name} applies only with IDP_PROVIDER={provider} (IDP_PROVIDER is {idp_provider})"
        for name, provider in POLICY_VARIABLES.items()
        if (env.get(name) or "").strip() and idp_provider != provider
    ]
    if misplaced:
        raise ConfigError(*misplaced)


def _access_denied_contact(env: Mapping[str, str]) -> str:
    contact = (env.get("ACCESS_DENIED_CONTACT") or "").strip()
    if len(contact) > MAX_SERVICE_NAME_LENGTH * 2 or unsafe_display_character(contact) is not None:
        raise ConfigError("ACCESS_DENIED_CONTACT must be one line of plain text, at most 160 characters (e.g. the IT service desk, it@example.com)")
    return contact


def _audit_log_file(env: Mapping[str, str]) -> str | None:
    """AUDIT_LOG_FILE: a file to append the audit log to, in a directory that exists. Checked
    without creating anything (check-config writes nothing)."""
    raw = (env.get("AUDIT_LOG_FILE") or "").strip()
    if not raw:
        return None
    path = Path(raw)
    if path.is_dir():
        raise ConfigError(f"AUDIT_LOG_FILE must be a file to append to, not a directory, got {raw!r}")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"AUDIT_LOG_FILE must be in a directory that exists, got {raw!r}")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ConfigError(f"AUDIT_LOG_FILE is not writable by this process, got {raw!r}")
    return raw


def _token_hash_key_variable(env: Mapping[str, str]) -> str:
    """TOKEN_HASH_KEYS (newest first), or TOKEN_HASH_KEY: the same list under its older name."""
    if env.get("TOKEN_HASH_KEYS") and env.get("TOKEN_HASH_KEY"):
        raise ConfigError("TOKEN_HASH_KEYS and TOKEN_HASH_KEY are both set: set only TOKEN_HASH_KEYS (TOKEN_HASH_KEY is its older, one-key name)")
    return "TOKEN_HASH_KEY" if env.get("TOKEN_HASH_KEY") else "TOKEN_HASH_KEYS"


def _token_hash_keys(raw: str, variable: str = "TOKEN_HASH_KEYS") -> tuple[bytes, ...]:
    """Comma-separated keys, newest first: the first hashes new tokens, every one is accepted."""
    keys = []
    for position, part in enumerate((part.strip() for part in raw.split(",") if part.strip()), 1):
        try:
            key = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) < 32:
            raise ConfigError(
                f"{variable} must be comma-separated keys (newest first) of at least 32 random bytes each, base64url-encoded "
                f"(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\"`); key {position} is not"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"{variable} names no key")
    try:
        TokenHasher(*keys)
    except ValueError:
        raise ConfigError(f"{variable} lists the same key twice") from None
    return tuple(keys)


def _encryption_keys(raw: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    try:
        SecretBox(keys)
    except ValueError as exc:
        raise ConfigError(f"ENCRYPTION_KEYS must be comma-separated Fernet keys (newest first): {exc}") from None
    return keys


def _generated_secrets(data_dir: Path) -> dict[str, str]:
    """Keys for the embedded default, created once and shared by every worker."""
    path = data_dir / GENERATED_SECRETS_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        generated = {"ENCRYPTION_KEYS": generate_key(), "TOKEN_HASH_KEY": secrets.token_urlsafe(32)}
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secrets-")
        with os.fdopen(fd, "w") as handle:
            json.dump(generated, handle)
        try:
            # link() fails if another worker won the race; its keys are then the ones to use.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        log.warning(
            "ENCRYPTION_KEYS and TOKEN_HASH_KEYS are not set: generated keys were stored in %s. "
            "Set both variables in production and keep them secret.",
            path,
        )
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read generated keys from {path}: {exc}; set ENCRYPTION_KEYS and TOKEN_HASH_KEYS") from None
    return {str(k): str(v) for k, v in values.items()}


def _keys(env: Mapping[str, str], data_dir: Path, write_generated_keys: bool) -> tuple[str, str, Path | None]:
    """ENCRYPTION_KEYS and TOKEN_HASH_KEYS (or TOKEN_HASH_KEY) as given, else generated ones (see
    load_settings), and where keys would be generated when they were not written."""
    raw_keys, raw_hash_key = env.get("ENCRYPTION_KEYS"), env.get(_token_hash_key_variable(env))
    if raw_keys and raw_hash_key:
        return raw_keys, raw_hash_key, None
    if raw_keys or raw_hash_key:
        missing = "TOKEN_HASH_KEYS" if raw_keys else "ENCRYPTION_KEYS"
        raise ConfigError(f"{missing} must be set together with {'ENCRYPTION_KEYS' if raw_keys else 'TOKEN_HASH_KEYS'}")
    if write_generated_keys or (data_dir / GENERATED_SECRETS_FILE).exists():
        generated = _generated_secrets(data_dir)
        return generated["ENCRYPTION_KEYS"], generated["TOKEN_HASH_KEY"], None
    return generate_key(), secrets.token_urlsafe(32), data_dir / GENERATED_SECRETS_FILE


def _idp_provider(env: Mapping[str, str], public_url: str) -> str:
    idp_provider = env.get("IDP_PROVIDER", "fake").strip().lower() or "fake"
    if idp_provider not in IDP_PROVIDERS:
        raise ConfigError(f"IDP_PROVIDER must be one of {', '.join(IDP_PROVIDERS)}, got {idp_provider!r}")
    host = urlsplit(public_url).hostname or ""
    if idp_provider == "fake" and not is_loopback_host(host) and not _boolean(env, "FAKE_IDP_ALLOW_NON_LOOPBACK"):
        raise ConfigError(
            "IDP_PROVIDER=fake lets anyone sign in as anyone: it runs only on a loopback PUBLIC_URL. "
            "Set IDP_PROVIDER to a real provider, or FAKE_IDP_ALLOW_NON_LOOPBACK=true for a demo."
        )
    return idp_provider


def _toolsets(env: Mapping[str, str], idp_provider: str) -> tuple[str, ...]:
    toolsets = tuple(dict.fromkeys(name.strip() for name in (env.get("TOOLSETS") or DEFAULT_TOOLSETS).split(",") if name.strip()))
    unknown = [name for name in toolsets if name not in TOOLSETS]
    if unknown or not toolsets:
        raise ConfigError(f"TOOLSETS must be a comma-separated list of {', '.join(TOOLSETS)}, got {env.get('TOOLSETS')!r}")
    if "mail" in toolsets and idp_provider != "azure":
        raise ConfigError("TOOLSETS=mail needs IDP_PROVIDER=azure: Microsoft Graph accepts only Entra ID tokens")
    return toolsets


def _log_level(env: Mapping[str, str]) -> str:
    log_level = (env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")
    return log_level


def _metrics_allowed_ips(env: Mapping[str, str]) -> tuple[str, ...]:
    """METRICS_ALLOWED_IPS: comma-separated addresses or networks (host bits clear); empty
    allows no address (METRICS_TOKEN only)."""
    return _ip_networks(env, "METRICS_ALLOWED_IPS", DEFAULT_METRICS_ALLOWED_IPS)


def _metrics_token(env: Mapping[str, str]) -> str | None:
    raw = (env.get("METRICS_TOKEN") or "").strip()
    if not raw:
        return None
    # A bearer secret guessable in a scrape's lifetime protects nothing.
    if len(raw) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters long")
    return raw


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, got {value!r}")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None, *, dotenv_path: str | None = ".env", write_generated_keys: bool = True
) -> Settings:
    """The validated settings. Without ENCRYPTION_KEYS and TOKEN_HASH_KEY, keys are generated once
    into DATA_DIR/secrets.json; with ``write_generated_keys`` False (check-config) nothing is
    written: throwaway keys stand in and ``Settings.keys_to_generate`` names the file.

    Every problem is reported at once: one ConfigError, one line per problem."""
    env = _merged_environment(os.environ if environ is None else environ, dotenv_path)
    problems = _Problems()
    problems.messages.extend(_resolve_secret_files(env))
    check = problems.check
    # The fallbacks only let the remaining checks run: with any problem nothing is returned.
    public_url = check(lambda: _public_url(env.get("PUBLIC_URL")), DEFAULT_PUBLIC_URL)
    idp_provider = check(lambda: _idp_provider(env, public_url), "fake")
    fake_allow = check(lambda: _boolean(env, "FAKE_IDP_ALLOW_NON_LOOPBACK"), False)

    data_dir = Path(env.get("DATA_DIR") or "data")
    storage_url = check(lambda: check_storage_url(env.get("STORAGE_URL") or f"sqlite:///{data_dir / 'mcp-oauth-bridge.db'}"), "")
    # Throwaway keys until the whole configuration is known to be valid (generated ones are
    # written into DATA_DIR only then, below).
    no_keys: tuple[str, str, Path | None] = ("", "", None)
    raw_keys, raw_hash_key, keys_to_generate = check(lambda: _keys(env, data_dir, False), no_keys)

    extra_scopes = tuple(dict.fromkeys((env.get("SCOPES") or "").split()))
    default_toolsets: tuple[str, ...] = (DEFAULT_TOOLSETS,)
    toolsets = check(lambda: _toolsets(env, idp_provider), default_toolsets)
    graph_base_url = check(
        lambda: _checked(
            "GRAPH_BASE_URL",
            lambda: require_secure_url((env.get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL).strip().rstrip("/"), what="the Graph base URL"),
        ),
        DEFAULT_GRAPH_BASE_URL,
    )
    check(lambda: _check_policy_variables(env, idp_provider), None)
    settings = Settings(
        public_url=public_url,
        idp_provider=idp_provider,
        storage_url=storage_url,
        data_dir=data_dir,
        # Only when _keys found them (else its one problem says why they are missing).
        encryption_keys=check(lambda: _encryption_keys(raw_keys), ()) if raw_keys else (),
        token_hash_keys=check(lambda: _token_hash_keys(raw_hash_key, _token_hash_key_variable(env)), ()) if raw_hash_key else (),
        extra_scopes=extra_scopes,
        toolsets=toolsets,
        graph_base_url=graph_base_url,
        mcp_allowed_origins=check(lambda: _origins(env.get("MCP_ALLOWED_ORIGINS", "")), ()),
        access_token_ttl=check(lambda: _positive_int(env, "ACCESS_TOKEN_TTL", 3600), 0),
        refresh_token_ttl=check(lambda: _positive_int(env, "REFRESH_TOKEN_TTL", 30 * 24 * 3600), 0),
        authorization_code_ttl=check(lambda: _positive_int(env, "AUTHORIZATION_CODE_TTL", 60), 0),
        refresh_grace_period=check(lambda: _positive_int(env, "REFRESH_GRACE_PERIOD", 60, allow_zero=True), 0),
        unused_client_ttl=check(lambda: _positive_int(env, "UNUSED_CLIENT_TTL", 24 * 3600), 0),
        idle_client_ttl=check(lambda: _positive_int(env, "IDLE_CLIENT_TTL", 90 * 24 * 3600), 0),
        purge_interval=check(lambda: _positive_int(env, "PURGE_INTERVAL", 3600), 0),
        extra_redirect_schemes=check(lambda: _extra_redirect_schemes(env.get("EXTRA_REDIRECT_SCHEMES", "")), ()),
        fake_idp_allow_non_loopback=fake_allow,
        log_level=check(lambda: _log_level(env), "INFO"),
        entra=check(lambda: _entra_settings(env), None) if idp_provider == "azure" else None,
        oidc=check(lambda: _oidc_settings(env), None) if idp_provider == "oidc" else None,
        rate_limits=check(lambda: _rate_limit_settings(env), RateLimitSettings()),
        storage_pool_size=check(lambda: _positive_int(env, "STORAGE_POOL_SIZE", 10, unit="number of connections"), 0),
        storage_statement_timeout=check(lambda: _positive_int(env, "STORAGE_STATEMENT_TIMEOUT", 5), 0),
        storage_connect_timeout=check(lambda: _positive_int(env, "STORAGE_CONNECT_TIMEOUT", 5), 0),
        client_registration=check(lambda: _client_registration(env), REGISTRATION_OPEN),
        redirect_uri_allowlist=check(lambda: _redirect_uri_allowlist(env), RedirectUriAllowlist()),
        metadata_documents=check(lambda: _metadata_document_policy(env, public_url), MetadataDocumentPolicy()),
        keys_to_generate=keys_to_generate,
        service_name=check(lambda: _service_name(env.get("SERVICE_NAME"), public_url), ""),
        audit_log_file=check(lambda: _audit_log_file(env), None),
        access_denied_contact=check(lambda: _access_denied_contact(env), ""),
        grant_max_lifetime=check(lambda: _positive_int(env, "GRANT_MAX_LIFETIME", 30 * 24 * 3600), 0),
        metrics_allowed_ips=check(lambda: _metrics_allowed_ips(env), DEFAULT_METRICS_ALLOWED_IPS),
        metrics_token=check(lambda: _metrics_token(env), None),
        log_format=check(lambda: _log_format(env), "text"),
    )
    problems.raise_any()
    if keys_to_generate is not None and write_generated_keys:
        raw_keys, raw_hash_key, _ = _keys(env, data_dir, True)
        settings = replace(
            settings, encryption_keys=_encryption_keys(raw_keys), token_hash_keys=_token_hash_keys(raw_hash_key), keys_to_generate=None
        )
    return settings
