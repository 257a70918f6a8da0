"""The `identity` toolset: who is signed in, from the grant's claims (works with every IdP)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...domain.tools import ToolContext, ToolResult, ToolSpec

WHOAMI = ToolSpec(
    name="whoami",
    title="Who am I",
    description="Returns the signed-in user's subject, username, display name and email.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
    required_scopes=("User.Read",),
)


class IdentityToolset:
    name = "identity"

    def tools(self) -> Sequence[ToolSpec]:
        return (WHOAMI,)

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        grant = context.access.grant
        claims = grant.claims
        who = {
            "subject": grant.subject,
            "username": claims.get("preferred_username"),
            "name": claims.get("name"),
            "email": claims.get("email"),
        }
        known = {label: value for label, value in who.items() if value}
        return ToolResult(text="\n".join(f"{label}: {value}" for label, value in known.items()), structured=known)
