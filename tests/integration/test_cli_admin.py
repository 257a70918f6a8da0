"""The administration CLI (issue 11 §2) on SQLite and PostgreSQL, run in this process against the
database a running app uses: `clients list|show|disable|enable|delete`, `grants list|revoke`,
and their effects over HTTP (a disabled client's token is refused at once; offboarding a person
makes their next /mcp call 401 and their next refresh invalid_grant)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from cryptography.fernet import Fernet

from mcp_oauth_bridge.domain.ports import StorageError
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.cli import main as cli_main
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import Container, build_container
from tests.contract.samples import (
    h,
    make_access_token,
    make_client,
    make_grant,
    make_pending,
    make_upstream,
    make_upstream_tokens,
)

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient
from .postgres_server import postgres_server, postgres_url  # noqa: F401  (fixtures)
from .test_mcp_http import legacy_call


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of the installation (SQLite under DATA_DIR, or a fresh PostgreSQL
    database), set for in-process runs of the CLI."""
    values = environment_for(tmp_path / "data")
    for name in ("STORAGE_URL", "STORAGE_POOL_SIZE", "STORAGE_STATEMENT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "postgresql":
        values["STORAGE_URL"] = request.getfixturevalue("postgres_url")
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[Flask]:
    app = create_app(load_settings(env, dotenv_path=None))
    yield app
    app.extensions["container"].storage_admin().close()


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def run(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        status = cli_main(list(args))
        captured = self._capsys.readouterr()
        return status, captured.out, captured.err

    def json(self, *args: str) -> Any:
        status, out, err = self.run(*args, "--json")
        assert status == 0, err
        return json.loads(out)


@pytest.fixture
def cli(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


class Connection:
    """A person connected through a client: its tokens, and the calls that use them."""

    def __init__(self, app: Flask, client: OAuthClient, username: str) -> None:
        self.app = app
        self.client = client
        code, verifier = client.login(username)
        reply = client.exchange(code, verifier)
        assert reply.status == 200, reply.text
        self.access_token = reply.json()["access_token"]
        self.refresh_token = reply.json()["refresh_token"]

    def mcp_status(self) -> int:
        return legacy_call(self.app.test_client(), "ping", token=self.access_token).status_code

    def refresh(self) -> tuple[int, dict[str, Any]]:
        reply = self.client.refresh(self.refresh_token)
        body = reply.json()
        if reply.status == 200:
            self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]
        return reply.status, body


def registered(app: Flask, name: str) -> OAuthClient:
    client = OAuthClient(FlaskTransport(app.test_client()))
    assert client.register(client_name=name).status == 201
    return client


def test_offboarding_a_person_is_one_command(app: Flask, cli: Cli) -> None:
    claude, other = registered(app, "Claude"), registered(app, "Other")
    alice_claude, alice_other = Connection(app, claude, "alice"), Connection(app, other, "alice")
    bob = Connection(app, claude, "bob")
    assert alice_claude.mcp_status() == alice_other.mcp_status() == bob.mcp_status() == 200

    everyone = cli.json("grants", "list")
    assert sorted((g["subject"], g["client_name"]) for g in everyone) == [
        ("fake:alice", "Claude"), ("fake:alice", "Other"), ("fake:bob", "Claude"),
    ]
    assert all(g["last_used_at"] is not None and g["last_used_at"] >= g["created_at"] for g in everyone)
    alices = cli.json("grants", "list", "--user", "fake:alice")
    assert {g["client_id"] for g in alices} == {claude.client_id, other.client_id}
    assert [g["subject"] for g in cli.json("grants", "list", "--client", other.client_id)] == ["fake:alice"]

    status, out, err = cli.run("grants", "revoke", "--user", "fake:alice")
    assert status == 0, err
    assert "revoked 2 grants" in out and all(g["grant_id"] in out for g in alices)

    # At once: the next /mcp call is refused, and so is the next refresh.
    assert alice_claude.mcp_status() == alice_other.mcp_status() == 401
    for connection in (alice_claude, alice_other):
        status_code, body = connection.refresh()
        assert status_code == 400 and body["error"] == "invalid_grant"
    # Nobody else.
    assert bob.mcp_status() == 200 and bob.refresh()[0] == 200
    assert cli.json("grants", "list", "--user", "fake:alice") == []
    assert cli.run("grants", "list", "--user", "fake:alice")[1] == "no live grants\n"
    assert [g["subject"] for g in cli.json("grants", "list")] == ["fake:bob"]


def test_revoke_one_grant_or_every_grant_of_a_client(app: Flask, cli: Cli) -> None:
    claude, other = registered(app, "Claude"), registered(app, "Other")
    alice, bob, carol = Connection(app, claude, "alice"), Connection(app, claude, "bob"), Connection(app, other, "carol")
    (alices,) = cli.json("grants", "list", "--user", "fake:alice")

    assert cli.json("grants", "revoke", "--grant", alices["grant_id"]) == {"revoked": [alices["grant_id"]]}
    assert alice.mcp_status() == 401 and bob.mcp_status() == 200
    # Revoked before: nothing to do, said so.
    status, out, _ = cli.run("grants", "revoke", "--grant", alices["grant_id"])
    assert status == 0 and "already revoked" in out

    revoked = cli.json("grants", "revoke", "--client", claude.client_id)["revoked"]
    assert len(revoked) == 1
    assert bob.mcp_status() == 401 and bob.refresh()[1]["error"] == "invalid_grant"
    assert carol.mcp_status() == 200


def test_a_disabled_client_is_refused_at_once_and_refreshes_again_once_enabled(
    app: Flask, env: dict[str, str], cli: Cli
) -> None:
    claude, other = registered(app, "Claude"), registered(app, "Other")
    alice, bob = Connection(app, claude, "alice"), Connection(app, other, "bob")
    # Another instance on the same storage (the bearer lookup caches nothing).
    instance = create_app(load_settings(env, dotenv_path=None))
    try:
        assert legacy_call(instance.test_client(), "ping", token=alice.access_token).status_code == 200

        status, out, err = cli.run("clients", "disable", claude.client_id)
        assert status == 0, err
        assert "disabled client" in out

        assert legacy_call(instance.test_client(), "ping", token=alice.access_token).status_code == 401
    finally:
        instance.extensions["container"].storage_admin().close()

    # Its token stops working at once; it can neither refresh nor start an authorization.
    assert alice.mcp_status() == 401
    status_code, body = alice.refresh()
    assert status_code == 401 and body["error"] == "invalid_client"
    assert body["error_description"] == "this client is disabled"
    page = claude.authorize("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert page.status == 400 and "this client is disabled" in page.text
    # Other clients go on.
    assert bob.mcp_status() == 200 and bob.refresh()[0] == 200
    shown = cli.json("clients", "show", claude.client_id)
    assert shown["disabled_at"] is not None and shown["live_grants"] == 1

    # Enabled: the grant survived; the client refreshes and its new token works.
    assert cli.json("clients", "enable", claude.client_id)["disabled_at"] is None
    assert alice.refresh()[0] == 200
    assert alice.mcp_status() == 200


def test_clients_list_show_and_delete(app: Flask, cli: Cli) -> None:
    claude, other = registered(app, "Claude"), registered(app, "Other")
    alice, bob = Connection(app, claude, "alice"), Connection(app, claude, "bob")
    Connection(app, other, "carol")

    listed = {c["client_id"]: c for c in cli.json("clients", "list")}
    assert set(listed) == {claude.client_id, other.client_id}
    entry = listed[claude.client_id]
    assert entry["kind"] == "registered" and entry["name"] == "Claude" and entry["live_grants"] == 2
    assert entry["disabled_at"] is None and entry["last_used_at"] is not None and entry["created_at"] > 0
    assert listed[other.client_id]["live_grants"] == 1
    status, out, _ = cli.run("clients", "list")
    assert status == 0 and "LIVE GRANTS" in out and claude.client_id in out and "Claude" in out

    status, out, _ = cli.run("clients", "show", claude.client_id)
    assert status == 0 and f"client_id:    {claude.client_id}" in out and "live grants:  2" in out

    deleted = cli.json("clients", "delete", claude.client_id)["deleted"]
    assert deleted["client_id"] == claude.client_id and deleted["live_grants"] == 2
    assert alice.mcp_status() == bob.mcp_status() == 401
    assert alice.refresh()[1]["error"] == "invalid_client"
    assert [c["client_id"] for c in cli.json("clients", "list")] == [other.client_id]
    assert [g["subject"] for g in cli.json("grants", "list")] == ["fake:carol"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clients", "show", "mob_client_x"], "no client mob_client_x"),
        (["clients", "disable", "mob_client_x"], "no client mob_client_x"),
        (["clients", "enable", "mob_client_x"], "no client mob_client_x"),
        (["clients", "delete", "mob_client_x"], "no client mob_client_x"),
        (["grants", "list", "--client", "mob_client_x"], "no client mob_client_x"),
        (["grants", "revoke", "--client", "mob_client_x"], "no client mob_client_x"),
        (["grants", "revoke", "--grant", "no-such-grant"], "no grant no-such-grant"),
    ],
)
def test_unknown_ids_exit_1_with_a_message(cli: Cli, args: list[str], message: str) -> None:
    for extra in ([], ["--json"]):
        status, out, err = cli.run(*args, *extra)
        assert (status, out) == (1, "")
        assert err.strip() == f"mcp-oauth-bridge: {message}"


@pytest.mark.parametrize(
    "args",
    [
        ["grants", "revoke"],
        ["grants", "revoke", "--user", "a", "--client", "b"],
        ["clients", "show"],
        ["clients", "frobnicate"],
    ],
)
def test_malformed_commands_exit_2(cli: Cli, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.run(*args)
    assert exited.value.code == 2


def test_revoking_a_person_without_grants_revokes_nothing(cli: Cli) -> None:
    assert cli.json("grants", "revoke", "--user", "fake:nobody") == {"revoked": []}
    status, out, _ = cli.run("grants", "revoke", "--user", "fake:nobody")
    assert status == 0 and "revoked 0 grants" in out


# -- purge, stats, keys rotate-encryption, backup ------------------------------------------------


def storage_of(env: dict[str, str], **changes: str) -> Container:
    """A container on the installation's storage (with ``changes`` to its environment), its
    schema current."""
    container = build_container(load_settings({**env, **changes}, dotenv_path=None))
    container.storage_admin().migrate()
    return container


def test_purge_prints_what_it_deleted_by_kind(env: dict[str, str], cli: Cli) -> None:
    now = int(time.time())
    storage = storage_of(env)
    try:
        # A client in use (an unused registration would be purged, with everything issued to it).
        storage.clients().add(make_client("client-1", issued_at=now, last_used_at=now))
        storage.grants().add_grant(make_grant("grant-1", created_at=now), None)
        storage.access_tokens().add_access_token(make_access_token(h("at-live"), issued_at=now, expires_at=now + 600))
        for n in range(2):
            storage.access_tokens().add_access_token(
                make_access_token(h(f"at-expired-{n}"), issued_at=now - 7200, expires_at=now - 3600)
            )
        storage.authorizations().add_pending(make_pending(created_at=now - 7200, expires_at=now - 3600))
    finally:
        storage.storage_admin().close()

    purged = cli.json("purge")["purged"]
    assert purged["access_tokens"] == 2 and purged["pending_authorizations"] == 1
    assert purged["grants"] == purged["refresh_tokens"] == purged["unused_clients"] == 0
    status, out, _ = cli.run("purge")
    assert status == 0 and "purged 0 rows:" in out and "  access tokens: 0" in out


def test_stats(app: Flask, env: dict[str, str], cli: Cli) -> None:
    claude, other = registered(app, "Claude"), registered(app, "Other")
    Connection(app, claude, "alice"), Connection(app, claude, "bob"), Connection(app, other, "carol")
    assert cli.run("clients", "disable", other.client_id)[0] == 0
    assert cli.json("grants", "revoke", "--user", "fake:bob")["revoked"]

    stats = cli.json("stats")
    assert stats["storage"] == ("postgresql" if "STORAGE_URL" in env else "sqlite")
    assert stats["clients"] == {"registered": 2} and stats["disabled_clients"] == 1
    assert stats["live_grants"] == 2 and stats["grants"] == 3
    assert stats["access_tokens"] == stats["refresh_tokens"] == 3
    assert stats["pending_authorizations"] == 3 and stats["authorization_codes"] == 3
    assert stats["database_size_bytes"] > 10_000
    status, out, _ = cli.run("stats")
    assert status == 0 and "live grants:            2 (of 3 stored)" in out and "2 registered; 1 disabled" in out


def test_keys_rotate_encryption_reencrypts_under_the_first_key(env: dict[str, str], cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    old_key, new_key = env["ENCRYPTION_KEYS"], Fernet.generate_key().decode()
    storage = storage_of(env)
    try:
        storage.clients().add(make_client("client-1"))
        for n in range(5):
            storage.grants().add_grant(make_grant(f"grant-{n}"), make_upstream_tokens(access_token=f"upstream-{n}"))
        storage.grants().add_grant(make_grant("grant-without"), None)
        storage.authorizations().add_pending(make_pending())
        storage.authorizations().attach_upstream("pending-1", make_upstream())
    finally:
        storage.storage_admin().close()

    # The new key first, the old one still there to open what it sealed.
    monkeypatch.setenv("ENCRYPTION_KEYS", f"{new_key},{old_key}")
    assert cli.json("keys", "rotate-encryption") == {"reencrypted": 6}
    # Again (an interrupted run is finished this way): every row once more, all still readable.
    status, out, err = cli.run("keys", "rotate-encryption")
    assert status == 0, err
    assert "re-encrypted 6 rows under the first key of ENCRYPTION_KEYS" in out

    rotated = storage_of(env, ENCRYPTION_KEYS=new_key)
    try:
        assert [rotated.upstream_token_store().get_upstream_tokens(f"grant-{n}").access_token  # type: ignore[union-attr]
                for n in range(5)] == [f"upstream-{n}" for n in range(5)]
        pending = rotated.authorizations().get_pending("pending-1")
        assert pending is not None and pending.upstream == make_upstream()
        # In batches of 2 rows per transaction as well.
        assert rotated.storage_admin().reencrypt(batch_size=2) == 6
    finally:
        rotated.storage_admin().close()
    stale = storage_of(env, ENCRYPTION_KEYS=old_key)
    try:
        # Nothing is left that only the old key opens.
        with pytest.raises(StorageError):
            stale.upstream_token_store().get_upstream_tokens("grant-0")
    finally:
        stale.storage_admin().close()


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = environment_for(tmp_path / "data")
    monkeypatch.delenv("STORAGE_URL", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return values


def test_backup_is_a_consistent_copy_taken_while_another_connection_writes(
    sqlite_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys)
    storage = storage_of(sqlite_env)
    storage.clients().add(make_client("client-1"))
    for n in range(2000):
        storage.grants().add_grant(make_grant(f"grant-{n:05d}"), make_upstream_tokens(access_token=f"upstream-{n}"))
    stop, written = threading.Event(), []

    def write() -> None:
        # Each grant and its sealed upstream tokens are written in one transaction (add_grant).
        writer = storage_of(sqlite_env)
        try:
            while not stop.is_set():
                n = len(written)
                writer.grants().add_grant(make_grant(f"late-{n:05d}"), make_upstream_tokens())
                written.append(n)
        finally:
            writer.storage_admin().close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        result = cli.json("backup", str(tmp_path / "copy.db"))
        after_backup = len(written)
    finally:
        stop.set()
        thread.join(timeout=30)
        storage.storage_admin().close()
    assert after_backup > 20 and result["size_bytes"] > 0

    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        grants = copy.execute("SELECT count(*) FROM grants").fetchone()[0]
        upstream = copy.execute("SELECT count(*) FROM grant_upstream_tokens").fetchone()[0]
        # Every transaction whole: each grant with its upstream tokens; what was there before, and
        # some of what was written meanwhile.
        assert grants == upstream and 2000 + 20 <= grants
    finally:
        copy.close()
    # The copy is a working database: restored, the server reads it with the same keys.
    restored = storage_of(sqlite_env, STORAGE_URL=f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        tokens = restored.upstream_token_store().get_upstream_tokens("grant-01999")
        assert tokens is not None and tokens.access_token == "upstream-1999"
    finally:
        restored.storage_admin().close()


def test_backup_refuses_to_overwrite_unless_forced(sqlite_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(capsys)
    assert cli.run("stats")[0] == 0  # creates the database
    target = tmp_path / "backup.db"
    target.write_text("precious")
    status, out, err = cli.run("backup", str(target))
    assert (status, out) == (1, "") and "exists" in err and "--force" in err
    assert target.read_text() == "precious"
    status, out, err = cli.run("backup", str(target), "--force")
    assert status == 0, err
    assert "backed up" in out
    assert sqlite3.connect(target).execute("SELECT count(*) FROM clients").fetchone() == (0,)
    status, _, err = cli.run("backup", str(tmp_path / "no-such-dir" / "b.db"))
    assert status == 1 and "no directory" in err


def test_backup_on_postgresql_points_to_pg_dump(env: dict[str, str], cli: Cli, tmp_path: Path) -> None:
    if "STORAGE_URL" not in env:
        return  # the SQLite backup has its own tests above
    status, out, err = cli.run("backup", str(tmp_path / "b.db"))
    assert (status, out) == (1, "") and "pg_dump" in err
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["clients", "--help"], ["list", "show", "disable", "enable", "delete"]),
        (["clients", "disable", "--help"], ["access tokens stop working", "--json"]),
        (["grants", "list", "--help"], ["--user SUBJECT", "--client ID", "ACCESS_TOKEN_TTL"]),
        (["grants", "revoke", "--help"], ["--grant ID", "--user SUBJECT", "--client ID", "offboarding"]),
        (["keys", "rotate-encryption", "--help"], ["first key of ENCRYPTION_KEYS", "interrupt"]),
        (["keys", "status", "--help"], ["TOKEN_HASH_KEYS", "retired", "--json"]),
        (["keys", "--help"], ["rotate-encryption", "`keys status` says what still depends on each key of TOKEN_HASH_KEYS"]),
        (["keys", "status", "--help"], ["Rotating the token hash key", "until it says an old key can be removed"]),
        (["stats", "--help"], ["database size", "--json"]),
        (["purge", "--help"], ["--json"]),
        (["backup", "--help"], ["--force", "Restore", "pg_dump"]),
    ],
)
def test_every_command_explains_itself(capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(args)
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text
