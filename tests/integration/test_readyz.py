"""/readyz (issue 11 §4): 200 while storage answers and its schema is current; 503 with a JSON
body saying which otherwise, answered outside the storage-readiness gate."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .certificates import certificate_for, rsa_key, write_credential
from .conftest import environment_for
from .idp_fixtures import CLIENT_ID, ENTRA_TENANT
from .postgres_server import start_postgres


def test_ready_when_storage_answers_and_the_schema_is_current(tmp_path: Path) -> None:
    client = create_app(load_settings(environment_for(tmp_path), dotenv_path=None)).test_client()
    reply = client.get("/readyz")
    assert reply.status_code == 200
    assert reply.get_json()["storage"] == {"reachable": True, "pending_migrations": []}
    assert reply.get_json()["status"] == "ready"


def test_not_ready_while_a_migration_is_pending(tmp_path: Path) -> None:
    app = create_app(load_settings(environment_for(tmp_path), dotenv_path=None))
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    # As if the database were restored from before the newest migration.
    with sqlite3.connect(tmp_path / "mcp-oauth-bridge.db") as db:
        newest = db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        db.execute("DELETE FROM schema_migrations WHERE version = ?", (newest,))
    reply = client.get("/readyz")
    assert reply.status_code == 503
    assert reply.get_json()["storage"] == {"reachable": True, "pending_migrations": [newest]}
    assert reply.get_json()["status"] == "not ready"
    # Liveness is another question.
    assert client.get("/healthz").status_code == 200


def test_not_ready_while_postgresql_is_down(tmp_path: Path) -> None:
    with start_postgres() as server:
        env = environment_for(tmp_path, STORAGE_URL=server.admin_url, STORAGE_CONNECT_TIMEOUT="1")
        app = create_app(load_settings(env, dotenv_path=None))
        try:
            client = app.test_client()
            assert client.get("/readyz").status_code == 200
            server.stop()
            reply = client.get("/readyz")
            assert reply.status_code == 503
            assert reply.get_json()["storage"] == {"reachable": False}
            # Nothing about the database (its URL, its password) leaks into the answer.
            assert "postgres" not in reply.get_data(as_text=True)
            server.start()
            deadline = time.monotonic() + 30
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready again after PostgreSQL came back"
                time.sleep(0.5)
        finally:
            app.extensions["container"].storage_admin().close()


def test_an_expiring_entra_certificate_is_reported(tmp_path: Path) -> None:
    key = rsa_key()
    credential = write_credential(tmp_path / "app.pem", key, certificate_for(key, days=10))
    env = environment_for(
        tmp_path,
        IDP_PROVIDER="azure",
        AZURE_TENANT_ID=ENTRA_TENANT,
        AZURE_CLIENT_ID=CLIENT_ID,
        AZURE_CLIENT_CERTIFICATE_PATH=str(credential),
    )
    reply = create_app(load_settings(env, dotenv_path=None)).test_client().get("/readyz")
    # A warning for the operator, not a reason to take the instance out of service.
    assert reply.status_code == 200
    certificate = reply.get_json()["certificate"]
    assert certificate["days_left"] in (9, 10)
    assert "expires on" in certificate["warning"]


def test_storage_down_from_the_start(tmp_path: Path) -> None:
    """The gate answers 503 and is counted in /metrics; /readyz and /metrics answer themselves."""
    with start_postgres() as server:
        server.stop()
        env = environment_for(tmp_path, STORAGE_URL=server.admin_url, STORAGE_CONNECT_TIMEOUT="1")
        app = create_app(load_settings(env, dotenv_path=None))
        try:
            client = app.test_client()
            assert client.get("/.well-known/oauth-authorization-server").status_code == 503
            reply = client.get("/readyz")
            assert reply.status_code == 503
            assert reply.get_json()["storage"] == {"reachable": False}
            scraped = client.get("/metrics", environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
            assert scraped.status_code == 200
            text = scraped.get_data(as_text=True)
            gated = 'endpoint="metadata.authorization_server",method="GET",status="503"'
            assert any(line.startswith("mcp_oauth_bridge_http_request_duration_seconds_count{") and gated in line for line in text.splitlines())
            # Live grants cannot be read now: left out rather than reported as 0.
            assert "mcp_oauth_bridge_live_grants " not in text
        finally:
            app.extensions["container"].storage_admin().close()
