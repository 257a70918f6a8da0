"""The MCP wire protocol over Streamable HTTP, JSON responses only: the stateless 2026-07-28
revision (per-request ``_meta``, mirrored headers, ``server/discover``) and the initialize-era
revisions 2025-03-26 to 2025-11-25. Pure: bytes and headers in, status and JSON out.

The messages are built by hand rather than with ``mcp-types`` (whose per-revision models are
private modules) to keep pydantic out of the request path; the tests check every result against
``mcp-types``' models of each revision.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ...domain.model import AccessContext
from ...domain.services.tools import ToolService, UnknownTool
from ...domain.tools import ToolSpec

MODERN_VERSIONS = ("2026-07-28",)
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
# 2026-07-28 transports: a request without the version header may be treated as 2025-03-26.
DEFAULT_LEGACY_VERSION = "2025-03-26"

PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
ROUTING_HEADERS = (PROTOCOL_VERSION_HEADER, METHOD_HEADER, NAME_HEADER)

PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
# Methods whose params.name / params.uri is mirrored in Mcp-Name.
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

# JSON-RPC 2.0 and MCP 2026-07-28 error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

# 2026-07-28 Streamable HTTP: the HTTP status that goes with each error code.
MODERN_ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
BASE64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


class McpError(Exception):
    """A JSON-RPC error answer, with the HTTP status it is sent with."""

    def __init__(self, code: int, message: str, *, data: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status if status is not None else MODERN_ERROR_STATUS.get(code, 200)
        # Set once the request's id could be read.
        self.request_id: str | int | None = None


@dataclass(frozen=True)
class McpRequest:
    method: str
    params: Mapping[str, Any]
    # None for a notification.
    id: str | int | None
    protocol_version: str
    modern: bool

    @property
    def is_notification(self) -> bool:
        return self.id is None


@dataclass(frozen=True)
class McpReply:
    status: int
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    instructions: str | None = None


def error_body(request_id: str | int | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    # JSON-RPC 2.0 §5: id is null when it could not be read.
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def decode_header_value(value: str | None) -> str | None:
    """2026-07-28 value encoding: ``=?base64?...?=`` carries UTF-8 that is not header-safe."""
    if value is None:
        return None
    match = BASE64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group("payload"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


# -- parsing and the validation ladder ----------------------------------------------------------


def _message(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise McpError(PARSE_ERROR, "Parse error: the body is not valid JSON", status=400) from None
    except RecursionError:
        # A few kilobytes of "[[[[..." exhaust the decoder's recursion limit.
        raise McpError(PARSE_ERROR, "Parse error: the body nests too deeply", status=400) from None
    if isinstance(message, list):
        # Batching was removed in 2025-06-18 and never existed in 2026-07-28.
        raise McpError(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported", status=400)
    if not isinstance(message, dict):
        raise McpError(INVALID_REQUEST, "Invalid Request: the body must be a JSON-RPC object", status=400)
    if message.get("jsonrpc") != "2.0":
        raise McpError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', status=400)
    if "method" not in message:
        # A JSON-RPC response or result: clients must not send those.
        raise McpError(INVALID_REQUEST, "Invalid Request: only requests and notifications are accepted", status=400)
    if not isinstance(message["method"], str) or not message["method"]:
        raise McpError(INVALID_REQUEST, 'Invalid Request: "method" must be a string', status=400)
    if "id" in message:
        request_id = message["id"]
        # MCP: request ids are strings or integers, never null.
        if isinstance(request_id, bool) or not isinstance(request_id, (str, int)):
            raise McpError(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer', status=400)
    if "params" in message and not isinstance(message["params"], dict):
        raise McpError(INVALID_REQUEST, 'Invalid Request: "params" must be an object', status=400)
    return message


def parse_request(body: bytes, headers: Callable[[str], list[str]]) -> McpRequest:
    """Decode one POST body and decide which protocol generation it speaks.

    ``headers(name)`` returns every value of a header (case-insensitive name).
    """
    message = _message(body)
    request_id = message.get("id")
    method: str = message["method"]
    params: dict[str, Any] = message.get("params") or {}
    meta = params.get("_meta")
    version_header = _first(headers, PROTOCOL_VERSION_HEADER)
    carries_modern_meta = isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta

    modern = method != "initialize" and (carries_modern_meta or version_header in MODERN_VERSIONS)
    if request_id is None:
        # Notifications are acknowledged and dropped; 2026-07-28 sets no header rules for them.
        return McpRequest(method=method, params=params, id=None, protocol_version=version_header or "", modern=modern)
    try:
        version = _modern_version(method, params, headers) if modern else _legacy_version(method, version_header)
    except McpError as error:
        error.request_id = request_id
        raise
    return McpRequest(method=method, params=params, id=request_id, protocol_version=version, modern=modern)


def _first(headers: Callable[[str], list[str]], name: str) -> str | None:
    values = headers(name)
    return values[0] if values else None


def _unsupported_version(requested: Any) -> McpError:
    return McpError(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        data={"supported": list(MODERN_VERSIONS + LEGACY_VERSIONS), "requested": requested},
        status=400,
    )


def _legacy_version(method: str, version_header: str | None) -> str:
    if version_header is None:
        return DEFAULT_LEGACY_VERSION
    # 2025-06-18 §Protocol Version Header: an unsupported version is a 400.
    if version_header not in LEGACY_VERSIONS and method != "initialize":
        raise _unsupported_version(version_header)
    return version_header if version_header in LEGACY_VERSIONS else DEFAULT_LEGACY_VERSION


def _modern_version(method: str, params: Mapping[str, Any], headers: Callable[[str], list[str]]) -> str:
    meta = params.get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_META_KEY not in meta or CLIENT_CAPABILITIES_META_KEY not in meta:
        raise McpError(
            INVALID_PARAMS,
            f"params._meta must carry {PROTOCOL_VERSION_META_KEY!r} and {CLIENT_CAPABILITIES_META_KEY!r}",
        )
    for name in ROUTING_HEADERS:
        if len(headers(name)) > 1:
            raise McpError(HEADER_MISMATCH, f"Header mismatch: {name} is repeated")
    version = meta[PROTOCOL_VERSION_META_KEY]
    # 2026-07-28 §Server Validation: mirrored headers must match the body.
    version_header = _first(headers, PROTOCOL_VERSION_HEADER)
    if version_header is None:
        raise McpError(HEADER_MISMATCH, f"Header mismatch: {PROTOCOL_VERSION_HEADER} header is missing")
    if version_header != version:
        raise McpError(
            HEADER_MISMATCH,
            f"Header mismatch: {PROTOCOL_VERSION_HEADER} header {version_header!r} does not match body value {version!r}",
        )
    method_header = _first(headers, METHOD_HEADER)
    if method_header is None:
        raise McpError(HEADER_MISMATCH, f"Header mismatch: {METHOD_HEADER} header is missing")
    if method_header != method:
        raise McpError(
            HEADER_MISMATCH, f"Header mismatch: {METHOD_HEADER} header {method_header!r} does not match body value {method!r}"
        )
    name_key = NAME_BEARING_METHODS.get(method)
    if name_key is not None:
        raw_name = _first(headers, NAME_HEADER)
        if raw_name is None:
            raise McpError(HEADER_MISMATCH, f"Header mismatch: {NAME_HEADER} header is missing")
        if decode_header_value(raw_name) != params.get(name_key):
            raise McpError(
                HEADER_MISMATCH,
                f"Header mismatch: {NAME_HEADER} header does not match the body's {name_key!r} parameter",
            )
    if version not in MODERN_VERSIONS:
        raise _unsupported_version(version)
    return str(version)


# -- dispatch ------------------------------------------------------------------------------------


@dataclass
class McpServer:
    """Answers parsed MCP requests with the tools of the enabled toolsets."""

    tools: ToolService
    info: ServerInfo
    _handlers: dict[str, Callable[[McpRequest, AccessContext], dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self._handlers = {
            "server/discover": self._discover,
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._list_tools,
            "tools/call": self._call_tool,
        }

    def handle(self, request: McpRequest, access: AccessContext) -> McpReply:
        if request.is_notification:
            # Streamable HTTP: an accepted notification is 202 with no body.
            return McpReply(status=202)
        try:
            result = self._dispatch(request, access)
        except McpError as error:
            # Before 2026-07-28 a JSON-RPC error after dispatch travelled with 200.
            status = error.status if request.modern else 200
            return McpReply(status=status, body=error_body(request.id, error.code, error.message, error.data))
        if request.modern:
            result.setdefault("resultType", "complete")
            result["_meta"] = {SERVER_INFO_META_KEY: self._implementation()}
        return McpReply(status=200, body={"jsonrpc": "2.0", "id": request.id, "result": result})

    def _dispatch(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        handler = self._handlers.get(request.method)
        legacy_only = request.method in ("initialize", "ping")
        modern_only = request.method == "server/discover"
        if handler is None or (request.modern and legacy_only) or (not request.modern and modern_only):
            raise McpError(METHOD_NOT_FOUND, f"Method not found: {request.method}")
        return handler(request, access)

    def _implementation(self) -> dict[str, str]:
        return {"name": self.info.name, "version": self.info.version}

    def _capabilities(self) -> dict[str, Any]:
        return {"tools": {"listChanged": False}}

    def _discover(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        result: dict[str, Any] = {
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self._capabilities(),
            "cacheScope": "public",
            "ttlMs": 0,
        }
        if self.info.instructions:
            result["instructions"] = self.info.instructions
        return result

    def _initialize(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        requested = request.params.get("protocolVersion")
        # 2025-11-25 §Version Negotiation: echo a supported version, else offer our latest.
        version = requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self._capabilities(),
            "serverInfo": self._implementation(),
        }
        if self.info.instructions:
            result["instructions"] = self.info.instructions
        return result

    def _ping(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        return {}

    def _list_tools(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        result: dict[str, Any] = {"tools": [tool_definition(spec) for spec in self.tools.list_tools()]}
        if request.modern:
            # The list is the same for every caller.
            result.update(cacheScope="public", ttlMs=0)
        return result

    def _call_tool(self, request: McpRequest, access: AccessContext) -> dict[str, Any]:
        name = request.params.get("name")
        arguments = request.params.get("arguments")
        if not isinstance(name, str):
            raise McpError(INVALID_PARAMS, 'Invalid params: "name" must be a string')
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise McpError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object')
        try:
            outcome = self.tools.call(access, name, arguments)
        except UnknownTool:
            raise McpError(INVALID_PARAMS, f"Unknown tool: {name}") from None
        result: dict[str, Any] = {"content": [{"type": "text", "text": outcome.text}], "isError": outcome.is_error}
        if outcome.structured is not None:
            result["structuredContent"] = dict(outcome.structured)
        return result


def tool_definition(spec: ToolSpec) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "inputSchema": dict(spec.input_schema),
        "annotations": {"readOnlyHint": spec.read_only},
    }
    if spec.title:
        definition["title"] = spec.title
        definition["annotations"]["title"] = spec.title
    return definition
