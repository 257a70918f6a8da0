"""What a tool's upstream trouble looks like at /mcp: a finished upstream session is a 401 that
sends the client back to sign in; an outage is a 503 for that call only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pytest
from dependency_injector import providers
from flask import Flask

from mcp_oauth_bridge.domain.errors import InvalidToken, OAuthError, TemporarilyUnavailable
from mcp_oauth_bridge.domain.tools import ToolContext, ToolResult, ToolSpec

from .test_mcp_http import RESOURCE_METADATA, modern_call, sign_in

UPSTREAM_TOOL = ToolSpec(
    name="upstream_echo",
    description="Calls an upstream API with the person's token.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    required_scopes=("User.Read",),
)


class UpstreamToolset:
    name = "upstream"

    def tools(self) -> Sequence[ToolSpec]:
        return (UPSTREAM_TOOL,)

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(text="token: " + context.upstream.access_token())


class FailingUpstream:
    def __init__(self, error: OAuthError) -> None:
        self.error = error

    def access_token(self, grant_id: str, *, rejected: str | None = None) -> str:
        raise self.error


def app_whose_upstream_fails(app: Flask, error: OAuthError) -> Flask:
    container = app.extensions["container"]
    container.toolsets.override(providers.Object([UpstreamToolset()]))
    container.upstream_tokens.override(providers.Object(FailingUpstream(error)))
    return app


def test_an_ended_upstream_session_is_a_401_challenge(app: Flask) -> None:
    app_whose_upstream_fails(app, InvalidToken("the upstream session ended; sign in again"))
    _, tokens = sign_in(app)
    response = modern_call(app.test_client(), "tools/call", {"name": "upstream_echo", "arguments": {}}, tokens["access_token"])
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"') and RESOURCE_METADATA in challenge


def test_an_upstream_outage_is_a_503_for_that_call(app: Flask) -> None:
    app_whose_upstream_fails(app, TemporarilyUnavailable("the identity provider is unavailable"))
    _, tokens = sign_in(app)
    client = app.test_client()
    response = modern_call(client, "tools/call", {"name": "upstream_echo", "arguments": {}}, tokens["access_token"])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.get_json()
    assert body["id"] == 1 and body["error"]["code"] == -32603
    # Nothing else changed: the same token still lists tools.
    assert modern_call(client, "tools/list", {}, tokens["access_token"]).status_code == 200


@pytest.fixture(autouse=True)
def _reset_overrides(app: Flask) -> Any:
    yield
    container = app.extensions["container"]
    container.toolsets.reset_override()
    container.upstream_tokens.reset_override()
