"""/mcp over plain HTTP with a bearer token (Streamable HTTP, revision 2026-07-28), for tests
that send many calls at once or address one server instance directly."""

from __future__ import annotations

import json
from typing import Any

import requests

MODERN = "2026-07-28"


def modern_tool_call(base_url: str, token: str, name: str, arguments: dict[str, Any], request_id: int) -> requests.Response:
    """A 2026-07-28 tools/call over plain HTTP with the SDK's bearer token."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}},
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }
    return requests.post(base_url + "/mcp", data=json.dumps(body), headers=headers, timeout=60)


def json_rpc_result(response: requests.Response) -> dict[str, Any]:
    """The JSON-RPC message of a JSON or single-event SSE answer."""
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(item) for item in data if item]
        message = next(m for m in messages if "result" in m or "error" in m)
    else:
        message = response.json()
    assert isinstance(message, dict)
    return message
