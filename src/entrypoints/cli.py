"""The `mcp-oauth-bridge` command: serve, migrate, purge, copy-storage, check-config, clients."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import sys
from dataclasses import replace
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Callable

from psycopg.conninfo import conninfo_to_dict

from ..adapters.logs import configure_logging
from ..adapters.system import SystemClock
from ..domain.ports import StorageAdministration, StorageError
from ..domain.security import TokenHasher
from ..domain.services.storage_copy import CopyReport, SourceSchemaNotCurrent, StorageCopy, TargetNotEmpty
from .config import ConfigError, Settings, check_storage_url, load_settings, redact_url
from .container import build_container
from .storage import build_storage
from . import cli_admin, gunicorn_conf

log = logging.getLogger("mcp_oauth_bridge")
# How long a command (and serve's master) waits for the database's schema lock.
SCHEMA_BUSY_WAIT = cli_admin.SCHEMA_BUSY_WAIT


SERVE_EPILOG = """\
gunicorn settings it honours (environment): BIND (listen address, default 127.0.0.1:8000; --bind
wins), WEB_CONCURRENCY (worker processes, default 2; --workers wins), FORWARDED_ALLOW_IPS (proxies
whose X-Forwarded-For is believed), and the serving limits WORKER_THREADS, WORKER_CONNECTIONS,
KEEPALIVE_TIMEOUT, REQUEST_HEADER_TIMEOUT, REQUEST_BODY_TIMEOUT, MAX_REQUEST_HEADER_BYTES,
MAX_REQUEST_BODY_BYTES, RESPONSE_WRITE_TIMEOUT, WORKER_ACTIVE_REQUESTS, WORKER_ACTIVE_MS (see
README, "Running it on the internet"). The application itself reads PUBLIC_URL, IDP_PROVIDER,
STORAGE_URL and the rest (README, "Configuration"; `mcp-oauth-bridge check-config` validates them).
"""


def _address_in_use(bind: str) -> str | None:
    """Why ``bind`` (host:port) cannot be listened on, or None. Checked before gunicorn starts,
    which would otherwise report a taken port by retrying for a while after saying it serves."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        return None  # a unix socket or a form gunicorn will judge itself
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"address {bind} is already in use"
            return f"cannot listen on {bind}: {exc.strerror}"
    return None


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from .app import create_app

    bind = args.bind or gunicorn_conf.bind
    problem = _address_in_use(bind)
    if problem is not None:
        print(f"mcp-oauth-bridge: {problem}", file=sys.stderr)
        return 1

    # Migrate once in the master so workers start on a ready schema; if the database is busy
    # or down now, the workers answer 503 and retry rather than the server not starting. Then
    # close the master's connections: the workers open their own after the fork.
    admin = build_container(settings).storage_admin()
    admin.ensure_schema(busy_wait=SCHEMA_BUSY_WAIT)
    admin.close()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                name: getattr(gunicorn_conf, name)
                for name in dir(gunicorn_conf)
                if not name.startswith("_") and name in self.cfg.settings
            }
            options["bind"] = args.bind or options["bind"]
            if args.workers:
                options["workers"] = args.workers
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    log.info("serving %s on %s", settings.public_url, bind)
    Server().run()
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        applied = build_container(settings).storage_admin().migrate()
    except StorageError as exc:
        print(f"mcp-oauth-bridge: migration failed: {exc}", file=sys.stderr)
        return 1
    print(f"applied schema versions {', '.join(map(str, applied))}" if applied else "schema is up to date")
    return 0


def _purge(settings: Settings, args: argparse.Namespace) -> int:
    container = build_container(settings)
    try:
        report = container.housekeeping().purge()
        # Rate-limit counters in the database (those in Redis expire by themselves).
        counters = container.rate_limit_store().purge_expired(container.clock().now())
    except StorageError as exc:
        print(f"mcp-oauth-bridge: purge failed: {exc}", file=sys.stderr)
        return 1
    finally:
        container.storage_admin().close()
    purged = {**report.expired_rows, "unused_clients": report.deleted_clients, "rate_limit_counters": counters}
    if args.json:
        print(json.dumps({"purged": purged}))
        return 0
    print(f"purged {sum(purged.values())} rows:")
    for kind, count in purged.items():
        print(f"  {kind.replace('_', ' ')}: {count}")
    return 0


def _storage_for(settings: Settings, url: str, option: str, *, must_exist: bool) -> Settings:
    """The settings with ``url`` (a --from or --to value) as their storage; ConfigError naming
    the option if it is not a storage URL, or names a SQLite file that must exist and does not
    (opening one creates it)."""
    chosen = replace(settings, storage_url=check_storage_url(url, name=option))
    if must_exist and chosen.storage_backend == "sqlite" and not Path(chosen.sqlite_path).is_file():
        raise ConfigError(f"{option}: there is no SQLite database at {chosen.sqlite_path}")
    return chosen


def _place(settings: Settings) -> tuple[str, ...]:
    """Which database the settings' storage is, for telling two URLs of the same one apart."""
    if settings.storage_backend == "sqlite":
        return ("sqlite", str(Path(settings.sqlite_path).resolve()))
    options = conninfo_to_dict(settings.storage_url)
    return ("postgresql", str(options.get("host")), str(options.get("port") or 5432), str(options.get("dbname")))


def _print_copy_report(report: CopyReport) -> None:
    for kind, result in report.results.items():
        notes = []
        if result.existing:
            notes.append(f"{result.existing} already in the target, left as they were")
        if result.unstorable:
            notes.append(f"{result.unstorable} skipped: a keyed hash stored as text, which the target cannot hold")
        print(f"  {kind}: {result.added}" + (f" ({'; '.join(notes)})" if notes else ""))
    print("rate-limit counters, upstream-refresh leases and cached client metadata documents are not copied: they start afresh")


def _copy_storage(settings: Settings, args: argparse.Namespace) -> int:
    try:
        source_settings = _storage_for(settings, args.source, "--from", must_exist=True)
        target_settings = _storage_for(settings, args.target, "--to", must_exist=False)
        if _place(source_settings) == _place(target_settings):
            raise ConfigError("--from and --to name the same database")
    except ConfigError as exc:
        print(f"mcp-oauth-bridge: {exc}", file=sys.stderr)
        return 2
    source, target = redact_url(source_settings.storage_url), redact_url(target_settings.storage_url)
    admins: list[StorageAdministration] = []
    try:
        admins = [build_storage(source_settings).admin(), build_storage(target_settings).admin()]
        copy = StorageCopy(source=admins[0], target=admins[1], clock=SystemClock())
        print(f"copying live records from {source} to {target}")
        report = copy.copy(force=args.force)
    except SourceSchemaNotCurrent as exc:
        print(
            f"mcp-oauth-bridge: copy refused: {exc}; if --from names this server's database, upgrade it "
            "first (mcp-oauth-bridge migrate with STORAGE_URL set to it)",
            file=sys.stderr,
        )
        return 1
    except TargetNotEmpty as exc:
        print(
            f"mcp-oauth-bridge: copy refused: {exc}; name an empty database, or pass --force to copy anyway "
            "(records the target already has are left as they are)",
            file=sys.stderr,
        )
        return 1
    except StorageError as exc:
        print(
            f"mcp-oauth-bridge: copy failed: {exc} (batches copied before the failure stay in the target: "
            "run the command again with --force to finish)",
            file=sys.stderr,
        )
        return 1
    finally:
        for admin in admins:
            admin.close()
    if report.migrated:
        print(f"applied schema versions {', '.join(map(str, report.migrated))} to the target")
    print("copied:")
    _print_copy_report(report)
    return 0


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    if settings.keys_to_generate is not None:
        print(
            f"ENCRYPTION_KEYS and TOKEN_HASH_KEYS are not set: the server would generate them into "
            f"{settings.keys_to_generate} (nothing was written); set both in production"
        )
    print(f"PUBLIC_URL={settings.public_url}")
    print(f"IDP_PROVIDER={settings.idp_provider}")
    certificate = settings.entra.client_certificate if settings.entra else None
    if certificate is not None:
        # The thumbprint the Entra portal lists under Certificates & secrets, to compare.
        print(
            f"AZURE_CLIENT_CERTIFICATE_PATH: {certificate.subject}, thumbprint {certificate.sha1_thumbprint}, "
            f"expires {certificate.expires_at:%Y-%m-%d}"
        )
    print(f"STORAGE_URL={settings.storage_url_for_display}")
    limits = settings.rate_limits
    # Where the counters are, never the Redis URL itself (it may hold a password).
    where = "in Redis (RATE_LIMIT_STORAGE_URL)" if limits.storage_url else "in STORAGE_URL's database"
    print(f"RATE_LIMITS={'on, counters ' + where if limits.enabled else 'off'}")
    print(f"CLIENT_REGISTRATION={settings.client_registration}")
    policy = settings.access_policy
    described = "; ".join(
        f"{requirement.claim} one of {', '.join(sorted(requirement.accepted))}" for requirement in policy.requirements
    )
    print(f"access policy: {described if policy.restricts else 'everyone who signs in may connect'}")
    if settings.keys_to_generate is None:
        ids = TokenHasher(*settings.token_hash_keys).key_ids
        older = f"; older, still accepted: {', '.join(ids[1:])}" if len(ids) > 1 else ""
        print(f"token hash keys: {ids[0]} hashes new values{older} (`keys status` says what depends on each)")
    print("configuration is valid")
    return 0




COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "serve": ("run the server with gunicorn", _serve),
    "migrate": ("create or upgrade the database schema", _migrate),
    "purge": ("delete expired codes, tokens, authorizations and rate-limit counters, and unused registered clients", _purge),
    "copy-storage": (
        "copy every live client, grant and token from one storage into another (e.g. SQLite to PostgreSQL)",
        _copy_storage,
    ),
    "check-config": ("validate the configuration and print the main settings", _check_config),
    "clients": ("manage clients: add, list, show, disable, enable, delete", cli_admin.clients),
    "grants": ("list who is connected, and revoke grants (offboarding: `grants revoke --user SUBJECT`)", cli_admin.grants),
    "keys": (
        "key rotation: `keys rotate-encryption` re-encrypts under the first key of ENCRYPTION_KEYS; `keys status` "
        "says what still depends on each key of TOKEN_HASH_KEYS",
        cli_admin.keys,
    ),
    "stats": ("print clients by kind, live grants, tokens, pending authorizations and the database size", cli_admin.stats),
    "backup": ("write an online, consistent copy of the SQLite database to a file", cli_admin.backup),
}


def _version() -> str:
    try:
        return package_metadata.version("mcp-oauth-bridge")
    except package_metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mcp-oauth-bridge",
        description="An OAuth 2.1 authorization server and protected MCP endpoint. Configuration comes from "
        "environment variables (and a .env file): see README, \"Configuration\".",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=SERVE_EPILOG if name == "serve" else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "serve":
            sub.add_argument("--bind", help="host:port to listen on (default 127.0.0.1:8000 or $BIND)")
            sub.add_argument("--workers", type=int, help="gunicorn worker processes (default 2)")
        if name == "clients":
            cli_admin.add_group(sub, "clients_command", cli_admin.CLIENT_COMMANDS, cli_admin.add_client_arguments)
        if name == "keys":
            cli_admin.add_group(sub, "keys_command", cli_admin.KEY_COMMANDS, cli_admin.add_key_arguments,
                                cli_admin.KEYS_EPILOG)
        if name == "backup":
            cli_admin.add_backup_arguments(sub)
            sub.epilog = cli_admin.BACKUP_EPILOG
        if name in ("purge", "stats"):
            sub.add_argument("--json", action="store_true", help="print one JSON document")
        if name == "grants":
            cli_admin.add_group(sub, "grants_command", cli_admin.GRANT_COMMANDS, cli_admin.add_grant_arguments,
                                cli_admin.GRANTS_EPILOG)
        if name == "copy-storage":
            sub.add_argument("--from", dest="source", required=True, metavar="URL", help="the storage to copy from")
            sub.add_argument("--to", dest="target", required=True, metavar="URL", help="the storage to copy into (empty)")
            sub.add_argument(
                "--force",
                action="store_true",
                help="copy into a target that already holds records, leaving those it has as they are",
            )
    args = parser.parse_args(argv)
    # The app factory replaces this handler with one in LOG_FORMAT at LOG_LEVEL.
    configure_logging("INFO", "text")
    try:
        # check-config only validates: it writes nothing, not even generated keys.
        settings = load_settings(write_generated_keys=args.command != "check-config")
    except ConfigError as exc:
        print(f"mcp-oauth-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command][1](settings, args)


if __name__ == "__main__":
    sys.exit(main())
