"""/metrics (issue 11 §4): who may read it, and what it counts after a token flow.

In-process (Flask's test client) the metrics live in the process-wide default registry, shared
by every test in this process: each test compares values before and after what it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.config import load_settings

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient

METRICS_TOKEN = "scrape-secret-0123456789"
INTERNET = "203.0.113.7"
PROXY = "127.0.0.1"


def make_app(tmp_path: Path, **overrides: str) -> Flask:
    return create_app(load_settings(environment_for(tmp_path, **overrides), dotenv_path=None))


def scrape(client: FlaskClient, **environ: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = client.get("/metrics", environ_overrides={"REMOTE_ADDR": "127.0.0.1", **environ})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.headers["Content-Type"].startswith("text/plain")
    return parse(reply.get_data(as_text=True))


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- access ---------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> FlaskClient:
    # The proxy on loopback is trusted (FORWARDED_ALLOW_IPS default); 10/8 may scrape.
    return make_app(tmp_path, METRICS_ALLOWED_IPS="127.0.0.1,10.0.0.0/8", METRICS_TOKEN=METRICS_TOKEN).test_client()


def status(client: FlaskClient, peer: str, *, forwarded_for: str | None = None, authorization: str | None = None) -> int:
    headers = {}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    if authorization is not None:
        headers["Authorization"] = authorization
    reply = client.get("/metrics", headers=headers, environ_overrides={"REMOTE_ADDR": peer})
    if reply.status_code != 200:
        # Refusals say nothing about the metrics.
        assert "mcp_oauth_bridge" not in reply.get_data(as_text=True)
    return reply.status_code


def test_metrics_answer_an_allowed_address(guarded: FlaskClient) -> None:
    assert status(guarded, "127.0.0.1") == 200
    assert status(guarded, "10.1.2.3") == 200


def test_metrics_refuse_other_addresses(guarded: FlaskClient) -> None:
    assert status(guarded, INTERNET) == 403


def test_forwarded_for_from_an_untrusted_peer_is_ignored(guarded: FlaskClient) -> None:
    assert status(guarded, INTERNET, forwarded_for="127.0.0.1") == 403


def test_behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_judged(guarded: FlaskClient) -> None:
    # An internet request through the proxy on loopback is not local.
    assert status(guarded, PROXY, forwarded_for=INTERNET) == 403
    # What the client wrote itself (left of the hop the proxy appended) proves nothing.
    assert status(guarded, PROXY, forwarded_for=f"10.1.2.3, {INTERNET}") == 403
    assert status(guarded, PROXY, forwarded_for=f"{INTERNET}, 10.1.2.3") == 200
    # A hop that is not an address: the client cannot be told, so it is refused.
    assert status(guarded, PROXY, forwarded_for="junk") == 403


def test_the_bearer_token_opens_metrics_from_anywhere(guarded: FlaskClient) -> None:
    assert status(guarded, INTERNET, authorization=f"Bearer {METRICS_TOKEN}") == 200
    assert status(guarded, INTERNET, authorization=f"Bearer {METRICS_TOKEN}x") == 401
    # A wrong token is refused even from an allowed address.
    assert status(guarded, "127.0.0.1", authorization="Bearer wrong-token") == 401


def test_without_a_configured_token_no_bearer_is_accepted(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    assert status(client, INTERNET, authorization="Bearer ") == 401
    assert status(client, "127.0.0.1") == 200
    assert status(client, INTERNET) == 403


# -- what is counted ------------------------------------------------------------------------------


def test_a_token_flow_is_counted(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    client = app.test_client()
    before = scrape(client)
    oauth = OAuthClient(FlaskTransport(client))
    assert oauth.register().status == 201
    code, verifier = oauth.login()
    issued = oauth.exchange(code, verifier)
    assert issued.status == 200
    # The same code again: a replay, which revokes the grant.
    assert oauth.exchange(code, verifier).status == 400

    code, verifier = oauth.login()
    first = oauth.exchange(code, verifier).json()["refresh_token"]
    second = oauth.refresh(first)
    assert second.status == 200
    # Its successor used: the rotated token again is reuse, which revokes that grant too.
    assert oauth.refresh(second.json()["refresh_token"]).status == 200
    assert oauth.refresh(first).status == 400

    code, verifier = oauth.login()
    assert oauth.exchange(code, verifier).status == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mcp_oauth_bridge_tokens_issued_total", grant_type="authorization_code") == 3
    assert delta("mcp_oauth_bridge_tokens_issued_total", grant_type="refresh_token") == 2
    assert delta("mcp_oauth_bridge_code_replay_total") == 1
    assert delta("mcp_oauth_bridge_refresh_token_reuse_total") == 1
    upstream = {"provider": "fake", "operation": "exchange_code", "outcome": "ok"}
    assert delta("mcp_oauth_bridge_upstream_request_duration_seconds_count", **upstream) == 3
    requests = {"endpoint": "token.token", "method": "POST"}
    assert delta("mcp_oauth_bridge_http_request_duration_seconds_count", status="200", **requests) == 5
    assert delta("mcp_oauth_bridge_http_request_duration_seconds_count", status="400", **requests) == 2
    # Every observation falls in the +Inf bucket.
    assert delta("mcp_oauth_bridge_http_request_duration_seconds_bucket", status="200", le="+Inf", **requests) == 5
    # Three grants made, two revoked (replay, reuse): one live, read from this app's storage.
    assert value(after, "mcp_oauth_bridge_live_grants") == 1


def test_paths_no_view_answers_share_one_label(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    before = scrape(client)
    for path in ("/nope-1", "/nope-2?code=secret"):
        assert client.get(path).status_code == 404
    after = scrape(client)
    labels = {"endpoint": "unmatched", "method": "GET", "status": "404"}
    name = "mcp_oauth_bridge_http_request_duration_seconds_count"
    assert value(after, name, **labels) - value(before, name, **labels) == 2
    assert not any("nope" in str(key) or "secret" in str(key) for key in after)


def test_rate_limit_hits_are_counted(tmp_path: Path) -> None:
    client = make_app(tmp_path, RATE_LIMITS="on", RATE_LIMIT_REGISTER="1/minute").test_client()
    before = scrape(client)
    oauth = OAuthClient(FlaskTransport(client))
    assert oauth.register().status == 201
    assert oauth.register().status == 429
    after = scrape(client)
    name = "mcp_oauth_bridge_rate_limit_hits_total"
    assert value(after, name, limit="register") - value(before, name, limit="register") == 1




def test_a_new_process_first_requests_arriving_together_make_the_metrics_once() -> None:
    # A fresh worker's first requests come on several threads at once; each needs the metrics.
    import subprocess
    import sys

    script = (
        "import threading\n"
        "from mcp_oauth_bridge.adapters.metrics import metrics\n"
        "barrier = threading.Barrier(16)\n"
        "made, errors = [], []\n"
        "def first():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        made.append(metrics())\n"
        "    except Exception as exc:\n"
        "        errors.append(repr(exc))\n"
        "threads = [threading.Thread(target=first) for _ in range(16)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "assert not errors, errors\n"
        "assert len({id(m) for m in made}) == 1\n"
        "print('once')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "once"
