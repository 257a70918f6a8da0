"""The administration commands of `mcp-oauth-bridge` (issue 11 §2): `clients add|list|show|
disable|enable|delete`, `grants list|revoke`, `keys`, `stats` and `backup`. Each works on whichever storage STORAGE_URL names, while
the server runs; `--json` prints one JSON document on stdout; bad input exits 1 with a message
on stderr (unknown id: "no client mob_client_x")."""

from __future__ import annotations

import argparse
import json
from collections import Counter
import sys
from datetime import datetime, timezone
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from ..adapters.storage.sqlite.backup import BackupRefused, backup_database
from ..domain.errors import OAuthError
from ..domain.model import Client
from ..domain.ports import GrantUsage, HashKeyUsage, StorageError
from ..domain.services.administration import AdministrationService, ClientSummary, UnknownRecord
from .config import Settings
from .container import Container, build_container

SCHEMA_BUSY_WAIT = 10.0

Command = Callable[[Settings, argparse.Namespace], int]


def _fail(message: str) -> int:
    print(f"mcp-oauth-bridge: {message}", file=sys.stderr)
    return 1


def _when(timestamp: int | None, missing: str = "-") -> str:
    if timestamp is None:
        return missing
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@contextmanager
def _storage(settings: Settings) -> Iterator[Container]:
    """The container of one command, its schema brought up to date first, its connections
    closed at the end."""
    container = build_container(settings)
    try:
        container.storage_admin().ensure_schema(busy_wait=SCHEMA_BUSY_WAIT)
        yield container
    finally:
        container.storage_admin().close()


def _administered(run: Callable[[AdministrationService, argparse.Namespace], int]) -> Command:
    """A command that runs ``run`` on the administration service; unknown ids and storage
    failures become a message and exit status 1."""

    def command(settings: Settings, args: argparse.Namespace) -> int:
        try:
            with _storage(settings) as container:
                return run(container.administration_service(), args)
        except UnknownRecord as exc:
            return _fail(str(exc))
        except StorageError as exc:
            return _fail(f"storage failed: {exc}")

    return command


# -- clients -----------------------------------------------------------------------------------


def client_document(summary: ClientSummary) -> dict[str, Any]:
    client = summary.client
    return {
        "client_id": client.client_id,
        "kind": client.kind,
        "name": client.client_name,
        "public": client.is_public,
        "redirect_uris": list(client.redirect_uris),
        "created_at": client.issued_at,
        "last_used_at": client.last_used_at,
        "disabled_at": client.disabled_at,
        "live_grants": summary.live_grants,
    }


def _print_client(summary: ClientSummary) -> None:
    client = summary.client
    print(f"client_id:    {client.client_id}")
    print(f"name:         {client.client_name or '-'}")
    print(f"kind:         {client.kind} ({'public' if client.is_public else 'confidential'})")
    for uri in client.redirect_uris:
        print(f"redirect URI: {uri}")
    print(f"created:      {_when(client.issued_at)}")
    print(f"last used:    {_when(client.last_used_at, 'never')}")
    print(f"disabled:     {_when(client.disabled_at, 'no')}")
    print(f"live grants:  {summary.live_grants}")


@_administered
def clients_list(service: AdministrationService, args: argparse.Namespace) -> int:
    summaries = service.list_clients()
    if args.json:
        _print_json([client_document(summary) for summary in summaries])
        return 0
    if not summaries:
        print("no clients")
        return 0
    rows = [
        (
            s.client.client_id,
            s.client.kind,
            s.client.client_name or "-",
            _when(s.client.issued_at),
            _when(s.client.last_used_at, "never"),
            _when(s.client.disabled_at, "no"),
            str(s.live_grants),
        )
        for s in summaries
    ]
    _print_table(("ID", "KIND", "NAME", "CREATED", "LAST USED", "DISABLED", "LIVE GRANTS"), rows)
    return 0


@_administered
def clients_show(service: AdministrationService, args: argparse.Namespace) -> int:
    summary = service.show_client(args.client_id)
    if args.json:
        _print_json(client_document(summary))
    else:
        _print_client(summary)
    return 0


def _changed(service: AdministrationService, client: Client, args: argparse.Namespace, text: str) -> int:
    """What disable and enable print: the client as it is now, or a sentence."""
    if args.json:
        _print_json(client_document(service.show_client(client.client_id)))
    else:
        print(text)
    return 0


@_administered
def clients_disable(service: AdministrationService, args: argparse.Namespace) -> int:
    client = service.disable_client(args.client_id)
    return _changed(
        service,
        client,
        args,
        f"disabled client {client.client_id} ({client.display_name}): its access tokens are revoked and it can "
        "neither authorize nor use the token endpoint; `clients enable` lets it refresh again",
    )


@_administered
def clients_enable(service: AdministrationService, args: argparse.Namespace) -> int:
    client = service.enable_client(args.client_id)
    return _changed(service, client, args, f"enabled client {client.client_id} ({client.display_name})")


@_administered
def clients_delete(service: AdministrationService, args: argparse.Namespace) -> int:
    summary = service.delete_client(args.client_id)
    if args.json:
        _print_json({"deleted": client_document(summary)})
    else:
        print(
            f"deleted client {summary.client.client_id} ({summary.client.display_name}) and everything issued "
            f"to it ({summary.live_grants} live grants)"
        )
    return 0


def clients_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with _storage(settings) as container:
            created = container.registration_service().create_operator_client(
                name=args.name, redirect_uris=args.redirect_uris, public=args.public
            )
    except OAuthError as exc:
        return _fail(f"cannot create the client: {exc.description or exc.error}")
    except StorageError as exc:
        return _fail(f"cannot create the client: {exc}")
    client = created.client
    if args.json:
        print(json.dumps({"client_id": client.client_id, "client_secret": created.client_secret, **client.metadata()}))
        return 0
    print(f"created the {'public' if client.is_public else 'confidential'} client {client.client_name!r}")
    print(f"client_id:     {client.client_id}")
    if created.client_secret is not None:
        print(f"client_secret: {created.client_secret}")
        print("the secret is shown only this once (the server keeps only a hash of it): store it now")
    for uri in client.redirect_uris:
        print(f"redirect URI:  {uri}")
    return 0


CLIENT_COMMANDS: dict[str, tuple[str, Command]] = {
    "add": ("create a trusted client with exact redirect URIs; prints its id and (once) its secret", clients_add),
    "list": ("list the clients: id, kind, name, created, last used, disabled, live grants", clients_list),
    "show": ("show one client", clients_show),
    "disable": (
        "disable a client: its access tokens stop working at once; it cannot authorize or refresh until enabled",
        clients_disable,
    ),
    "enable": ("enable a disabled client again (its grants refresh as before)", clients_enable),
    "delete": ("delete a client and every grant and token issued to it", clients_delete),
}


def add_client_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "add":
        parser.add_argument("--name", required=True, help="the name people see on the consent page")
        parser.add_argument(
            "--redirect-uri",
            dest="redirect_uris",
            action="append",
            required=True,
            metavar="URI",
            help="an exact redirect URI (repeat for several), e.g. https://claude.ai/api/mcp/auth_callback",
        )
        parser.add_argument(
            "--public", action="store_true", help="a public client (no secret; PKCE only) instead of a confidential one"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object (client_id, client_secret, metadata)")
        return
    if name != "list":
        parser.add_argument("client_id", metavar="ID", help="the client's id (see `clients list`)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


# -- grants ------------------------------------------------------------------------------------


def _user(usage: GrantUsage) -> str | None:
    claims = usage.grant.claims
    for claim in ("preferred_username", "email", "name"):
        if isinstance(claims.get(claim), str):
            return str(claims[claim])
    return None


def grant_document(usage: GrantUsage, client_names: dict[str, str | None]) -> dict[str, Any]:
    grant = usage.grant
    return {
        "grant_id": grant.grant_id,
        "subject": grant.subject,
        "user": _user(usage),
        "client_id": grant.client_id,
        "client_name": client_names.get(grant.client_id),
        "scopes": list(grant.scopes),
        "created_at": grant.created_at,
        "last_used_at": usage.last_used_at,
    }


@_administered
def grants_list(service: AdministrationService, args: argparse.Namespace) -> int:
    usages = service.list_grants(subject=args.user, client_id=args.client)
    names = {summary.client.client_id: summary.client.client_name for summary in service.list_clients()}
    if args.json:
        _print_json([grant_document(usage, names) for usage in usages])
        return 0
    if not usages:
        print("no live grants")
        return 0
    rows = [
        (
            u.grant.grant_id,
            u.grant.subject,
            _user(u) or "-",
            f"{u.grant.client_id} ({names.get(u.grant.client_id) or '-'})",
            _when(u.grant.created_at),
            _when(u.last_used_at, "-"),
        )
        for u in usages
    ]
    _print_table(("GRANT", "SUBJECT", "USER", "CLIENT", "SINCE", "LAST USED"), rows)
    return 0


@_administered
def grants_revoke(service: AdministrationService, args: argparse.Namespace) -> int:
    revoked = service.revoke_grants(grant_id=args.grant, subject=args.user, client_id=args.client)
    if args.json:
        _print_json({"revoked": revoked})
    elif args.grant is not None and not revoked:
        print(f"grant {args.grant} was already revoked")
    else:
        print(f"revoked {len(revoked)} grant{'s' if len(revoked) != 1 else ''} and their tokens" + "".join(
            f"\n  {grant_id}" for grant_id in revoked
        ))
    return 0


GRANT_COMMANDS: dict[str, tuple[str, Command]] = {
    "list": ("list who is connected: live grants, through which client, since when, last used", grants_list),
    "revoke": (
        "revoke a grant, every grant of a person (offboarding) or of a client, with their tokens, at once",
        grants_revoke,
    ),
}

GRANTS_EPILOG = """\
"last used" is when a token was last issued from the grant (sign-in or refresh): a client that
keeps calling /mcp refreshes at least every ACCESS_TOKEN_TTL (default 1 hour), so it is exact to
about that, and /mcp calls never write to the database.
"""


def add_grant_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "list":
        parser.add_argument("--user", metavar="SUBJECT", help="only the grants of this person (upstream subject)")
        parser.add_argument("--client", metavar="ID", help="only the grants of this client")
    else:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--grant", metavar="ID", help="one grant")
        which.add_argument("--user", metavar="SUBJECT", help="every grant of this person (upstream subject)")
        which.add_argument("--client", metavar="ID", help="every grant of this client")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_group(
    parser: argparse.ArgumentParser,
    dest: str,
    commands: dict[str, tuple[str, Command]],
    add_arguments: Callable[[str, argparse.ArgumentParser], None],
    epilog: str | None = None,
) -> None:
    subcommands = parser.add_subparsers(dest=dest, required=True)
    for name, (help_text, _) in commands.items():
        sub = subcommands.add_parser(
            name, help=help_text, description=help_text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(name, sub)


def group(commands: dict[str, tuple[str, Command]], dest: str) -> Command:
    """The command of a group (clients, grants, keys) that runs the subcommand ``add_group``
    parsed into ``dest``."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        return commands[getattr(args, dest)][1](settings, args)

    return run


clients = group(CLIENT_COMMANDS, "clients_command")
grants = group(GRANT_COMMANDS, "grants_command")


# -- keys, stats, backup -----------------------------------------------------------------------


def keys_rotate_encryption(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with _storage(settings) as container:
            rewritten = container.storage_admin().reencrypt()
    except StorageError as exc:
        return _fail(f"re-encryption stopped: {exc} (the rows done so far stay re-encrypted; run it again to finish)")
    if args.json:
        _print_json({"reencrypted": rewritten})
    else:
        print(
            f"re-encrypted {rewritten} rows under the first key of ENCRYPTION_KEYS; once every instance runs with "
            "that key first, the older keys can be removed"
        )
    return 0


# What a stored hash is of, for people (HashKeyUsage.kind).
HASHED_KINDS = {
    "access_tokens": "access token",
    "refresh_tokens": "refresh token",
    "authorization_codes": "authorization code",
    "pending_authorizations": "pending authorization",
    "client_secrets": "client secret",
    "registration_tokens": "registration access token",
}


def _usage_document(usage: Sequence[HashKeyUsage]) -> dict[str, Any]:
    return {item.kind: {"count": item.count, "last_expires_at": item.last_expires_at} for item in usage}


def _usage_text(usage: Sequence[HashKeyUsage], *, current: bool) -> str:
    parts = []
    for item in usage:
        what = HASHED_KINDS[item.kind] + ("" if item.count == 1 else "s")
        if item.last_expires_at is not None:
            until = f"the last expires {_when(item.last_expires_at)}"
        else:
            until = "no expiry" if current else "until next used"
        parts.append(f"{item.count} {what} ({until})")
    return ", ".join(parts)


def keys_status(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with _storage(settings) as container:
            key_ids = container.hasher().key_ids
            usage = container.storage_admin().hash_key_usage(key_ids, container.clock().now())
    except StorageError as exc:
        return _fail(f"storage failed: {exc}")
    by_key = {key: [item for item in usage if item.key_id == key] for key in key_ids}
    # Hashed before stored hashes named their key (under whichever key was TOKEN_HASH_KEY then),
    # or under a key no longer listed: any older key may be the one they need.
    unattributed = [item for item in usage if item.key_id is None]
    removable = [key for key in key_ids[1:] if not by_key[key] and not unattributed]
    if args.json:
        keys = [
            {
                "position": position,
                "id": key,
                "current": position == 1,
                "in_use_by": _usage_document(by_key[key]),
                "can_be_removed": key in removable,
            }
            for position, key in enumerate(key_ids, 1)
        ]
        _print_json({"token_hash_keys": keys, "without_a_listed_key_id": _usage_document(unattributed)})
        return 0
    print("token hash keys (newest first):")
    for position, key in enumerate(key_ids, 1):
        current = position == 1
        print(f"  {position}. {key}  {'current: hashes everything new' if current else 'older: accepted, hashes nothing new'}")
        if by_key[key]:
            print(f"     {'in use by' if current else 'still needed by'}: {_usage_text(by_key[key], current=current)}")
    if unattributed:
        print(
            "hashed before stored hashes named their key (under the TOKEN_HASH_KEY of that time), or under a key no "
            f"longer listed: {_usage_text(unattributed, current=False)}; keep the older keys until these are gone"
        )
    for key in removable:
        print(f"key {key_ids.index(key) + 1} ({key}) can be removed: nothing stored depends on it any more")
    if len(key_ids) == 1:
        print("one key: there is nothing to retire")
    elif not removable:
        print(
            "no older key can be removed yet: tokens expire on their own, and a client secret or registration "
            "access token is hashed again under the current key at its next use"
        )
    return 0


KEY_COMMANDS: dict[str, tuple[str, Command]] = {
    "rotate-encryption": (
        "re-encrypt every sealed upstream token under the first key of ENCRYPTION_KEYS, in batches, while the "
        "server runs (safe to interrupt and run again)",
        keys_rotate_encryption,
    ),
    "status": (
        "say what stored tokens, codes and client secrets still depend on each key of TOKEN_HASH_KEYS, so that "
        "an older key can be retired (read-only)",
        keys_status,
    ),
}

KEYS_EPILOG = """\
Rotating the encryption key: put a new key first in ENCRYPTION_KEYS, keeping the old ones after
it (comma-separated), and restart every instance (new values are sealed under the first key, all
keys open); run `keys rotate-encryption`; then remove the old keys and restart again.

Rotating the token hash key: put a new key first in TOKEN_HASH_KEYS, keeping the old ones after
it, and restart every instance (new tokens, codes and secrets are hashed under the first key; what
was hashed under any listed key still works). Tokens under an old key expire on their own; client
secrets and registration access tokens are hashed again at their next use. Run `keys status`
until it says an old key can be removed, then remove it and restart again.
"""


def add_key_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


keys = group(KEY_COMMANDS, "keys_command")


def stats(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with _storage(settings) as container:
            admin = container.storage_admin()
            clients = container.clients().list()
            counts = admin.counts()
            document = {
                "storage": settings.storage_backend,
                "clients": dict(sorted(Counter(client.kind for client in clients).items())),
                "disabled_clients": sum(client.is_disabled for client in clients),
                "live_grants": admin.live_grants(),
                "grants": counts["grants"],
                "access_tokens": counts["access_tokens"],
                "refresh_tokens": counts["refresh_tokens"],
                "authorization_codes": counts["authorization_codes"],
                "pending_authorizations": counts["pending_authorizations"],
                "database_size_bytes": admin.database_size(),
            }
    except StorageError as exc:
        return _fail(f"storage failed: {exc}")
    if args.json:
        _print_json(document)
        return 0
    kinds = ", ".join(f"{count} {kind}" for kind, count in document["clients"].items()) or "none"
    print(f"storage:                {settings.storage_backend} ({settings.storage_url_for_display})")
    print(f"clients:                {len(clients)} ({kinds}; {document['disabled_clients']} disabled)")
    print(f"live grants:            {document['live_grants']} (of {document['grants']} stored)")
    print(f"access tokens:          {document['access_tokens']} rows")
    print(f"refresh tokens:         {document['refresh_tokens']} rows")
    print(f"authorization codes:    {document['authorization_codes']} rows")
    print(f"pending authorizations: {document['pending_authorizations']}")
    print(f"database size:          {_size(document['database_size_bytes'])}")
    print("(token, code and authorization rows include expired ones until `purge` deletes them)")
    return 0


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def backup(settings: Settings, args: argparse.Namespace) -> int:
    if settings.storage_backend != "sqlite":
        return _fail(
            "backup copies a SQLite database; for PostgreSQL use its own tools, e.g. "
            "`pg_dump --format=custom --file=bridge.dump DBNAME` (restore with pg_restore)"
        )
    try:
        size = backup_database(settings.sqlite_path, args.path, force=args.force)
    except BackupRefused as exc:
        return _fail(f"backup refused: {exc}")
    if args.json:
        _print_json({"source": settings.sqlite_path, "backup": args.path, "size_bytes": size})
    else:
        print(f"backed up {settings.sqlite_path} to {args.path} ({_size(size)}), a consistent copy as of now")
    return 0


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the file to write (refused if it exists, unless --force)")
    parser.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


BACKUP_EPILOG = """\
An online backup: the server keeps running and the copy is the database as of one instant.
Restore: stop the server, move the database file (STORAGE_URL's; by default
./data/mcp-oauth-bridge.db)
and any -wal and -shm files beside it away, copy the backup in its place, start the server.
PostgreSQL: use pg_dump / pg_restore.
"""
