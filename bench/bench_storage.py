"""Storage figures: how the database grows with time, for one connection refreshed every hour and
for a registration flood at the /register rate limit, on simulated time (a clock this script
moves), through the application itself (Flask's test client, SQLite file in a temp directory).

    python bench/bench_storage.py                       # both scenarios, defaults
    python bench/bench_storage.py --days 30 --flood-hours 26

Run it against another checkout (e.g. the code before a change) by running that checkout's copy
of this script with that checkout's virtualenv: it uses only the app factory, the container and
the purge the checkout has (the housekeeping service where there is one, else the grant store's
purge), so the figures are side by side.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.fernet import Fernet
from dependency_injector import providers

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import build_container

HOUR = 3600
REDIRECT_URI = "https://claude.ai/api/mcp/auth_callback"
# What Claude registers with (about 400 bytes).
CLAUDE_REGISTRATION = {
    "client_name": "Claude",
    "redirect_uris": [REDIRECT_URI],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_post",
    "scope": "User.Read",
}
HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


class Clock:
    def __init__(self) -> None:
        self.current = 1_700_000_000

    def now(self) -> int:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += max(1, int(seconds))


def app_for(data_dir: Path, clock: Clock) -> Any:
    env = {
        "PUBLIC_URL": "http://127.0.0.1:8000",
        "DATA_DIR": str(data_dir),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "TOKEN_HASH_KEY": secrets.token_urlsafe(32),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMITS": "off",
    }
    settings = load_settings(env, dotenv_path=None)
    container = build_container(settings)
    container.clock.override(providers.Object(clock))
    return create_app(settings, container=container)


def purge(app: Any) -> None:
    container = app.extensions["container"]
    if hasattr(container, "housekeeping"):
        container.housekeeping().purge()
    else:
        container.storage_admin().purge_expired(container.clock().now())


def file_size(app: Any) -> int:
    connection: sqlite3.Connection = app.extensions["container"].storage.database().connection()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(connection.execute("PRAGMA page_count").fetchone()[0] * connection.execute("PRAGMA page_size").fetchone()[0])


def rows(app: Any, table: str) -> int:
    connection: sqlite3.Connection = app.extensions["container"].storage.database().connection()
    return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + "?" + parts.query


def login(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register like Claude, sign in at the fake IdP, exchange the code: (registration, tokens)."""
    registration = client.post("/oauth/register", json=CLAUDE_REGISTRATION).get_json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "response_type": "code", "client_id": registration["client_id"], "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
    })
    page = client.get("/oauth/authorize?" + query)
    form = dict(HIDDEN.findall(page.get_data(as_text=True)), decision="approve")
    to_idp = client.post("/oauth/consent", data=form)
    sign_in = client.get(path_of(to_idp.headers["Location"]))
    fields = dict(HIDDEN.findall(sign_in.get_data(as_text=True)), action="sign_in", username="alice")
    to_callback = client.post(urlsplit(to_idp.headers["Location"]).path, data=fields)
    # Paths only: the test client's cookies (the consent's browser binding) are for its own host.
    back = client.get(path_of(to_callback.headers["Location"]))
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    tokens = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI,
        "client_id": registration["client_id"], "client_secret": registration["client_secret"],
    }).get_json()
    return registration, tokens


def refresh_scenario(root: Path, days: int) -> None:
    clock = Clock()
    app = app_for(root / "refresh", clock)
    client = app.test_client()
    registration, tokens = login(client)
    base = file_size(app)
    print(f"\n== one connection refreshed every hour for {days} days (purge every hour) ==")
    print(f"{'day':>4} {'refresh rows':>13} {'access rows':>12} {'file bytes':>12} {'bytes over day 0':>17}")
    print(f"{0:>4} {rows(app, 'refresh_tokens'):>13} {rows(app, 'access_tokens'):>12} {base:>12} {0:>17}")
    for hour in range(1, days * 24 + 1):
        clock.current += HOUR
        reply = client.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": registration["client_id"], "client_secret": registration["client_secret"],
        })
        assert reply.status_code == 200, reply.get_data(as_text=True)
        tokens = reply.get_json()
        purge(app)
        if hour % 24 == 0 and (hour // 24 in (1, 7, days) or hour // 24 % 10 == 0):
            size = file_size(app)
            print(f"{hour // 24:>4} {rows(app, 'refresh_tokens'):>13} {rows(app, 'access_tokens'):>12} {size:>12} {size - base:>17}")


def flood_scenario(root: Path, hours: int, per_minute: int) -> None:
    clock = Clock()
    app = app_for(root / "flood", clock)
    client = app.test_client()
    print(f"\n== {per_minute} registrations a minute (the /register limit) for {hours} h, purge every hour ==")
    print(f"{'hour':>5} {'clients':>8} {'file bytes':>12}")
    started = time.monotonic()
    for minute in range(1, hours * 60 + 1):
        for _ in range(per_minute):
            assert client.post("/oauth/register", json=CLAUDE_REGISTRATION).status_code == 201
        clock.current += 60
        if minute % 60 == 0:
            purge(app)
            if minute // 60 in (1, 6, 12, 23, 24, 25, hours) or minute // 60 % 12 == 0:
                print(f"{minute // 60:>5} {rows(app, 'clients'):>8} {file_size(app):>12}")
    print(f"({hours * 60 * per_minute} registrations in {time.monotonic() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30, help="days of hourly refreshes (default 30)")
    parser.add_argument("--flood-hours", type=int, default=26, help="hours of registrations (default 26)")
    parser.add_argument("--per-minute", type=int, default=30, help="registrations a minute (default 30)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="mob-bench-storage-") as root:
        refresh_scenario(Path(root), args.days)
        flood_scenario(Path(root), args.flood_hours, args.per_minute)


if __name__ == "__main__":
    main()
