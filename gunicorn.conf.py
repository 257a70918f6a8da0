# gunicorn settings for `gunicorn wsgi:app`; the same defaults serve `mcp-oauth-bridge serve`.
from mcp_oauth_bridge.entrypoints.gunicorn_conf import *  # noqa: F401,F403
