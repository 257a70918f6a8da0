"""MCP toolsets behind the domain's Toolset port."""
