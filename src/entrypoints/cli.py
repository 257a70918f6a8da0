"""The `mcp-oauth-bridge` command: serve, migrate, purge, check-config."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable

from ..domain.ports import StorageError
from .config import ConfigError, Settings, load_settings
from .container import build_container
from . import gunicorn_conf

log = logging.getLogger("mcp_oauth_bridge")
MASTER_SCHEMA_BUSY_WAIT = 10.0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from .app import create_app

    # Migrate once in the master so workers start on a ready schema; if the database is busy
    # or down now, the workers answer 503 and retry rather than the server not starting. Then
    # close the master's connections: the workers open their own after the fork.
    admin = build_container(settings).storage_admin()
    admin.ensure_schema(busy_wait=MASTER_SCHEMA_BUSY_WAIT)
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

    log.info("serving %s on %s", settings.public_url, args.bind or gunicorn_conf.bind)
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
    result = container.housekeeping().purge()
    # Rate-limit counters in the database (those in Redis expire by themselves).
    counters = container.rate_limit_store().purge_expired(container.clock().now())
    print(
        f"purged {result.expired_rows} expired rows, {result.deleted_clients} unused clients "
        f"and {counters} expired rate-limit counters"
    )
    return 0


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    print(f"PUBLIC_URL={settings.public_url}")
    print(f"IDP_PROVIDER={settings.idp_provider}")
    print(f"STORAGE_URL={settings.storage_url_for_display}")
    limits = settings.rate_limits
    # Where the counters are, never the Redis URL itself (it may hold a password).
    where = "in Redis (RATE_LIMIT_STORAGE_URL)" if limits.storage_url else "in STORAGE_URL's database"
    print(f"RATE_LIMITS={'on, counters ' + where if limits.enabled else 'off'}")
    print("configuration is valid")
    return 0


COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "serve": ("run the server with gunicorn", _serve),
    "migrate": ("create or upgrade the database schema", _migrate),
    "purge": ("delete expired codes, tokens, authorizations and rate-limit counters, and unused registered clients", _purge),
    "check-config": ("validate the configuration and print the main settings", _check_config),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-oauth-bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if name == "serve":
            sub.add_argument("--bind", help="host:port to listen on (default 127.0.0.1:8000 or $BIND)")
            sub.add_argument("--workers", type=int, help="gunicorn worker processes (default 2)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mcp-oauth-bridge: configuration error: {exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command][1](settings, args)


if __name__ == "__main__":
    sys.exit(main())
