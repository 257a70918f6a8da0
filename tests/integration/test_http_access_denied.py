"""The page a person outside the access policy sees after signing in (issue 11 §1): 403, says
they are not allowed and whom to ask, links back to the client with ``access_denied``."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dependency_injector import providers
from flask import Flask

from mcp_oauth_bridge.domain.access_policy import parse_required_claims
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import build_container

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient, pkce_pair


def _app(tmp_path: Path) -> Flask:
    settings = load_settings(environment_for(tmp_path), dotenv_path=None)
    container = build_container(settings)
    # The fake IdP has no policy variables of its own; its claims stand in for a provider's.
    policy = replace(
        container.policy(),
        access_policy=parse_required_claims("preferred_username=alice"),
        access_denied_contact="the IT service desk (it@example.com)",
    )
    container.policy.override(providers.Object(policy))
    return create_app(settings, container=container)


def _sign_in(oauth: OAuthClient, username: str) -> tuple[int, str, str | None]:
    _, challenge = pkce_pair()
    page = oauth.authorize(challenge, state="client-state")
    to_callback = oauth.fake_sign_in(oauth.consent(page), username)
    back = oauth.http.get(to_callback.location)
    return back.status, back.text, back.headers.get("Location")


def test_a_person_outside_the_policy_gets_the_page_and_the_client_access_denied(tmp_path: Path) -> None:
    oauth = OAuthClient(FlaskTransport(_app(tmp_path).test_client()))
    assert oauth.register().status == 201
    status, text, location = _sign_in(oauth, "mallory")
    assert status == 403
    assert location is None
    assert "You are not allowed to connect" in text
    assert "the IT service desk (it@example.com)" in html.unescape(text)
    link = re.search(r'<a href="([^"]+)">Return to the application', text)
    assert link is not None
    back = urlsplit(html.unescape(link.group(1)))
    assert f"{back.scheme}://{back.netloc}{back.path}" == oauth.redirect_uri
    query = parse_qs(back.query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["client-state"]


def test_a_person_inside_the_policy_gets_a_code(tmp_path: Path) -> None:
    oauth = OAuthClient(FlaskTransport(_app(tmp_path).test_client()))
    assert oauth.register().status == 201
    status, _, location = _sign_in(oauth, "alice")
    assert status == 302
    assert location is not None and "code" in parse_qs(urlsplit(location).query)
