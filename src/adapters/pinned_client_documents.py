"""Client ID metadata documents shipped with the project (``client_documents/*.json``): Claude's,
used when its live fetch fails (claude.ai's edge answers some datacenter addresses with a 403
challenge) or, with CIMD_PINNED_ONLY, instead of fetching at all. Each is validated like a
fetched one (``domain.client_documents``) whenever it is used."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

PACKAGE = "mcp_oauth_bridge.adapters"
DIRECTORY = "client_documents"
CLAUDE_CLIENT_ID = "https://claude.ai/oauth/mcp-oauth-client-metadata"


def load_pinned_documents() -> dict[str, dict[str, Any]]:
    """The shipped documents by client id."""
    documents: dict[str, dict[str, Any]] = {}
    for entry in sorted(resources.files(PACKAGE).joinpath(DIRECTORY).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            documents[document["client_id"]] = document
    return documents
