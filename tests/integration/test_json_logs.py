"""LOG_FORMAT=json (issue 11 §4): one JSON object per line, with the request id, taken from
X-Request-ID only when a trusted proxy (FORWARDED_ALLOW_IPS) sends a sane one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for

log = logging.getLogger("mcp_oauth_bridge.tests.json_logs")


def json_app(tmp_path: Path) -> Flask:
    app = create_app(load_settings(environment_for(tmp_path, LOG_FORMAT="json"), dotenv_path=None))

    # A view that logs, as the real ones do, with an exception attached.
    @app.get("/test-log")
    def test_log() -> str:
        try:
            raise ValueError("boom")
        except ValueError:
            log.warning("something to say", exc_info=True)
        return "logged"

    return app


def logged_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    # Every line is one JSON object.
    return [json.loads(line) for line in lines]


def our_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    [line] = [line for line in lines if line.get("message") == "something to say"]
    return line


def test_json_lines_carry_a_trusted_proxys_request_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = json_app(tmp_path).test_client()
    capsys.readouterr()
    reply = client.get("/test-log", headers={"X-Request-ID": "proxy-id-42"}, environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
    assert reply.headers["X-Request-ID"] == "proxy-id-42"
    line = our_line(logged_lines(capsys.readouterr().err))
    assert line["request_id"] == "proxy-id-42"
    assert line["level"] == "WARNING"
    assert line["logger"] == "mcp_oauth_bridge.tests.json_logs"
    assert "ValueError: boom" in line["exc_info"]
    assert line["time"].endswith("Z")


def test_an_untrusted_clients_request_id_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = json_app(tmp_path).test_client()
    capsys.readouterr()
    reply = client.get("/test-log", headers={"X-Request-ID": "client-chosen"}, environ_overrides={"REMOTE_ADDR": "203.0.113.9"})
    generated = reply.headers["X-Request-ID"]
    assert generated != "client-chosen"
    assert our_line(logged_lines(capsys.readouterr().err))["request_id"] == generated


def test_an_insane_request_id_from_a_trusted_proxy_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = json_app(tmp_path).test_client()
    for offered in ("a" * 129, "two words", 'quote"'):
        reply = client.get("/test-log", headers={"X-Request-ID": offered}, environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
        assert reply.headers["X-Request-ID"] != offered
        assert len(reply.headers["X-Request-ID"]) == 32


def test_text_is_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Creating the app configures the log (as under plain gunicorn).
    create_app(load_settings(environment_for(tmp_path), dotenv_path=None))
    capsys.readouterr()
    log.info("a text line")
    err = capsys.readouterr().err
    assert "INFO mcp_oauth_bridge.tests.json_logs: a text line\n" in err


def test_text_lines_in_a_request_end_with_its_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(load_settings(environment_for(tmp_path), dotenv_path=None))

    @app.get("/test-log")
    def test_log() -> str:
        log.info("inside")
        return "logged"

    capsys.readouterr()
    reply = app.test_client().get("/test-log", headers={"X-Request-ID": "abc-1"}, environ_overrides={"REMOTE_ADDR": "127.0.0.1"})
    assert reply.headers["X-Request-ID"] == "abc-1"
    assert "INFO mcp_oauth_bridge.tests.json_logs: inside [request abc-1]\n" in capsys.readouterr().err
