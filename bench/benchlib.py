"""Shared pieces of the benchmarks: the environment header, settings for a throw-away server,
and seeding of clients, grants, codes and tokens through the project's own code.

Nothing here is a test: the benchmarks are run by hand (see bench/README.md).
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence

from cryptography.fernet import Fernet

from mcp_oauth_bridge.adapters.identity.fake import FakeIdentityProvider
from mcp_oauth_bridge.domain.model import AccessToken, AuthorizationCode, Grant, RefreshToken, UpstreamLogin
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.ports import AuthorizationStore, GrantStore, RefreshTokenStore, TokenGenerator, UnitOfWork
from mcp_oauth_bridge.domain.security import TokenHasher, s256_challenge
from mcp_oauth_bridge.domain.services.registration import RegistrationService
from mcp_oauth_bridge.domain.refresh_tokens import refresh_token_value
from mcp_oauth_bridge.domain.services.tokens import ACCESS_TOKEN_PREFIX
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import Container, build_container

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIRECT_URI = "http://127.0.0.1:9999/callback"


# -- environment --------------------------------------------------------------------------------


def wrk_version() -> str | None:
    """``wrk -v``'s first line, or None when wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    # `wrk -v` prints its version and usage and exits non-zero.
    result = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def print_header(title: str, extra: Sequence[tuple[str, str]] = ()) -> None:
    rows: list[tuple[str, str]] = [
        ("python", f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"),
        ("sqlite", f"{sqlite3.sqlite_version} (the sqlite3 module's library)"),
        ("wrk", wrk_version() or "not installed"),
        ("cores", f"{os.cpu_count()} logical, {usable_cores()} usable by this process"),
        ("machine", f"{platform.system()} {platform.release()} {platform.machine()} ({_cpu_model()})"),
        ("mcp-oauth-bridge", package_version("mcp-oauth-bridge")),
        *extra,
        ("load average", f"{load_average()} at the start"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"== {title} ==")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes on these cores skew the figures."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def package_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None) -> None:
    """A plain-text table that pastes into an issue as is (inside a code block)."""
    align = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).rjust(width) if is_right else str(cell).ljust(width)
            for cell, width, is_right in zip(cells, widths, align)
        ).rstrip()

    print(line(headers))
    print(line(["-" * width for width in widths]))
    for row in rows:
        print(line(row))


# -- settings and container ---------------------------------------------------------------------


def server_environment(data_dir: Path, public_url: str, **overrides: str) -> dict[str, str]:
    """The variables a throw-away server (and the bench process seeding it) share: fresh keys,
    a temporary data directory, warnings-only application logging."""
    env = {
        "PUBLIC_URL": public_url,
        "DATA_DIR": str(data_dir),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode("ascii"),
        # 32 random bytes, base64url: 43 characters.
        "TOKEN_HASH_KEY": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


def open_container(env: dict[str, str]) -> Container:
    """The project's own container over the database and keys ``env`` names (no .env file)."""
    container = build_container(load_settings(env, dotenv_path=None))
    container.storage_admin().migrate()
    return container


# -- PostgreSQL -----------------------------------------------------------------------------------

# The throw-away server's settings for benchmarks, over the test suite's (which turn durability
# off entirely): data files synced as in production (fsync, full-page writes), but a commit does
# not wait for its WAL to reach the disk, which is what SQLite's WAL mode with synchronous=NORMAL
# (the SQLite adapter's setting) does too: a crash may lose the last commits, never corrupt.
BENCH_POSTGRES_SETTINGS: dict[str, str] = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"}


def postgres_server_module() -> ModuleType:
    """tests/integration/postgres_server.py, the test suite's throw-away PostgreSQL server (from
    the machine's binaries; as root it runs the server as the ``postgres`` account). It belongs to
    the test package, so the project must be installed with its test extra."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.integration import postgres_server
    except ImportError as error:
        raise SystemExit(
            f"the PostgreSQL benchmarks start the test suite's throw-away server ({error}): "
            "install the project with its test extra (pip install -e '.[test]'), or run them with "
            "./run-tests' virtualenv (.venv-test/bin/python)"
        ) from None
    return postgres_server


def parse_settings(pairs: Sequence[str]) -> dict[str, str]:
    """NAME=VALUE pairs (``--pg-setting shared_buffers=512MB``) as a dict."""
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"a PostgreSQL setting must look like NAME=VALUE, got {pair!r}")
        settings[name.strip()] = value.strip()
    return settings


@contextmanager
def bench_postgres(parent: Path | None, settings: dict[str, str]) -> Iterator[Any]:
    """A throw-away PostgreSQL server (tests/integration/postgres_server.py's start_postgres)
    with BENCH_POSTGRES_SETTINGS and ``settings`` over them, its cluster in a new directory under
    ``parent`` (default: the system's temporary directory, the file system the SQLite benchmarks
    use, rather than the test suite's /dev/shm). Yields its PostgresServer."""
    module = postgres_server_module()
    base = parent if parent is not None else Path(tempfile.gettempdir())
    try:
        with module.start_postgres(base, **{**BENCH_POSTGRES_SETTINGS, **settings}) as server:
            yield server
    except module.PostgresUnavailable as error:
        raise SystemExit(f"no PostgreSQL server for the benchmark: {error}") from None


def create_postgres_database(server: Any, name: str) -> str:
    """A new empty database ``name`` on the throw-away ``server``; its URL."""
    url: str = postgres_server_module().create_database(server.admin_url, name)
    return url


def postgres_description(server: Any) -> str:
    """Version, where the cluster lives, and the settings the figures depend on."""
    import psycopg

    names = ("shared_buffers", "fsync", "synchronous_commit", "full_page_writes", "effective_cache_size")
    with psycopg.connect(server.admin_url) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        values = [f"{name}={connection.execute(f'SHOW {name}').fetchone()[0]}" for name in names]  # type: ignore[index]
    return f"{version[0] if version else '?'} on 127.0.0.1:{server.port}, cluster in {server.directory}, {', '.join(values)}"


# -- seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchClient:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class IssuedCode:
    code: str
    code_verifier: str


class Seeder:
    """Creates what the real authorization flow would create (grants with encrypted upstream
    tokens, codes bound to a PKCE challenge, refresh and access tokens), through the storage
    ports and the domain's TokenHasher, in one transaction per call."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self._policy: ServerPolicy = container.policy()
        self._hasher: TokenHasher = container.hasher()
        self._tokens: TokenGenerator = container.token_generator()
        self._grants: GrantStore = container.grants()
        self._refresh_tokens: RefreshTokenStore = container.refresh_tokens()
        self._unit_of_work: UnitOfWork = container.unit_of_work()
        self._authorizations: AuthorizationStore = container.authorizations()
        idp = container.identity_provider()
        if not isinstance(idp, FakeIdentityProvider):
            raise RuntimeError("the benchmarks seed grants with the fake identity provider (IDP_PROVIDER=fake)")
        self._idp = idp
        self._serial = 0

    @property
    def policy(self) -> ServerPolicy:
        return self._policy

    def register_client(self) -> BenchClient:
        """A confidential client (client_secret_post) registered through RegistrationService."""
        registration: RegistrationService = self._container.registration_service()
        registered = registration.register(
            {
                "client_name": "bench",
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "client_secret_post",
            }
        )
        assert registered.client_secret is not None
        return BenchClient(registered.client.client_id, registered.client_secret)

    def upstream_login(self) -> UpstreamLogin:
        """A sign-in at the fake identity provider, as the callback would redeem it."""
        self._serial += 1
        username = f"bench-user-{self._serial}"
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        code = self._idp.issue_code(
            username=username,
            email=f"{username}@example.com",
            name=f"Bench User {self._serial}",
            nonce=nonce,
            code_challenge=s256_challenge(verifier),
        )
        return self._idp.exchange_code(code=code, code_verifier=verifier, nonce=nonce)

    def new_grant(self, client_id: str, login: UpstreamLogin, now: int) -> Grant:
        """A grant like AuthorizationService.complete_upstream_login creates (not yet stored;
        store it with ``add_grant(grant, login.tokens)``)."""
        return Grant(
            grant_id=self._tokens.generate("mob_gr_"),
            client_id=client_id,
            subject=login.identity.subject,
            claims=dict(login.identity.claims),
            scopes=self._policy.scopes_supported,
            resource=self._policy.resource,
            created_at=now,
        )

    def authorization_codes(self, client: BenchClient, count: int, now: int) -> list[IssuedCode]:
        """``count`` unused codes, each with its own grant and PKCE pair; they expire after
        the policy's authorization_code_ttl (AUTHORIZATION_CODE_TTL)."""
        login = self.upstream_login()
        issued: list[IssuedCode] = []
        with self._unit_of_work.atomic():
            for _ in range(count):
                grant = self.new_grant(client.client_id, login, now)
                verifier = secrets.token_urlsafe(48)
                code = self._tokens.generate("mob_ac_")
                self._grants.add_grant(grant, login.tokens)
                self._authorizations.add_code(
                    AuthorizationCode(
                        code_hash=self._hasher.hash(code),
                        grant_id=grant.grant_id,
                        client_id=client.client_id,
                        redirect_uri=REDIRECT_URI,
                        code_challenge=s256_challenge(verifier),
                        code_challenge_method="S256",
                        resource=grant.resource,
                        scopes=grant.scopes,
                        issued_at=now,
                        expires_at=now + self._policy.authorization_code_ttl,
                    )
                )
                issued.append(IssuedCode(code, verifier))
        return issued

    def refresh_tokens(self, client: BenchClient, count: int, now: int) -> list[str]:
        """``count`` unused, unrotated refresh tokens, each with its own grant."""
        login = self.upstream_login()
        values: list[str] = []
        with self._unit_of_work.atomic():
            for _ in range(count):
                grant = self.new_grant(client.client_id, login, now)
                value = refresh_token_value(
                    self._hasher, grant_id=grant.grant_id, generation=0, secret=self._tokens.generate("")
                )
                self._grants.add_grant(grant, login.tokens)
                self._refresh_tokens.add_refresh_token(
                    RefreshToken(
                        token_hash=self._hasher.hash(value),
                        grant_id=grant.grant_id,
                        client_id=client.client_id,
                        generation=0,
                        scopes=grant.scopes,
                        resource=grant.resource,
                        issued_at=now,
                        expires_at=now + self._policy.refresh_token_ttl,
                    )
                )
                values.append(value)
        return values

    def access_token(self, grant: Grant, now: int) -> tuple[str, AccessToken]:
        """A new access token value and its row (not yet stored), as TokenService issues it."""
        value = self._tokens.generate(ACCESS_TOKEN_PREFIX)
        row = AccessToken(
            token_hash=self._hasher.hash(value),
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            scopes=grant.scopes,
            resource=grant.resource,
            issued_at=now,
            expires_at=now + self._policy.access_token_ttl,
        )
        return value, row
