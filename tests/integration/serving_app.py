"""A tiny WSGI application for testing the serving worker alone (gunicorn -c gunicorn.conf.py
tests.integration.serving_app:app): what the worker hands an application, and what it does
with slow, failing and large answers."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/echo":
        return _echo(environ, start_response)
    if path == "/slow":
        time.sleep(float(query.get("seconds", "1")))
        return _text(start_response, "slept\n")
    if path == "/spin":
        # CPU-bound for a while (holding the GIL but for the interpreter's switches).
        started = time.monotonic()
        while time.monotonic() - started < float(query.get("seconds", "0.05")):
            pass
        return _text(start_response, json.dumps({"started": started, "ended": time.monotonic()}), "application/json")
    if path == "/boom":
        raise RuntimeError("the application failed on purpose")
    if path == "/big":
        size = int(query.get("bytes", "1000000"))
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return [b"x" * size]
    return _text(start_response, "ok\n")


def _echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    # PEP 3333 as the application's own reader does: by Content-Length, or to the end of a
    # stream the server marks terminated.
    body = stream.read(int(length)) if length else (stream.read() if environ.get("wsgi.input_terminated") else b"")
    reply = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "body": body.decode("latin-1"),
        "content_length": length,
        "input_terminated": environ.get("wsgi.input_terminated"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "multithread": environ.get("wsgi.multithread"),
        "expect": environ.get("HTTP_EXPECT"),
    }
    return _text(start_response, json.dumps(reply), "application/json")


def _text(start_response: StartResponse, text: str, content_type: str = "text/plain") -> Iterable[bytes]:
    payload = text.encode()
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
    return [payload]
