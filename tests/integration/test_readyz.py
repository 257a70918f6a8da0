"""/readyz (issue 11 §4): 200 while storage answers and its schema is current; 503 with a JSON
body saying which otherwise, answered outside the storage-readiness gate."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
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
