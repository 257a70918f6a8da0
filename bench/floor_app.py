"""The app of wsgi.py plus one route for `bench_server.py --floor`: POST /bench/floor.

It does only what no introspection can skip, with none of the project's layers: read the form
body from the WSGI input, split it with parse_qsl, read the client's secret hash and the access
token's row with the storage adapter's own SQL on its connection (one primary-key read each),
compute and compare the two keyed hashes, and answer the same JSON an introspection answers,
with its no-store headers. No schema, no service, no dataclass, no dependency injection.

What it costs next to /healthz bounds the introspection ratio in this stack (Flask, a
gunicorn worker, SQLite) on the machine at hand: the project's own endpoint cannot cost less.
Served only by the benchmark (gunicorn ... bench.floor_app:app from the repository root).
"""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import parse_qsl

from flask import Response, request

from mcp_oauth_bridge.adapters.http.errors import json_response
from mcp_oauth_bridge.adapters.storage.records import hash_key
from mcp_oauth_bridge.adapters.storage.sqlite.migrations import access_token_key
from mcp_oauth_bridge.adapters.storage.sqlite.tokens import _SELECT_ACCESS_TOKEN
from mcp_oauth_bridge.entrypoints.app import create_app

app = create_app()
_container = app.extensions["container"]
_database = _container.storage.database()
_hasher = _container.hasher()
_policy = _container.policy()
_SELECT_SECRET = "SELECT secret_hash FROM clients WHERE client_id = ?"


@app.post("/bench/floor")
def floor() -> Response:
    environ = request.environ
    body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
    params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    connection = _database.connection()
    secret = connection.execute(_SELECT_SECRET, (params["client_id"],)).fetchone()
    if secret is None or not hmac.compare_digest(_hasher.hash(params["client_secret"]), secret[0]):
        return json_response({"error": "invalid_client"}, 401, no_store=True)
    key = hash_key(_hasher.hash(params["token"]))
    lookup = (access_token_key(key), key)
    row: Any = connection.execute(_SELECT_ACCESS_TOKEN, lookup).fetchone()
    # The columns of _SELECT_ACCESS_TOKEN: the token's (expiry at 6, revocation at 7), then its
    # grant's (subject at 10, revocation at 15).
    if row is None or row[7] is not None or row[15] is not None or row[6] <= time.time():
        return json_response({"active": False}, no_store=True)
    return json_response(
        {
            "active": True,
            "scope": row[3],
            "client_id": row[2],
            "token_type": "Bearer",
            "exp": row[6],
            "iat": row[5],
            "sub": row[10],
            "aud": row[4],
            "iss": _policy.issuer,
        },
        no_store=True,
    )
