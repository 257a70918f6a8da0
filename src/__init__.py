"""mcp-oauth-bridge: an OAuth 2.1 authorization server and protected MCP endpoint."""
