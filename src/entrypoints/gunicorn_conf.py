"""gunicorn defaults (overridable with GUNICORN_* style environment variables or flags).

The worker (``worker.BufferingWorker``) buffers each request whole in its event loop, under
deadlines and size caps, before one of ``threads`` threads serves it: slow clients cost no
thread, slow upstream calls one each (see the worker's docstring and ``serving_limits``).
"""

from __future__ import annotations

import os

from .config import DEFAULT_FORWARDED_ALLOW_IPS
from .worker import serving_limits

# Read (and validated) here so that a wrong value stops the server at start-up, naming the variable.
_limits = serving_limits(os.environ)

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "mcp_oauth_bridge.entrypoints.worker.BufferingWorker"
# Threads per worker: enough for a burst of tool calls held by a slow upstream API (each holds
# one for up to the Graph client's 15 s timeout) with room left for everything else.
threads = _limits.threads
# Open connections per worker (idle kept-alive ones are closed first when it is full).
worker_connections = _limits.connections
# Idle kept-alive connections cost a socket and a buffer, no thread: keep them longer than a
# proxy's own idle timeout for its upstream connections (nginx and most load balancers: 60 s),
# so that the proxy, not this server, closes them and never sends a request into a close.
keepalive = _limits.keepalive
timeout = 60
graceful_timeout = 30
# Trust X-Forwarded-* only from a proxy on this machine.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS)
accesslog = "-"
# The request path without its query string: codes, states and upstream codes travel in
# query strings and must never reach the logs.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'
# LOG_FORMAT=json: gunicorn's own lines (start-up, workers, the access log) as JSON objects too,
# as the application's are (adapters/logs.py, installed by the app factory on the root logger,
# which is why the root gets no handler here and gunicorn's loggers do not propagate to it).
if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "mcp_oauth_bridge.adapters.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False, "qualname": "gunicorn.access"},
            "gunicorn.error": {"handlers": ["error_console"], "level": "INFO", "propagate": False, "qualname": "gunicorn.error"},
        },
        "root": {"handlers": []},
    }
# gunicorn >= 24 opens a control socket at one fixed path in $HOME; several instances on one
# machine would fight over it, and nothing here uses it.
control_socket_disable = True


# -- Prometheus multiprocess mode (issue 11 §4) --------------------------------------------------
# Every worker counts into files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them up. The
# master sets the variable before any worker starts (workers import prometheus_client only on
# first use, after the fork, so they all see it), wipes what an earlier run left (stale files
# would count again), marks each exited worker dead, and removes a directory it made itself.
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_made_multiproc_dir: list[str] = []


def on_starting(server: object) -> None:
    import tempfile

    directory = os.environ.get(_MULTIPROC_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        # Only prometheus_client's own files: the directory may hold other things.
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(".db") and os.path.isfile(path):
                os.unlink(path)
    else:
        directory = tempfile.mkdtemp(prefix="mcp-oauth-bridge-metrics-")
        _made_multiproc_dir.append(directory)
        os.environ[_MULTIPROC_ENV] = directory


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    # Its live-gauge files go; its counters and histograms stay counted.
    multiprocess.mark_process_dead(getattr(worker, "pid"))  # type: ignore[no-untyped-call]


def on_exit(server: object) -> None:
    import shutil

    for directory in _made_multiproc_dir:
        shutil.rmtree(directory, ignore_errors=True)
