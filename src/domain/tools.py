"""What an MCP tool is to the domain: its declaration (with the scope it needs) and its result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from .model import AccessContext


@dataclass(frozen=True)
class ToolSpec:
    """A tool as ``tools/list`` declares it, plus the OAuth scopes a caller must hold."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    required_scopes: tuple[str, ...]
    title: str | None = None
    read_only: bool = True


@dataclass(frozen=True)
class ToolResult:
    """A ``tools/call`` result: text for the model, optional structured content."""

    text: str
    structured: Mapping[str, Any] | None = None
    is_error: bool = False

    @classmethod
    def error(cls, message: str) -> "ToolResult":
        return cls(text=message, is_error=True)


class UpstreamAccess(Protocol):
    """The signed-in person's upstream API access token, for the tool's grant."""

    def access_token(self, *, rejected: str | None = None) -> str:
        """A usable token; ``rejected``: one the API just refused with 401 (get another)."""
        ...


@dataclass(frozen=True)
class ToolContext:
    """What a tool may use: who is calling, through which grant, with which scopes, and the
    upstream access token for calling APIs on the person's behalf."""

    access: AccessContext
    upstream: UpstreamAccess


JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "boolean": (bool,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


def argument_problem(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    """Check arguments against the subset of JSON Schema our tools declare (top-level
    properties with type, enum, minimum/maximum, required, additionalProperties); return
    what is wrong, or None."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in arguments:
            return f"missing required argument '{name}'"
    for name, value in arguments.items():
        spec = properties.get(name)
        if spec is None:
            if schema.get("additionalProperties") is False:
                return f"unknown argument '{name}'"
            continue
        expected = spec.get("type")
        types = JSON_TYPES.get(expected, (object,)) if isinstance(expected, str) else (object,)
        # bool is an int in Python, but not in JSON.
        if not isinstance(value, types) or (expected in ("integer", "number") and isinstance(value, bool)):
            return f"argument '{name}' must be of type {expected}"
        if "enum" in spec and value not in spec["enum"]:
            return f"argument '{name}' must be one of {', '.join(map(str, spec['enum']))}"
        # JSON Schema: the bounds constrain numbers only (and comparing anything else would raise).
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if "minimum" in spec and value < spec["minimum"]:
            return f"argument '{name}' must be at least {spec['minimum']}"
        if "maximum" in spec and value > spec["maximum"]:
            return f"argument '{name}' must be at most {spec['maximum']}"
    return None
