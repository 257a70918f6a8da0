"""Checks of MCP messages against the official per-revision models of ``mcp-types``."""

from __future__ import annotations

from typing import Any

from mcp_types import _v2025_11_25 as legacy_types
from mcp_types import _v2026_07_28 as modern_types
from pydantic import BaseModel

__all__ = ["conforms", "legacy_types", "modern_types"]


def conforms(model: type[BaseModel], data: Any) -> None:
    """``data`` validates against ``model`` and says nothing the model does not know: dumping the
    parsed model gives the same JSON back (the models ignore unknown fields)."""
    parsed = model.model_validate(data)
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == data
