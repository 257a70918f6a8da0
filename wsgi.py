from mcp_oauth_bridge.entrypoints.app import create_app

app = create_app()
