"""A database that fails mid-request (after the schema check passed): 503 with Retry-After
(RFC 9110 §15.6.4, §10.2.3); the OAuth error ``temporarily_unavailable`` (RFC 6749 §5.2) on the
API endpoints, the error page on the browser steps; the cause in the log, and nothing secret."""

from __future__ import annotations

import logging
from pathlib import Path

from typing import Any

import pytest
from flask import Flask

from mcp_oauth_bridge.adapters.http.errors import RETRY_AFTER_SECONDS, oauth_error_response
from mcp_oauth_bridge.domain.errors import TemporarilyUnavailable
from mcp_oauth_bridge.entrypoints.config import Settings

from .oauth_flow import FlaskTransport, OAuthClient, Reply, pkce_pair
from .test_mcp_http import modern_call

CAUSE = "unable to open database file"


def take_database_away(app: Flask, settings: Settings) -> None:
    """The database goes away under the running app (its volume unmounted, say): every
    connection is closed and the file is replaced by something SQLite cannot open."""
    app.extensions["container"].storage_admin().close()
    path = Path(settings.sqlite_path)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    path.mkdir()


def assert_retry_later(reply: Reply) -> None:
    assert reply.status == 503, reply.text
    retry_after = reply.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) > 0, retry_after
    assert reply.headers["Cache-Control"] == "no-store"


def assert_oauth_error(reply: Reply) -> None:
    assert_retry_later(reply)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"] == "temporarily_unavailable"


def assert_error_page(reply: Reply) -> None:
    assert_retry_later(reply)
    assert reply.headers["Content-Type"].startswith("text/html")
    assert "Try again in a moment" in reply.text


def assert_cause_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "storage failure" in r.getMessage()]
    assert len(failures) == 1, caplog.text
    assert CAUSE in failures[0]
    for secret in secrets:
        assert secret not in caplog.text


# -- API endpoints: JSON ------------------------------------------------------------------------


def test_registration_while_the_database_is_down_is_a_503_to_retry(
    app: Flask, settings: Settings, http: FlaskTransport, caplog: pytest.LogCaptureFixture
) -> None:
    take_database_away(app, settings)
    reply = OAuthClient(http).register()
    assert_oauth_error(reply)
    assert_cause_logged(caplog)


def test_a_code_exchange_while_the_database_is_down_is_a_503_to_retry(
    app: Flask, settings: Settings, oauth: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    code, verifier = oauth.login()
    take_database_away(app, settings)
    reply = oauth.exchange(code, verifier)
    assert_oauth_error(reply)
    assert oauth.client_secret is not None
    assert_cause_logged(caplog, code, verifier, oauth.client_secret)


def test_an_mcp_call_while_the_database_is_down_is_a_503_to_retry(
    app: Flask, settings: Settings, tokens: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    take_database_away(app, settings)
    response = modern_call(app.test_client(), "tools/list", token=tokens["access_token"])
    assert_oauth_error(Reply(response.status_code, response.headers, response.get_data(as_text=True)))
    assert_cause_logged(caplog, tokens["access_token"])


# -- browser steps: the error page --------------------------------------------------------------


def test_the_authorization_page_while_the_database_is_down_is_a_503_page(
    app: Flask, settings: Settings, oauth: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    take_database_away(app, settings)
    reply = oauth.authorize(pkce_pair()[1])
    assert_error_page(reply)
    assert_cause_logged(caplog)


def test_consent_while_the_database_is_down_is_a_503_page(
    app: Flask, settings: Settings, oauth: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    page = oauth.authorize(pkce_pair()[1])
    assert page.status == 200, page.text
    take_database_away(app, settings)
    reply = oauth.consent(page)
    assert_error_page(reply)
    assert_cause_logged(caplog)


def test_the_upstream_callback_while_the_database_is_down_is_a_503_page(
    app: Flask, settings: Settings, oauth: OAuthClient, caplog: pytest.LogCaptureFixture
) -> None:
    page = oauth.authorize(pkce_pair()[1])
    to_callback = oauth.fake_sign_in(oauth.consent(page))
    assert to_callback.status == 303, to_callback.text
    take_database_away(app, settings)
    reply = oauth.http.get(to_callback.location)
    assert_error_page(reply)
    code = to_callback.query()["code"]
    assert_cause_logged(caplog, code)


def test_every_temporarily_unavailable_answer_says_when_to_retry(app: Flask) -> None:
    # The token endpoint's 503 when the identity provider is down (the access policy's refresh
    # re-check) goes through the same mapping as storage outages.
    with app.test_request_context("/oauth/token", method="POST"):
        response = oauth_error_response(TemporarilyUnavailable("the identity provider is unavailable"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
