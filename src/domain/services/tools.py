"""Tool discovery and invocation for the MCP endpoint, with the scope each tool needs (RFC 6750 §3.1)."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from ..model import AccessContext
from ..ports import Toolset
from ..tools import ToolContext, ToolResult, ToolSpec, argument_problem
from .bearer import BearerAuthenticator


class UnknownTool(LookupError):
    """No enabled toolset has a tool of this name."""


class UpstreamTokenSource(Protocol):
    """Where tools' upstream tokens come from (UpstreamTokenService)."""

    def access_token(self, grant_id: str, *, rejected: str | None = None) -> str: ...


class _GrantUpstreamAccess:
    def __init__(self, service: UpstreamTokenSource, grant_id: str) -> None:
        self._service = service
        self._grant_id = grant_id

    def access_token(self, *, rejected: str | None = None) -> str:
        return self._service.access_token(self._grant_id, rejected=rejected)


class ToolService:
    def __init__(self, *, toolsets: Sequence[Toolset], upstream: UpstreamTokenSource) -> None:
        self._upstream = upstream
        self._tools: dict[str, tuple[Toolset, ToolSpec]] = {}
        for toolset in toolsets:
            for spec in toolset.tools():
                if spec.name in self._tools:
                    raise ValueError(f"tool {spec.name!r} is declared by two toolsets")
                self._tools[spec.name] = (toolset, spec)

    def list_tools(self) -> list[ToolSpec]:
        return [spec for _, spec in self._tools.values()]

    def scopes(self) -> tuple[str, ...]:
        """Every scope some tool needs, in declaration order."""
        return tuple(dict.fromkeys(scope for _, spec in self._tools.values() for scope in spec.required_scopes))

    def call(self, access: AccessContext, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        found = self._tools.get(name)
        if found is None:
            raise UnknownTool(name)
        toolset, spec = found
        BearerAuthenticator.require_scopes(access, spec.required_scopes, what=f"the tool {name!r}")
        problem = argument_problem(spec.input_schema, arguments)
        if problem is not None:
            # MCP: argument errors are tool errors the model can read and correct.
            return ToolResult.error(f"Invalid arguments for {name}: {problem}")
        context = ToolContext(access=access, upstream=_GrantUpstreamAccess(self._upstream, access.grant.grant_id))
        return toolset.call(name, arguments, context)
