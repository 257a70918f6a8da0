"""The protected /mcp endpoint through Flask's test client: both protocol generations, the
malformed-request ladder, bearer protection, the Origin check and CORS."""

from __future__ import annotations

import base64
import io
import json
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
from dependency_injector import providers
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from mcp_oauth_bridge.domain.model import AccessToken
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import INSTRUCTIONS, server_info
from tests.fakes import FixedClock

from .conftest import PUBLIC_URL, environment_for
from .mcp_wire import conforms, legacy_types, modern_types
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair

MODERN = "2026-07-28"
LEGACY = ("2025-11-25", "2025-06-18", "2025-03-26")
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
NAME_KEYS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
SERVER = {"name": server_info().name, "version": server_info().version}
SERVER_META = {"io.modelcontextprotocol/serverInfo": SERVER}
WHOAMI = {
    "name": "whoami",
    "title": "Who am I",
    "description": "Returns the signed-in user's subject, username, display name and email.",
    "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
    "annotations": {"readOnlyHint": True, "title": "Who am I"},
}

RESOURCE_METADATA = f'resource_metadata="{PUBLIC_URL}/.well-known/oauth-protected-resource/mcp"'
BARE_CHALLENGE = f'Bearer {RESOURCE_METADATA}, scope="User.Read"'
INSPECTOR = "http://localhost:6274"
MAX_BODY = 1024 * 1024


def invalid_token_challenge(description: str) -> str:
    return f'Bearer error="invalid_token", error_description="{description}", {RESOURCE_METADATA}, scope="User.Read"'


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(tokens: dict[str, Any]) -> str:
    value: str = tokens["access_token"]
    return value


@pytest.fixture
def build_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Apps with extra settings, each on its own data directory."""
    built: list[Flask] = []

    def build(**overrides: str) -> Flask:
        data_dir = tmp_path / f"app{len(built)}"
        app = create_app(load_settings(environment_for(data_dir, **overrides), dotenv_path=None))
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["container"].storage_admin().close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, str]]:
    """One app and token for the many read-only malformed-request cases."""
    app = create_app(load_settings(environment_for(tmp_path_factory.mktemp("shared")), dotenv_path=None))
    _, issued = sign_in(app)
    yield app.test_client(), issued["access_token"]
    app.extensions["container"].storage_admin().close()


def sign_in(app: Flask, username: str = "alice", *, scope: str | None = None, **details: str) -> tuple[OAuthClient, dict[str, Any]]:
    """Register a client and run the whole flow with the fake IdP; return the client and its tokens."""
    oauth = OAuthClient(FlaskTransport(app.test_client()))
    assert oauth.register().status == 201
    verifier, challenge = pkce_pair()
    page = oauth.authorize(challenge, **({"scope": scope} if scope else {}))
    assert page.status == 200, page.text
    to_idp = oauth.consent(page)
    assert to_idp.status == 303, to_idp.text
    to_callback = oauth.fake_sign_in(to_idp, username, **details)
    assert to_callback.status == 303, to_callback.text
    back = oauth.http.get(to_callback.location)
    reply = oauth.exchange(back.query()["code"], verifier)
    assert reply.status == 200, reply.text
    return oauth, reply.json()


def post(client: FlaskClient, body: Any, token: str | None = None, headers: Any = ()) -> TestResponse:
    """POST a body (bytes as they are, anything else as JSON) to /mcp like an MCP client."""
    all_headers = [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")]
    if token is not None:
        all_headers.append(("Authorization", f"Bearer {token}"))
    all_headers.extend(headers.items() if isinstance(headers, Mapping) else headers)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/mcp", data=data, headers=all_headers)


def modern_call(
    client: FlaskClient,
    method: str,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    *,
    id: Any = 1,
    meta: Any = META,
    headers: Mapping[str, str | None] | None = None,
) -> TestResponse:
    """A 2026-07-28 request: _meta in params, mirrored headers; ``headers`` replaces (None drops)."""
    body_params = dict(params or {})
    if meta is not None:
        body_params["_meta"] = meta
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": body_params}
    if id is not None:
        message["id"] = id
    routing: dict[str, str | None] = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if method in NAME_KEYS:
        routing["Mcp-Name"] = str(body_params.get(NAME_KEYS[method]))
    routing.update(headers or {})
    return post(client, message, token, {name: value for name, value in routing.items() if value is not None})


def legacy_call(
    client: FlaskClient,
    method: str,
    params: Mapping[str, Any] | None = None,
    token: str | None = None,
    *,
    id: Any = 1,
    version: str | None = "2025-11-25",
) -> TestResponse:
    """An initialize-era request: MCP-Protocol-Version only (none at all when version is None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return post(client, message, token, {"MCP-Protocol-Version": version} if version else {})


def rpc_result(response: TestResponse, request_id: Any = 1) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"jsonrpc", "id", "result"} and body["jsonrpc"] == "2.0" and body["id"] == request_id, body
    result: dict[str, Any] = body["result"]
    return result


def rpc_error(response: TestResponse, status: int, code: int, request_id: Any = 1) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"jsonrpc", "id", "error"} and body["jsonrpc"] == "2.0", body
    assert body["id"] == request_id and body["error"]["code"] == code, body
    conforms(modern_types.JSONRPCErrorResponse, body)
    error: dict[str, Any] = body["error"]
    return error


def assert_accepted(response: TestResponse) -> None:
    assert response.status_code == 202
    assert response.get_data() == b""


def encoded(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


# -- 2026-07-28 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
@pytest.mark.parametrize("authorized", [True, False])
def test_only_post(client: FlaskClient, token: str, method: str, authorized: bool) -> None:
    headers = {"Authorization": f"Bearer {token}"} if authorized else {}
    response = client.open("/mcp", method=method, headers=headers)
    assert response.headers["Allow"] == "POST"
    error = rpc_error(response, 405, -32600, None)
    assert error["message"] == "Method Not Allowed: the MCP endpoint accepts POST only"


def test_discover(client: FlaskClient, token: str) -> None:
    result = rpc_result(modern_call(client, "server/discover", token=token))
    assert result == {
        "supportedVersions": [MODERN],
        "capabilities": {"tools": {"listChanged": False}},
        "cacheScope": "public",
        "ttlMs": 0,
        "instructions": INSTRUCTIONS,
        "resultType": "complete",
        "_meta": SERVER_META,
    }
    conforms(modern_types.DiscoverResult, result)


def test_modern_list_tools(client: FlaskClient, token: str) -> None:
    result = rpc_result(modern_call(client, "tools/list", token=token, id="list-1"), "list-1")
    assert result == {"tools": [WHOAMI], "cacheScope": "public", "ttlMs": 0, "resultType": "complete", "_meta": SERVER_META}
    conforms(modern_types.ListToolsResult, result)


def test_modern_call_whoami(client: FlaskClient, token: str) -> None:
    result = rpc_result(modern_call(client, "tools/call", {"name": "whoami", "arguments": {}}, token, id=42), 42)
    assert result == {
        "content": [{"type": "text", "text": "subject: fake:alice\nusername: alice"}],
        "isError": False,
        "structuredContent": {"subject": "fake:alice", "username": "alice"},
        "resultType": "complete",
        "_meta": SERVER_META,
    }
    conforms(modern_types.CallToolResult, result)


def test_modern_call_with_bad_arguments_is_a_tool_error(client: FlaskClient, token: str) -> None:
    result = rpc_result(modern_call(client, "tools/call", {"name": "whoami", "arguments": {"verbose": True}}, token))
    assert result["content"] == [{"type": "text", "text": "Invalid arguments for whoami: unknown argument 'verbose'"}]
    assert result["isError"] is True
    conforms(modern_types.CallToolResult, result)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"name": "nope"}, "Unknown tool: nope"),
        ({"name": "whoami", "arguments": []}, 'Invalid params: "arguments" must be an object'),
    ],
)
def test_modern_call_errors(client: FlaskClient, token: str, params: dict[str, Any], message: str) -> None:
    error = rpc_error(modern_call(client, "tools/call", params, token), 400, -32602)
    assert error == {"code": -32602, "message": message}


@pytest.mark.parametrize(
    "method, missing",
    [
        ("tools/list", "MCP-Protocol-Version"),
        ("tools/list", "Mcp-Method"),
        ("server/discover", "Mcp-Method"),
        ("tools/call", "MCP-Protocol-Version"),
        ("tools/call", "Mcp-Method"),
        ("tools/call", "Mcp-Name"),
    ],
)
def test_missing_routing_header(client: FlaskClient, token: str, method: str, missing: str) -> None:
    response = modern_call(client, method, {"name": "whoami"} if method == "tools/call" else {}, token, id="r-7", headers={missing: None})
    error = rpc_error(response, 400, -32020, "r-7")
    assert error["message"] == f"Header mismatch: {missing} header is missing"
    conforms(modern_types.HeaderMismatchError, response.get_json())


@pytest.mark.parametrize(
    "overrides",
    [
        {"MCP-Protocol-Version": "2025-11-25"},
        {"Mcp-Method": "tools/list"},
        {"Mcp-Method": "Tools/Call"},
        {"Mcp-Name": "WHOAMI"},
        {"Mcp-Name": "other"},
        {"Mcp-Name": encoded("other")},
        {"Mcp-Name": "=?base64?d2hvYW1p"},
        {"Mcp-Name": "=?base64?!!!?="},
        {"Mcp-Name": "=?base64?d2hvYW1?="},
        {"Mcp-Name": "=?BASE64?d2hvYW1p?="},
    ],
)
def test_header_mismatch(client: FlaskClient, token: str, overrides: dict[str, str]) -> None:
    response = modern_call(client, "tools/call", {"name": "whoami"}, token, id=8, headers=overrides)
    error = rpc_error(response, 400, -32020, 8)
    assert error["message"].startswith("Header mismatch: ")
    conforms(modern_types.HeaderMismatchError, response.get_json())


def test_base64_mcp_name_matching_the_body_is_accepted(client: FlaskClient, token: str) -> None:
    response = modern_call(client, "tools/call", {"name": "whoami"}, token, headers={"Mcp-Name": "=?base64?d2hvYW1p?="})
    assert rpc_result(response)["structuredContent"] == {"subject": "fake:alice", "username": "alice"}


@pytest.mark.parametrize("repeated", ["MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"])
def test_repeated_routing_header(client: FlaskClient, token: str, repeated: str) -> None:
    # WSGI servers join repeated headers with ", ": the joined value no longer matches the body.
    message = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "whoami", "_meta": META}}
    headers = [("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "whoami")]
    headers += [(name, value) for name, value in headers if name == repeated]
    error = rpc_error(post(client, message, token, headers), 400, -32020, 5)
    assert error["message"].startswith("Header mismatch: ")


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {},
        [],
        {"io.modelcontextprotocol/clientCapabilities": {}},
        {"io.modelcontextprotocol/protocolVersion": MODERN},
    ],
)
def test_missing_meta_keys(client: FlaskClient, token: str, meta: Any) -> None:
    error = rpc_error(modern_call(client, "tools/list", token=token, id=3, meta=meta), 400, -32602, 3)
    assert error["message"] == (
        "params._meta must carry 'io.modelcontextprotocol/protocolVersion' and 'io.modelcontextprotocol/clientCapabilities'"
    )


@pytest.mark.parametrize("method", ["tools/list", "server/discover", "tools/call"])
def test_unsupported_version(client: FlaskClient, token: str, method: str) -> None:
    meta = {**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    params = {"name": "whoami"} if method == "tools/call" else {}
    response = modern_call(client, method, params, token, id=11, meta=meta, headers={"MCP-Protocol-Version": "2099-01-01"})
    error = rpc_error(response, 400, -32022, 11)
    assert error == {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": [MODERN, *LEGACY], "requested": "2099-01-01"},
    }
    conforms(modern_types.UnsupportedProtocolVersionError, response.get_json())


@pytest.mark.parametrize("method", ["resources/list", "prompts/get", "tasks/list", "ping"])
def test_unknown_or_legacy_only_method(client: FlaskClient, token: str, method: str) -> None:
    params = {"name": "x"} if method == "prompts/get" else {}
    error = rpc_error(modern_call(client, method, params, token, id="u"), 404, -32601, "u")
    assert error == {"code": -32601, "message": f"Method not found: {method}"}


def test_initialize_under_modern_headers_gets_the_legacy_answer(client: FlaskClient, token: str) -> None:
    # Dual-era: an initialize request selects legacy semantics whatever else it carries.
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}
    result = rpc_result(modern_call(client, "initialize", params, token, id=0), 0)
    assert result["protocolVersion"] == "2025-11-25"
    conforms(legacy_types.InitializeResult, result)


@pytest.mark.parametrize("method", ["notifications/cancelled", "notifications/initialized", "notifications/whatever"])
def test_modern_notification_is_accepted(client: FlaskClient, token: str, method: str) -> None:
    assert_accepted(modern_call(client, method, {"requestId": 1}, token, id=None))


# -- 2025-11-25, 2025-06-18, 2025-03-26 ----------------------------------------------------------------


@pytest.mark.parametrize("version", LEGACY)
def test_legacy_session(client: FlaskClient, token: str, version: str) -> None:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "old-client", "version": "1"}}
    response = legacy_call(client, "initialize", params, token, id=0, version=None)
    result = rpc_result(response, 0)
    assert result == {
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": SERVER,
        "instructions": INSTRUCTIONS,
    }
    conforms(legacy_types.InitializeResult, result)
    # Stateless: no session is minted.
    assert "Mcp-Session-Id" not in response.headers

    assert_accepted(legacy_call(client, "notifications/initialized", None, token, id=None, version=version))

    listed = rpc_result(legacy_call(client, "tools/list", {}, token, id=1, version=version))
    assert listed == {"tools": [WHOAMI]}
    conforms(legacy_types.ListToolsResult, listed)

    called = rpc_result(legacy_call(client, "tools/call", {"name": "whoami"}, token, id=2, version=version), 2)
    assert called == {
        "content": [{"type": "text", "text": "subject: fake:alice\nusername: alice"}],
        "isError": False,
        "structuredContent": {"subject": "fake:alice", "username": "alice"},
    }
    conforms(legacy_types.CallToolResult, called)

    pong = rpc_result(legacy_call(client, "ping", None, token, id="p", version=version), "p")
    assert pong == {}
    conforms(legacy_types.EmptyResult, pong)


@pytest.mark.parametrize("requested", ["2024-11-05", "2099-01-01", MODERN])
def test_initialize_with_an_unknown_version_offers_the_latest_legacy_one(client: FlaskClient, token: str, requested: str) -> None:
    params = {"protocolVersion": requested, "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}
    result = rpc_result(legacy_call(client, "initialize", params, token, id=0, version=None), 0)
    assert result["protocolVersion"] == "2025-11-25"
    conforms(legacy_types.InitializeResult, result)


@pytest.mark.parametrize("method", ["tools/list", "ping", "tools/call"])
def test_legacy_unsupported_version_header(client: FlaskClient, token: str, method: str) -> None:
    response = legacy_call(client, method, {"name": "whoami"}, token, id=6, version="2099-01-01")
    error = rpc_error(response, 400, -32022, 6)
    assert error["data"] == {"supported": [MODERN, *LEGACY], "requested": "2099-01-01"}


def test_no_version_header_is_2025_03_26(client: FlaskClient, token: str) -> None:
    listed = rpc_result(legacy_call(client, "tools/list", None, token, version=None))
    assert listed == {"tools": [WHOAMI]}
    called = rpc_result(legacy_call(client, "tools/call", {"name": "whoami"}, token, version=None))
    assert called["structuredContent"] == {"subject": "fake:alice", "username": "alice"}


@pytest.mark.parametrize(
    "method, params, code, message",
    [
        ("server/discover", {}, -32601, "Method not found: server/discover"),
        ("resources/list", {}, -32601, "Method not found: resources/list"),
        ("tools/call", {"name": "nope"}, -32602, "Unknown tool: nope"),
    ],
)
def test_legacy_errors_travel_with_200(client: FlaskClient, token: str, method: str, params: dict[str, Any], code: int, message: str) -> None:
    error = rpc_error(legacy_call(client, method, params, token), 200, code)
    assert error["message"] == message


# -- malformed requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", -32700),
        (b"", -32700),
        (b"[" * 50_000, -32700),
        (b"[]", -32600),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]', -32600),
        (b'"tools/list"', -32600),
        (b'{"id": 1, "method": "tools/list"}', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "x"}}', -32600),
        (b'{"jsonrpc": "2.0", "id": null, "method": "tools/list"}', -32600),
        (b'{"jsonrpc": "2.0", "id": false, "method": "tools/list"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}', -32600),
    ],
)
def test_malformed_bodies_are_400_with_a_null_id(shared: tuple[FlaskClient, str], body: bytes, code: int) -> None:
    client, token = shared
    rpc_error(post(client, body, token), 400, code, None)


def deeply_nested_arguments() -> dict[str, Any]:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {"a": '
    return {"raw": body + b"[" * 20_000 + b"]" * 20_000 + b"}}}"}


FUZZ_BODIES: list[Any] = [
    b"",
    b" ",
    b"{",
    b"}",
    b"nul",
    b"\xff\xfe\x00",
    b"\x00",
    b"[" * 50_000,
    b'{"a":' * 50_000,
    deeply_nested_arguments()["raw"],
    b"[]",
    b"[1, 2]",
    b"null",
    b"true",
    b"1",
    b'"x"',
    b"{}",
    b'{"jsonrpc": "2.0", "id": NaN, "method": "tools/list"}',
    b'{"jsonrpc": "2.0", "id": 1e400, "method": "tools/list"}',
    b'{"jsonrpc": "2.0", "id": 1, "id": 2}',
    {"jsonrpc": "2.0"},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "method": None},
    {"jsonrpc": "2.0", "id": 1, "method": ["tools/call"]},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/call"},
    {"jsonrpc": "2.0", "id": [], "method": "tools/call"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": None},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "whoami"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": None}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": ["whoami"]}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": {"a": 1}}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": [1]}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": "x"}},
    {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": []}},
    {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": "2026-07-28"}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "_meta": {"io.modelcontextprotocol/protocolVersion": None}}},
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "_meta": {**META, "io.modelcontextprotocol/protocolVersion": ["2026-07-28"]}},
    },
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "whoami", "_meta": {**META, "io.modelcontextprotocol/protocolVersion": {"v": 1}}},
    },
    {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": 20260728}}},
    {"jsonrpc": "2.0", "id": 1, "method": "nope", "params": {}},
    {"jsonrpc": "2.0", "id": "x" * 10_000, "method": "nope"},
]
FUZZ_HEADERS = {
    "none": {},
    "modern": {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "whoami"},
    "odd": {"MCP-Protocol-Version": "=?base64?!?=", "Mcp-Method": "", "Mcp-Name": "=?base64?/w==?="},
}


@pytest.mark.parametrize("headers", FUZZ_HEADERS.values(), ids=FUZZ_HEADERS.keys())
@pytest.mark.parametrize("body", FUZZ_BODIES, ids=range(len(FUZZ_BODIES)))
def test_malformed_requests_never_fail_the_server(shared: tuple[FlaskClient, str], body: Any, headers: dict[str, str]) -> None:
    client, token = shared
    response = post(client, body, token, headers)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    message = response.get_json()
    assert message["jsonrpc"] == "2.0" and "id" in message and set(message) == {"jsonrpc", "id", "error"}, message
    assert isinstance(message["error"]["code"], int) and isinstance(message["error"]["message"], str)
    conforms(modern_types.JSONRPCErrorResponse, message)


def padded(size: int) -> bytes:
    message = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    return message + b" " * (size - len(message))


def test_body_of_exactly_one_mebibyte_is_accepted(client: FlaskClient, token: str) -> None:
    assert rpc_result(post(client, padded(MAX_BODY), token)) == {"tools": [WHOAMI]}


def test_oversized_body_is_413(client: FlaskClient, token: str) -> None:
    error = rpc_error(post(client, padded(MAX_BODY + 1), token), 413, -32600, None)
    assert error["message"] == "Invalid Request: body larger than 1048576 bytes"


def post_chunked(client: FlaskClient, data: bytes, token: str) -> TestResponse:
    """No Content-Length, as a server that de-chunks the body (gunicorn) presents it."""
    return client.post(
        "/mcp",
        input_stream=io.BytesIO(data),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("size", [51, MAX_BODY])
def test_chunked_body_within_the_limit_is_accepted(client: FlaskClient, token: str, size: int) -> None:
    assert rpc_result(post_chunked(client, padded(size), token)) == {"tools": [WHOAMI]}


@pytest.mark.parametrize("size", [MAX_BODY + 1, 3 * MAX_BODY])
def test_oversized_chunked_body_is_413_not_truncated(client: FlaskClient, token: str, size: int) -> None:
    # The first mebibyte alone is a valid request: it must not be answered.
    error = rpc_error(post_chunked(client, padded(size), token), 413, -32600, None)
    assert error["message"] == "Invalid Request: body larger than 1048576 bytes"


def test_oversized_body_without_a_token_is_refused_before_it_is_read(client: FlaskClient) -> None:
    response = post(client, padded(MAX_BODY + 1))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == BARE_CHALLENGE


# -- bearer protection ----------------------------------------------------------------------------


def assert_unauthorized(response: TestResponse, challenge: str, description: str) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"error": "invalid_token", "error_description": description}


@pytest.mark.parametrize("call", [modern_call, legacy_call])
def test_no_token(client: FlaskClient, call: Callable[..., TestResponse]) -> None:
    assert_unauthorized(call(client, "tools/list"), BARE_CHALLENGE, "no access token")


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer   ", "Basic " + base64.b64encode(b"client:secret").decode(), "Token mob_at_x", "mob_at_x"],
)
def test_authorization_that_is_not_a_bearer_token(client: FlaskClient, token: str, authorization: str) -> None:
    response = post(client, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Authorization": authorization})
    assert_unauthorized(response, BARE_CHALLENGE, "no access token")


def test_token_in_query_string_or_form_body_is_ignored(client: FlaskClient, token: str) -> None:
    response = client.post(f"/mcp?access_token={token}", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert_unauthorized(response, BARE_CHALLENGE, "no access token")
    response = client.post("/mcp", data={"access_token": token})
    assert_unauthorized(response, BARE_CHALLENGE, "no access token")


@pytest.mark.parametrize(
    "value, description",
    [
        ("mob_at_" + "x" * 43, "unknown access token"),
        ("not-one-of-ours", "not an access token issued by this server"),
        ("mob_rt_" + "x" * 43, "not an access token issued by this server"),
    ],
)
def test_unknown_token(client: FlaskClient, tokens: dict[str, Any], value: str, description: str) -> None:
    assert_unauthorized(modern_call(client, "tools/list", token=value), invalid_token_challenge(description), description)


def test_refresh_token_is_not_an_access_token(client: FlaskClient, tokens: dict[str, Any]) -> None:
    description = "not an access token issued by this server"
    response = modern_call(client, "tools/list", token=tokens["refresh_token"])
    assert_unauthorized(response, invalid_token_challenge(description), description)


def test_bearer_scheme_is_case_insensitive(client: FlaskClient, token: str) -> None:
    response = post(client, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Authorization": f"bearer {token}"})
    assert rpc_result(response) == {"tools": [WHOAMI]}


@pytest.fixture
def clock(app: Flask) -> FixedClock:
    """The app's clock, fixed at the real time and moved by the test (set before any token exists)."""
    import time

    fixed = FixedClock(int(time.time()))
    app.extensions["container"].clock.override(providers.Object(fixed))
    return fixed


def test_expired_token(app: Flask, clock: FixedClock) -> None:
    _, issued = sign_in(app)
    client = app.test_client()
    clock.advance(issued["expires_in"])
    assert rpc_result(modern_call(client, "tools/list", token=issued["access_token"]))["tools"] == [WHOAMI]
    clock.advance(1)
    description = "the access token expired"
    assert_unauthorized(modern_call(client, "tools/list", token=issued["access_token"]), invalid_token_challenge(description), description)


def test_revoked_token(client: FlaskClient, oauth: OAuthClient, token: str) -> None:
    assert rpc_result(modern_call(client, "tools/list", token=token))["tools"] == [WHOAMI]
    assert oauth.revoke(token).status == 200
    description = "the access token was revoked"
    assert_unauthorized(modern_call(client, "tools/list", token=token), invalid_token_challenge(description), description)


def test_tokens_die_with_their_grant(client: FlaskClient, oauth: OAuthClient, tokens: dict[str, Any]) -> None:
    assert oauth.revoke(tokens["refresh_token"]).status == 200
    description = "the access token was revoked"
    response = modern_call(client, "tools/list", token=tokens["access_token"])
    assert_unauthorized(response, invalid_token_challenge(description), description)


def plant_access_token(app: Flask, resource: str) -> str:
    """Store an access token for the existing grant, as the token service would, for ``resource``."""
    container = app.extensions["container"]
    (grant,) = container.grants().list_grants()
    value = "mob_at_" + secrets.token_urlsafe(32)
    now = container.clock().now()
    container.access_tokens().add_access_token(
        AccessToken(
            token_hash=container.hasher().hash(value),
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            scopes=grant.scopes,
            resource=resource,
            issued_at=now,
            expires_at=now + 3600,
        )
    )
    return value


def test_token_for_another_resource(app: Flask, client: FlaskClient, tokens: dict[str, Any]) -> None:
    # The planting itself works: the same token for this resource is accepted...
    mine = plant_access_token(app, PUBLIC_URL + "/mcp")
    assert rpc_result(modern_call(client, "tools/list", token=mine))["tools"] == [WHOAMI]
    # ...and for any other resource it is not (RFC 8707 audience).
    description = "the access token was not issued for this resource"
    for resource in ("https://other.example/mcp", PUBLIC_URL + "/mcp/", PUBLIC_URL, "http://localhost:8000/mcp"):
        other = plant_access_token(app, resource)
        assert_unauthorized(modern_call(client, "tools/list", token=other), invalid_token_challenge(description), description)


def test_tool_without_its_scope_is_403(build_app: Callable[..., Flask]) -> None:
    app = build_app(SCOPES="Notes.Read")
    _, issued = sign_in(app, scope="Notes.Read")
    assert issued["scope"] == "Notes.Read"
    client = app.test_client()
    # Listing needs no scope...
    assert rpc_result(modern_call(client, "tools/list", token=issued["access_token"]))["tools"] == [WHOAMI]
    # ...calling whoami needs User.Read, in both generations.
    for response in (
        modern_call(client, "tools/call", {"name": "whoami"}, issued["access_token"]),
        legacy_call(client, "tools/call", {"name": "whoami"}, issued["access_token"]),
    ):
        assert response.status_code == 403
        assert response.headers["WWW-Authenticate"] == (
            'Bearer error="insufficient_scope", error_description="the tool \'whoami\' requires scope: User.Read", '
            f'{RESOURCE_METADATA}, scope="User.Read Notes.Read"'
        )
        assert response.get_json() == {"error": "insufficient_scope", "error_description": "the tool 'whoami' requires scope: User.Read"}


# -- Origin -----------------------------------------------------------------------------------------


def forbidden_origin(response: TestResponse, origin: str) -> None:
    error = rpc_error(response, 403, -32600, None)
    assert error["message"] == f"Forbidden: origin {origin!r} is not allowed"
    assert "WWW-Authenticate" not in response.headers


def test_requests_without_origin_or_from_the_servers_origin_are_served(client: FlaskClient, token: str) -> None:
    assert rpc_result(modern_call(client, "tools/list", token=token))["tools"] == [WHOAMI]
    response = modern_call(client, "tools/list", token=token, headers={"Origin": PUBLIC_URL})
    assert rpc_result(response)["tools"] == [WHOAMI]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost:8000", "https://127.0.0.1:8000", "http://127.0.0.1:8001", INSPECTOR]
)
def test_other_origins_are_forbidden(client: FlaskClient, token: str, origin: str) -> None:
    forbidden_origin(modern_call(client, "tools/list", token=token, headers={"Origin": origin}), origin)


def test_origin_is_checked_before_the_token(client: FlaskClient) -> None:
    forbidden_origin(modern_call(client, "tools/list", headers={"Origin": "http://evil.example"}), "http://evil.example")


def test_configured_origins_are_allowed(build_app: Callable[..., Flask]) -> None:
    app = build_app(MCP_ALLOWED_ORIGINS=f"{INSPECTOR}, https://console.example/")
    _, issued = sign_in(app)
    client = app.test_client()
    for origin in (INSPECTOR, "https://console.example", PUBLIC_URL):
        assert rpc_result(modern_call(client, "tools/list", token=issued["access_token"], headers={"Origin": origin}))["tools"] == [WHOAMI]
    forbidden_origin(modern_call(client, "tools/list", token=issued["access_token"], headers={"Origin": "http://evil.example"}), "http://evil.example")


def test_wildcard_allows_every_origin(build_app: Callable[..., Flask]) -> None:
    app = build_app(MCP_ALLOWED_ORIGINS="*")
    _, issued = sign_in(app)
    response = modern_call(app.test_client(), "tools/list", token=issued["access_token"], headers={"Origin": "http://anything.example"})
    assert rpc_result(response)["tools"] == [WHOAMI]


# -- CORS -------------------------------------------------------------------------------------------


def preflight(client: FlaskClient, path: str, origin: str = INSPECTOR, method: str = "POST", headers: str = "content-type") -> TestResponse:
    return client.options(
        path, headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
    )


@pytest.mark.parametrize(
    "path, method",
    [
        ("/.well-known/oauth-protected-resource/mcp", "GET"),
        ("/.well-known/oauth-protected-resource", "GET"),
        ("/.well-known/oauth-authorization-server", "GET"),
        ("/.well-known/openid-configuration", "GET"),
        ("/oauth/register", "POST"),
        ("/register", "POST"),
        ("/oauth/token", "POST"),
        ("/token", "POST"),
        ("/oauth/revoke", "POST"),
        ("/revoke", "POST"),
    ],
)
@pytest.mark.parametrize("origin", [INSPECTOR, "https://any.example"])
def test_public_endpoints_allow_any_origin(client: FlaskClient, path: str, method: str, origin: str) -> None:
    response = preflight(client, path, origin, method, "content-type, authorization")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert method in response.headers["Access-Control-Allow-Methods"]
    assert {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")} >= {"content-type", "authorization"}


def test_discovery_response_carries_cors_headers(client: FlaskClient) -> None:
    response = client.get("/.well-known/oauth-protected-resource/mcp", headers={"Origin": "https://any.example"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://any.example"


def test_mcp_has_no_cors_by_default(client: FlaskClient, token: str) -> None:
    response = preflight(client, "/mcp", headers="authorization, content-type, mcp-method")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Headers" not in response.headers
    response = modern_call(client, "tools/list", headers={"Origin": PUBLIC_URL})
    assert response.status_code == 401
    assert "Access-Control-Allow-Origin" not in response.headers


def test_mcp_cors_for_configured_origins(build_app: Callable[..., Flask]) -> None:
    client = build_app(MCP_ALLOWED_ORIGINS=INSPECTOR).test_client()
    requested = "authorization, content-type, mcp-method, mcp-name, mcp-protocol-version"
    response = preflight(client, "/mcp", headers=requested)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == INSPECTOR
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= set(requested.split(", "))
    # Other origins get nothing to work with.
    other = preflight(client, "/mcp", origin="http://evil.example")
    assert "Access-Control-Allow-Origin" not in other.headers

    # A script on the allowed origin can read the challenge that points it to the metadata.
    response = modern_call(client, "tools/list", headers={"Origin": INSPECTOR})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == INSPECTOR
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert "www-authenticate" in exposed
    assert response.headers["WWW-Authenticate"] == BARE_CHALLENGE


# -- the identity toolset -------------------------------------------------------------------------


def test_whoami_with_name_and_email(app: Flask) -> None:
    _, issued = sign_in(app, "bob", email="bob@example.com", name="Bob Builder")
    result = rpc_result(modern_call(app.test_client(), "tools/call", {"name": "whoami"}, issued["access_token"]))
    assert result["content"] == [
        {"type": "text", "text": "subject: fake:bob\nusername: bob\nname: Bob Builder\nemail: bob@example.com"}
    ]
    assert result["structuredContent"] == {"subject": "fake:bob", "username": "bob", "name": "Bob Builder", "email": "bob@example.com"}
    conforms(modern_types.CallToolResult, result)


def test_whoami_answers_for_the_tokens_own_user(app: Flask) -> None:
    client = app.test_client()
    _, carol = sign_in(app, "carol")
    _, dave = sign_in(app, "dave", email="dave@example.com")
    carol_says = rpc_result(legacy_call(client, "tools/call", {"name": "whoami"}, carol["access_token"]))
    dave_says = rpc_result(modern_call(client, "tools/call", {"name": "whoami"}, dave["access_token"]))
    assert carol_says["structuredContent"] == {"subject": "fake:carol", "username": "carol"}
    assert dave_says["structuredContent"] == {"subject": "fake:dave", "username": "dave", "email": "dave@example.com"}
