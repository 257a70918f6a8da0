"""gunicorn defaults (overridable with GUNICORN_* style environment variables or flags)."""

from __future__ import annotations

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = 60
graceful_timeout = 30
# Trust X-Forwarded-* only from a proxy on this machine.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
# The request path without its query string: codes, states and upstream codes travel in
# query strings and must never reach the logs.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
# gunicorn >= 24 opens a control socket at one fixed path in $HOME; several instances on one
# machine would fight over it, and nothing here uses it.
control_socket_disable = True
