"""ToolService and argument checking: the domain side of MCP tools (no Flask, no JSON-RPC)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pytest

from mcp_oauth_bridge.domain.errors import InsufficientScope
from mcp_oauth_bridge.domain.model import AccessContext, Grant
from mcp_oauth_bridge.domain.services.tools import ToolService, UnknownTool
from mcp_oauth_bridge.domain.tools import ToolContext, ToolResult, ToolSpec, argument_problem
from tests.fakes import NoUpstreamTokens

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "loud": {"type": "boolean"},
        "tags": {"type": "array"},
        "extra": {"type": "object"},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
    },
    "required": ["text"],
    "additionalProperties": False,
}


def spec(name: str, *scopes: str, schema: Mapping[str, Any] = SCHEMA) -> ToolSpec:
    return ToolSpec(name=name, description=f"the {name} tool", input_schema=schema, required_scopes=scopes)


class RecordingToolset:
    """A toolset whose tools echo their arguments and remember every call."""

    def __init__(self, name: str, specs: Sequence[ToolSpec]) -> None:
        self.name = name
        self.specs = tuple(specs)
        self.calls: list[tuple[str, dict[str, Any], AccessContext]] = []

    def tools(self) -> Sequence[ToolSpec]:
        return self.specs

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        self.calls.append((name, dict(arguments), context.access))
        return ToolResult(text=f"{name} ran", structured={"arguments": dict(arguments)})


def access(*scopes: str) -> AccessContext:
    grant = Grant(
        grant_id="g1",
        client_id="c1",
        subject="user-1",
        claims={},
        scopes=scopes,
        resource="https://mcp.example/mcp",
        created_at=0,
    )
    return AccessContext(grant=grant, client_id="c1", scopes=scopes, resource=grant.resource, expires_at=3600)


@pytest.fixture
def notes() -> RecordingToolset:
    return RecordingToolset("notes", [spec("read_note", "Notes.Read"), spec("write_note", "Notes.Read", "Notes.Write")])


@pytest.fixture
def service(notes: RecordingToolset) -> ToolService:
    return ToolService(
        toolsets=[notes, RecordingToolset("mail", [spec("read_mail", "Mail.Read", "Notes.Read")])], upstream=NoUpstreamTokens()
    )


# -- ToolService ---------------------------------------------------------------------------------


def test_list_tools_in_declaration_order(service: ToolService) -> None:
    assert [t.name for t in service.list_tools()] == ["read_note", "write_note", "read_mail"]


def test_scopes_in_declaration_order_without_duplicates(service: ToolService) -> None:
    assert service.scopes() == ("Notes.Read", "Notes.Write", "Mail.Read")


def test_no_toolsets_means_no_tools_and_no_scopes() -> None:
    service = ToolService(toolsets=[], upstream=NoUpstreamTokens())
    assert service.list_tools() == []
    assert service.scopes() == ()


def test_duplicate_tool_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="tool 'read_note' is declared by two toolsets"):
        ToolService(
            toolsets=[RecordingToolset("a", [spec("read_note")]), RecordingToolset("b", [spec("read_note")])],
            upstream=NoUpstreamTokens(),
        )


def test_unknown_tool(service: ToolService) -> None:
    with pytest.raises(UnknownTool) as raised:
        service.call(access("Notes.Read"), "delete_everything", {"text": "x"})
    assert raised.value.args == ("delete_everything",)


def test_call_reaches_the_toolset_with_the_callers_context(service: ToolService, notes: RecordingToolset) -> None:
    caller = access("Notes.Read")
    result = service.call(caller, "read_note", {"text": "hello", "count": 3})
    assert result == ToolResult(text="read_note ran", structured={"arguments": {"text": "hello", "count": 3}})
    assert notes.calls == [("read_note", {"text": "hello", "count": 3}, caller)]


@pytest.mark.parametrize("granted", [(), ("Notes.Write",), ("Mail.Read",)])
def test_missing_scope_raises_insufficient_scope_with_every_required_scope(
    service: ToolService, notes: RecordingToolset, granted: tuple[str, ...]
) -> None:
    with pytest.raises(InsufficientScope) as raised:
        service.call(access(*granted), "write_note", {"text": "x"})
    assert raised.value.error == "insufficient_scope"
    assert raised.value.required_scopes == ("Notes.Read", "Notes.Write")
    assert raised.value.description == "the tool 'write_note' requires scope: Notes.Read Notes.Write"
    assert notes.calls == []


def test_scope_is_checked_before_arguments(service: ToolService) -> None:
    # A caller without the scope learns nothing about the tool's arguments.
    with pytest.raises(InsufficientScope):
        service.call(access(), "read_note", {"bogus": 1})


def test_invalid_arguments_are_a_tool_error_not_an_exception(service: ToolService, notes: RecordingToolset) -> None:
    result = service.call(access("Notes.Read"), "read_note", {"text": "x", "count": 0})
    assert result == ToolResult(text="Invalid arguments for read_note: argument 'count' must be at least 1", is_error=True)
    assert notes.calls == []


def test_tool_result_error_helper() -> None:
    assert ToolResult.error("boom") == ToolResult(text="boom", structured=None, is_error=True)


# -- argument_problem: one test per rule ----------------------------------------------------------


def test_valid_arguments_have_no_problem() -> None:
    arguments = {"text": "t", "count": 10, "ratio": 0.5, "loud": False, "tags": [], "extra": {}, "mode": "slow"}
    assert argument_problem(SCHEMA, arguments) is None


def test_required_argument_missing() -> None:
    assert argument_problem(SCHEMA, {"count": 1}) == "missing required argument 'text'"


def test_unknown_argument_rejected_when_additional_properties_false() -> None:
    assert argument_problem(SCHEMA, {"text": "t", "colour": "red"}) == "unknown argument 'colour'"


def test_unknown_argument_allowed_otherwise() -> None:
    schema = {key: value for key, value in SCHEMA.items() if key != "additionalProperties"}
    assert argument_problem(schema, {"text": "t", "colour": "red"}) is None


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("text", 5, "string"),
        ("count", "3", "integer"),
        ("count", 2.5, "integer"),
        ("count", True, "integer"),
        ("ratio", "0.5", "number"),
        ("ratio", False, "number"),
        ("loud", 1, "boolean"),
        ("loud", "true", "boolean"),
        ("tags", "a,b", "array"),
        ("tags", {}, "array"),
        ("extra", [], "object"),
    ],
)
def test_wrong_type(name: str, value: Any, expected: str) -> None:
    assert argument_problem(SCHEMA, {"text": "t", name: value}) == f"argument '{name}' must be of type {expected}"


def test_integer_is_a_number() -> None:
    assert argument_problem(SCHEMA, {"text": "t", "ratio": 1}) is None


def test_enum() -> None:
    assert argument_problem(SCHEMA, {"text": "t", "mode": "medium"}) == "argument 'mode' must be one of fast, slow"


@pytest.mark.parametrize("name, value", [("count", 0), ("ratio", -0.1)])
def test_minimum(name: str, value: float) -> None:
    minimum = SCHEMA["properties"][name]["minimum"]
    assert argument_problem(SCHEMA, {"text": "t", name: value}) == f"argument '{name}' must be at least {minimum}"


@pytest.mark.parametrize("name, value", [("count", 11), ("ratio", 1.5)])
def test_maximum(name: str, value: float) -> None:
    maximum = SCHEMA["properties"][name]["maximum"]
    assert argument_problem(SCHEMA, {"text": "t", name: value}) == f"argument '{name}' must be at most {maximum}"


@pytest.mark.parametrize("name, value", [("count", 1), ("count", 10), ("ratio", 0), ("ratio", 1)])
def test_bounds_are_inclusive(name: str, value: float) -> None:
    assert argument_problem(SCHEMA, {"text": "t", name: value}) is None


def test_untyped_or_unknown_typed_property_accepts_any_value() -> None:
    schema = {"type": "object", "properties": {"anything": {}, "odd": {"type": "null"}, "multi": {"type": ["string", "null"]}}}
    for value in ("s", 1, None, [1], {"a": 1}):
        assert argument_problem(schema, {"anything": value, "odd": value, "multi": value}) is None


def test_empty_schema_accepts_empty_arguments() -> None:
    assert argument_problem({"type": "object"}, {}) is None


@pytest.mark.parametrize("value", ["abc", None, [1], {"a": 1}, True])
def test_bounds_ignore_non_numbers_when_the_type_does_not_exclude_them(value: Any) -> None:
    # JSON Schema: minimum/maximum constrain numbers only; comparing anything else must not raise.
    schema = {"type": "object", "properties": {"n": {"type": ["integer", "string", "null", "array", "object", "boolean"], "minimum": 1, "maximum": 5}}}
    assert argument_problem(schema, {"n": value}) is None
    assert argument_problem({"type": "object", "properties": {"n": {"minimum": 1}}}, {"n": value}) is None
