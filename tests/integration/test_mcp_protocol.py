"""The MCP wire protocol module on its own: bytes and headers in, status and JSON out, over a
small test toolset (no Flask, no storage)."""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Mapping, Sequence

import pytest

from mcp_oauth_bridge.adapters.http.mcp_protocol import (
    McpError,
    McpReply,
    McpRequest,
    McpServer,
    ServerInfo,
    decode_header_value,
    parse_request,
    tool_definition,
)
from mcp_oauth_bridge.domain.errors import InsufficientScope
from mcp_oauth_bridge.domain.model import AccessContext, Grant
from mcp_oauth_bridge.domain.services.tools import ToolService
from mcp_oauth_bridge.domain.tools import ToolContext, ToolResult, ToolSpec
from tests.fakes import NoUpstreamTokens

from .mcp_wire import conforms, legacy_types, modern_types

MODERN = "2026-07-28"
LEGACY = ("2025-11-25", "2025-06-18", "2025-03-26")
SUPPORTED = [MODERN, *LEGACY]
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
INFO = ServerInfo(name="test-server", version="1.2.3", instructions="Use the echo tool.")
SERVER_META = {"io.modelcontextprotocol/serverInfo": {"name": "test-server", "version": "1.2.3"}}

ECHO = ToolSpec(
    name="echo",
    title="Echo",
    description="Repeats its text.",
    input_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": False},
    required_scopes=("Notes.Read",),
)
CAFE = ToolSpec(name="café ☕", description="A tool whose name is not header-safe.", input_schema={"type": "object"}, required_scopes=())


class TestToolset:
    __test__ = False
    name = "test"

    def tools(self) -> Sequence[ToolSpec]:
        return (ECHO, CAFE)

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        if name == "echo":
            return ToolResult(text=arguments["text"], structured={"text": arguments["text"], "by": context.access.subject})
        return ToolResult(text="coffee")


def access(*scopes: str) -> AccessContext:
    grant = Grant(grant_id="g", client_id="c", subject="user-1", claims={}, scopes=scopes, resource="https://x/mcp", created_at=0)
    return AccessContext(grant=grant, client_id="c", scopes=scopes, resource=grant.resource, expires_at=1)


READER = access("Notes.Read")


def header_lookup(headers: Mapping[str, str | list[str]]) -> Callable[[str], list[str]]:
    """Like ``request.headers.getlist``: every value of a header, by case-insensitive name."""
    lowered = {name.lower(): ([value] if isinstance(value, str) else value) for name, value in headers.items()}
    return lambda name: list(lowered.get(name.lower(), []))


def encoded(value: str) -> str:
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def modern(method: str, params: Mapping[str, Any] | None = None, *, id: Any = 1, name: str | None = None, **headers: str | list[str]) -> tuple[bytes, dict[str, Any]]:
    """A 2026-07-28 body and its headers; keyword headers use _ for - and replace the defaults."""
    body = {"jsonrpc": "2.0", "id": id, "method": method, "params": {**(params or {}), "_meta": META}}
    all_headers: dict[str, Any] = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        all_headers["Mcp-Name"] = name
    all_headers.update({key.replace("_", "-"): value for key, value in headers.items()})
    return json.dumps(body).encode(), all_headers


def legacy(method: str, params: Mapping[str, Any] | None = None, *, id: Any = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": dict(params or {})}
    if id is not None:
        message["id"] = id
    return json.dumps(message).encode()


def parse(body: bytes, headers: Mapping[str, str | list[str]] | None = None) -> McpRequest:
    return parse_request(body, header_lookup(headers or {}))


def parse_error(body: bytes, headers: Mapping[str, str | list[str]] | None = None) -> McpError:
    with pytest.raises(McpError) as raised:
        parse(body, headers)
    return raised.value


@pytest.fixture
def server() -> McpServer:
    return McpServer(tools=ToolService(toolsets=[TestToolset()], upstream=NoUpstreamTokens()), info=INFO)


def handle(server: McpServer, body: bytes, headers: Mapping[str, str | list[str]] | None = None, who: AccessContext = READER) -> McpReply:
    return server.handle(parse(body, headers), who)


def result_of(reply: McpReply, request_id: Any = 1) -> dict[str, Any]:
    assert reply.status == 200, reply
    assert reply.body is not None and set(reply.body) == {"jsonrpc", "id", "result"}, reply.body
    assert reply.body["jsonrpc"] == "2.0" and reply.body["id"] == request_id
    result: dict[str, Any] = reply.body["result"]
    return result


def error_of(reply: McpReply, status: int, code: int, request_id: Any = 1) -> dict[str, Any]:
    assert reply.status == status, reply
    assert reply.body is not None and set(reply.body) == {"jsonrpc", "id", "error"}, reply.body
    assert reply.body["id"] == request_id and reply.body["error"]["code"] == code
    conforms(modern_types.JSONRPCErrorResponse, reply.body)
    error: dict[str, Any] = reply.body["error"]
    return error


# -- header value encoding -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, decoded",
    [
        (None, None),
        ("whoami", "whoami"),
        ("", ""),
        ("=?base64?d2hvYW1p?=", "whoami"),
        ("=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"),
        ("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?="),
        ("=?base64??=", ""),
        # The markers are case-sensitive: anything else is a plain value.
        ("=?BASE64?d2hvYW1p?=", "=?BASE64?d2hvYW1p?="),
        ("=?base64?d2hvYW1p", "=?base64?d2hvYW1p"),
        # Malformed payloads decode to nothing (and so never match a body value).
        ("=?base64?not base64!?=", None),
        ("=?base64?d2hvYW1?=", None),
        ("=?base64?/w==?=", None),
    ],
)
def test_decode_header_value(raw: str | None, decoded: str | None) -> None:
    assert decode_header_value(raw) == decoded


# -- which generation a request speaks ------------------------------------------------------------


def test_modern_request() -> None:
    body, headers = modern("tools/call", {"name": "echo", "arguments": {"text": "hi"}}, id="req-1", name="echo")
    request = parse(body, headers)
    assert request == McpRequest(
        method="tools/call",
        params={"name": "echo", "arguments": {"text": "hi"}, "_meta": META},
        id="req-1",
        protocol_version=MODERN,
        modern=True,
    )
    assert not request.is_notification


def test_header_names_are_case_insensitive() -> None:
    body, _ = modern("tools/list")
    assert parse(body, {"mcp-protocol-version": MODERN, "MCP-METHOD": "tools/list"}).modern


@pytest.mark.parametrize("version", LEGACY)
def test_legacy_request_with_version_header(version: str) -> None:
    request = parse(legacy("tools/list"), {"MCP-Protocol-Version": version})
    assert (request.modern, request.protocol_version, request.id) == (False, version, 1)


def test_legacy_request_without_version_header_is_2025_03_26() -> None:
    request = parse(legacy("tools/list", id="x"))
    assert (request.modern, request.protocol_version, request.id) == (False, "2025-03-26", "x")


@pytest.mark.parametrize("headers", [{}, {"MCP-Protocol-Version": MODERN}, {"MCP-Protocol-Version": "2099-01-01"}])
def test_initialize_is_always_legacy(headers: dict[str, str]) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "_meta": META}}).encode()
    request = parse(body, headers)
    assert (request.modern, request.protocol_version) == (False, "2025-03-26")


def test_notification() -> None:
    request = parse(legacy("notifications/initialized", id=None), {"MCP-Protocol-Version": "whatever"})
    assert request.is_notification and request.id is None and request.protocol_version == "whatever"


# -- the validation ladder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        (b"{", -32700, "Parse error"),
        (b"", -32700, "Parse error"),
        (b"\xff\xfe\xfa", -32700, "Parse error"),
        (b"[" * 100_000, -32700, "Parse error"),
        (b'{"a":' * 100_000, -32700, "Parse error"),
        (b"[]", -32600, "batches"),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600, "batches"),
        (b'"ping"', -32600, "JSON-RPC object"),
        (b"null", -32600, "JSON-RPC object"),
        (b"42", -32600, "JSON-RPC object"),
        (b'{"id": 1, "method": "ping"}', -32600, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": 2.0, "id": 1, "method": "ping"}', -32600, '"jsonrpc" must be "2.0"'),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', -32600, "only requests and notifications"),
        (b'{"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}}', -32600, "only requests and notifications"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', -32600, '"method" must be a string'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": ""}', -32600, '"method" must be a string'),
        (b'{"jsonrpc": "2.0", "id": null, "method": "ping"}', -32600, '"id" must be a string or an integer'),
        (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600, '"id" must be a string or an integer'),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32600, '"id" must be a string or an integer'),
        (b'{"jsonrpc": "2.0", "id": 1.0, "method": "ping"}', -32600, '"id" must be a string or an integer'),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', -32600, '"id" must be a string or an integer'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": []}', -32600, '"params" must be an object'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": null}', -32600, '"params" must be an object'),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": "x"}', -32600, '"params" must be an object'),
    ],
)
def test_malformed_messages_are_400_without_an_id(body: bytes, code: int, fragment: str) -> None:
    error = parse_error(body)
    assert (error.code, error.status, error.request_id) == (code, 400, None)
    assert fragment in error.message


def modern_error(body: bytes, headers: Mapping[str, str | list[str]]) -> McpError:
    error = parse_error(body, headers)
    assert error.status == 400
    return error


@pytest.mark.parametrize("missing", ["MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"])
def test_missing_routing_header(missing: str) -> None:
    body, headers = modern("tools/call", {"name": "echo"}, id=7, name="echo")
    del headers[missing]
    error = modern_error(body, headers)
    assert (error.code, error.request_id, error.message) == (-32020, 7, f"Header mismatch: {missing} header is missing")


def test_mcp_name_is_required_only_for_name_bearing_methods() -> None:
    body, headers = modern("tools/list")
    assert parse(body, headers).modern


@pytest.mark.parametrize("method, key", [("tools/call", "name"), ("prompts/get", "name"), ("resources/read", "uri")])
def test_mcp_name_mirrors_name_or_uri(method: str, key: str) -> None:
    body, headers = modern(method, {key: "thing"}, name="thing")
    assert parse(body, headers).method == method
    body, headers = modern(method, {key: "thing"}, name="other")
    assert modern_error(body, headers).code == -32020


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"MCP-Protocol-Version": "2025-11-25"}, "Header mismatch: MCP-Protocol-Version header '2025-11-25' does not match body value '2026-07-28'"),
        ({"Mcp-Method": "tools/list"}, "Header mismatch: Mcp-Method header 'tools/list' does not match body value 'tools/call'"),
        ({"Mcp-Method": "TOOLS/CALL"}, "Header mismatch: Mcp-Method header 'TOOLS/CALL' does not match body value 'tools/call'"),
        ({"Mcp-Name": "Echo"}, "Header mismatch: Mcp-Name header does not match the body's 'name' parameter"),
        ({"Mcp-Name": encoded("other")}, "Header mismatch: Mcp-Name header does not match the body's 'name' parameter"),
        ({"Mcp-Name": "=?base64?!!!?="}, "Header mismatch: Mcp-Name header does not match the body's 'name' parameter"),
        ({"Mcp-Name": "=?base64?/w==?="}, "Header mismatch: Mcp-Name header does not match the body's 'name' parameter"),
    ],
)
def test_header_mismatch(overrides: dict[str, str], message: str) -> None:
    body, headers = modern("tools/call", {"name": "echo"}, id="m", name="echo")
    headers.update(overrides)
    error = modern_error(body, headers)
    assert (error.code, error.request_id, error.message) == (-32020, "m", message)


@pytest.mark.parametrize("name", ["echo", "café ☕", "=?base64?literal?="])
def test_base64_mcp_name_is_decoded_before_comparison(name: str) -> None:
    body, headers = modern("tools/call", {"name": name}, name=encoded(name))
    assert parse(body, headers).params["name"] == name


@pytest.mark.parametrize("repeated", ["MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"])
def test_repeated_routing_header(repeated: str) -> None:
    body, headers = modern("tools/call", {"name": "echo"}, name="echo")
    headers[repeated] = [headers[repeated]] * 2
    error = modern_error(body, headers)
    assert (error.code, error.message) == (-32020, f"Header mismatch: {repeated} is repeated")


@pytest.mark.parametrize(
    "meta",
    [
        None,
        "2026-07-28",
        {},
        {"io.modelcontextprotocol/clientCapabilities": {}},
        {"io.modelcontextprotocol/protocolVersion": MODERN},
    ],
)
def test_missing_meta_keys_are_invalid_params(meta: Any) -> None:
    params: dict[str, Any] = {} if meta is None else {"_meta": meta}
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": params}).encode()
    error = modern_error(body, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    assert (error.code, error.request_id) == (-32602, 3)
    assert "io.modelcontextprotocol/protocolVersion" in error.message and "io.modelcontextprotocol/clientCapabilities" in error.message


@pytest.mark.parametrize("version", ["2099-01-01", "2025-11-25", "1900-01-01"])
def test_unsupported_modern_version(version: str) -> None:
    meta = {**META, "io.modelcontextprotocol/protocolVersion": version}
    body = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": meta}}).encode()
    error = modern_error(body, {"MCP-Protocol-Version": version, "Mcp-Method": "tools/list"})
    assert (error.code, error.request_id, error.message) == (-32022, 4, "Unsupported protocol version")
    assert error.data == {"supported": SUPPORTED, "requested": version}


def test_unsupported_legacy_version_header() -> None:
    error = modern_error(legacy("tools/list", id=5), {"MCP-Protocol-Version": "2099-01-01"})
    assert (error.code, error.request_id, error.data) == (-32022, 5, {"supported": SUPPORTED, "requested": "2099-01-01"})


# -- dispatch: 2026-07-28 ------------------------------------------------------------------------


def test_discover(server: McpServer) -> None:
    result = result_of(handle(server, *modern("server/discover")))
    assert result == {
        "supportedVersions": [MODERN],
        "capabilities": {"tools": {"listChanged": False}},
        "cacheScope": "public",
        "ttlMs": 0,
        "instructions": "Use the echo tool.",
        "resultType": "complete",
        "_meta": SERVER_META,
    }
    conforms(modern_types.DiscoverResult, result)


def test_discover_without_instructions() -> None:
    bare = McpServer(tools=ToolService(toolsets=[], upstream=NoUpstreamTokens()), info=ServerInfo(name="bare", version="0"))
    result = result_of(handle(bare, *modern("server/discover")))
    assert "instructions" not in result
    conforms(modern_types.DiscoverResult, result)


def test_modern_list_tools(server: McpServer) -> None:
    result = result_of(handle(server, *modern("tools/list")))
    assert result == {
        "tools": [tool_definition(ECHO), tool_definition(CAFE)],
        "cacheScope": "public",
        "ttlMs": 0,
        "resultType": "complete",
        "_meta": SERVER_META,
    }
    conforms(modern_types.ListToolsResult, result)


def test_tool_definition() -> None:
    assert tool_definition(ECHO) == {
        "name": "echo",
        "title": "Echo",
        "description": "Repeats its text.",
        "inputSchema": dict(ECHO.input_schema),
        "annotations": {"readOnlyHint": True, "title": "Echo"},
    }
    assert tool_definition(CAFE) == {
        "name": "café ☕",
        "description": "A tool whose name is not header-safe.",
        "inputSchema": {"type": "object"},
        "annotations": {"readOnlyHint": True},
    }
    for definition in (tool_definition(ECHO), tool_definition(CAFE)):
        conforms(modern_types.Tool, definition)
        conforms(legacy_types.Tool, definition)


def test_modern_call_tool(server: McpServer) -> None:
    reply = handle(server, *modern("tools/call", {"name": "echo", "arguments": {"text": "hi"}}, id="c1", name="echo"))
    result = result_of(reply, "c1")
    assert result == {
        "content": [{"type": "text", "text": "hi"}],
        "isError": False,
        "structuredContent": {"text": "hi", "by": "user-1"},
        "resultType": "complete",
        "_meta": SERVER_META,
    }
    conforms(modern_types.CallToolResult, result)


def test_call_tool_with_a_base64_name(server: McpServer) -> None:
    reply = handle(server, *modern("tools/call", {"name": "café ☕"}, name=encoded("café ☕")))
    result = result_of(reply)
    assert result["content"] == [{"type": "text", "text": "coffee"}]
    assert "structuredContent" not in result
    conforms(modern_types.CallToolResult, result)


def test_invalid_arguments_are_a_tool_error(server: McpServer) -> None:
    reply = handle(server, *modern("tools/call", {"name": "echo", "arguments": {"text": 1}}, name="echo"))
    result = result_of(reply)
    assert result["content"] == [{"type": "text", "text": "Invalid arguments for echo: argument 'text' must be of type string"}]
    assert result["isError"] is True
    conforms(modern_types.CallToolResult, result)


def test_missing_arguments_mean_an_empty_object(server: McpServer) -> None:
    result = result_of(handle(server, *modern("tools/call", {"name": "echo"}, name="echo")))
    assert result["content"][0]["text"] == "Invalid arguments for echo: missing required argument 'text'"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"name": "nope"}, "Unknown tool: nope"),
        ({"name": "echo", "arguments": ["hi"]}, 'Invalid params: "arguments" must be an object'),
        ({"name": "echo", "arguments": "hi"}, 'Invalid params: "arguments" must be an object'),
    ],
)
def test_modern_call_tool_errors_are_400(server: McpServer, params: dict[str, Any], message: str) -> None:
    error = error_of(handle(server, *modern("tools/call", params, name=params["name"])), 400, -32602)
    assert error["message"] == message


def test_tool_name_must_be_a_string(server: McpServer) -> None:
    # The header cannot match a non-string name, so the ladder stops it first...
    body, headers = modern("tools/call", {"name": 5}, name="5")
    assert modern_error(body, headers).code == -32020
    # ...and the handler rejects it too when called directly.
    request = McpRequest(method="tools/call", params={"name": 5}, id=1, protocol_version=MODERN, modern=True)
    error = error_of(server.handle(request, READER), 400, -32602)
    assert error["message"] == 'Invalid params: "name" must be a string'


def test_insufficient_scope_is_raised_for_the_adapter(server: McpServer) -> None:
    with pytest.raises(InsufficientScope) as raised:
        handle(server, *modern("tools/call", {"name": "echo", "arguments": {"text": "x"}}, name="echo"), who=access())
    assert raised.value.required_scopes == ("Notes.Read",)


@pytest.mark.parametrize("method", ["ping", "initialize", "resources/list", "prompts/list", "notifications/initialized"])
def test_modern_unknown_methods_are_404(server: McpServer, method: str) -> None:
    request = McpRequest(method=method, params={}, id=9, protocol_version=MODERN, modern=True)
    error = error_of(server.handle(request, READER), 404, -32601, 9)
    assert error["message"] == f"Method not found: {method}"


def test_modern_ping_through_the_parser_is_404(server: McpServer) -> None:
    error_of(handle(server, *modern("ping")), 404, -32601)


def test_notifications_are_accepted_without_a_body(server: McpServer) -> None:
    body = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": META}}).encode()
    assert handle(server, body, {"MCP-Protocol-Version": MODERN, "Mcp-Method": "notifications/cancelled"}) == McpReply(status=202)
    assert handle(server, legacy("notifications/initialized", id=None)) == McpReply(status=202)


# -- dispatch: initialize era ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, negotiated",
    [(v, v) for v in LEGACY] + [("2024-11-05", "2025-11-25"), ("2099-01-01", "2025-11-25"), (None, "2025-11-25"), (20251125, "2025-11-25")],
)
def test_initialize_negotiates(server: McpServer, requested: Any, negotiated: str) -> None:
    params = {"capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}
    if requested is not None:
        params["protocolVersion"] = requested
    result = result_of(handle(server, legacy("initialize", params, id=0)), 0)
    assert result == {
        "protocolVersion": negotiated,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "test-server", "version": "1.2.3"},
        "instructions": "Use the echo tool.",
    }
    conforms(legacy_types.InitializeResult, result)


@pytest.mark.parametrize("version", LEGACY)
def test_legacy_list_and_call(server: McpServer, version: str) -> None:
    headers = {"MCP-Protocol-Version": version}
    listed = result_of(handle(server, legacy("tools/list"), headers))
    assert listed == {"tools": [tool_definition(ECHO), tool_definition(CAFE)]}
    conforms(legacy_types.ListToolsResult, listed)
    called = result_of(handle(server, legacy("tools/call", {"name": "echo", "arguments": {"text": "yo"}}), headers))
    assert called == {"content": [{"type": "text", "text": "yo"}], "isError": False, "structuredContent": {"text": "yo", "by": "user-1"}}
    conforms(legacy_types.CallToolResult, called)


def test_legacy_ping(server: McpServer) -> None:
    result = result_of(handle(server, legacy("ping", id="p"), {"MCP-Protocol-Version": "2025-11-25"}), "p")
    assert result == {}
    conforms(legacy_types.EmptyResult, result)


@pytest.mark.parametrize(
    "method, params, code, message",
    [
        ("server/discover", {}, -32601, "Method not found: server/discover"),
        ("resources/list", {}, -32601, "Method not found: resources/list"),
        ("tools/call", {"name": "nope"}, -32602, "Unknown tool: nope"),
        ("tools/call", {"name": None}, -32602, 'Invalid params: "name" must be a string'),
    ],
)
def test_legacy_errors_travel_with_200(server: McpServer, method: str, params: dict[str, Any], code: int, message: str) -> None:
    error = error_of(handle(server, legacy(method, params)), 200, code)
    assert error["message"] == message
    conforms(legacy_types.JSONRPCErrorResponse, {"jsonrpc": "2.0", "id": 1, "error": error})
