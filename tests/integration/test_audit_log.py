"""The audit log over HTTP (issue 11 §3): a whole flow writes one JSON object per line to
AUDIT_LOG_FILE, each with time, event, client id, client address and request id; no line holds
a token, code, secret, verifier, state, nonce or upstream token that the flow saw."""

from __future__ import annotations

import json
import logging
import secrets
from collections import Counter
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, g

from mcp_oauth_bridge.adapters.audit_log import AUDIT_LOGGER, JsonAuditLog
from mcp_oauth_bridge.adapters.http.request_context import request_id
from mcp_oauth_bridge.domain.audit import AuditEvent
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.cli import main as cli_main
from mcp_oauth_bridge.entrypoints.config import ConfigError, load_settings

from .conftest import environment_for
from .oauth_flow import REDIRECT_URI, FlaskTransport, OAuthClient, Reply, hidden_fields, pkce_pair

# The client's address as a trusted proxy on loopback reports it (FORWARDED_ALLOW_IPS' default).
CLIENT_ADDRESS = "203.0.113.7"
REQUIRED_FIELDS = ("time", "event", "client_id", "subject", "grant_id", "client_address", "request_id")


def build_app(tmp_path: Path, **overrides: str) -> Flask:
    env = environment_for(tmp_path / "data", **overrides)
    return create_app(load_settings(env, dotenv_path=None))


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def audited_app(tmp_path: Path, audit_file: Path) -> Iterator[Flask]:
    app = build_app(
        tmp_path,
        AUDIT_LOG_FILE=str(audit_file),
        # Limits on, generous for the flow, small where the test exceeds them.
        RATE_LIMITS="on",
        RATE_LIMIT_REGISTER="3/minute",
        RATE_LIMIT_INTROSPECT="1/minute",
    )
    yield app
    app.extensions["container"].storage_admin().close()


class SecretCollector:
    """Every secret value the test client and its browser received or sent."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, str) and value:
                self.values.add(value)

    def add_query(self, url: str) -> None:
        for name, values in parse_qs(urlsplit(url).query).items():
            if name not in ("error", "error_description", "client_id", "redirect_uri", "response_type", "code_challenge_method", "scope", "iss", "resource"):
                self.add(*values)

    def add_tokens(self, reply: Reply) -> dict[str, Any]:
        assert reply.status == 200, reply.text
        body: dict[str, Any] = reply.json()
        self.add(body["access_token"], body.get("refresh_token"))
        return body


class AuditedFlow:
    def __init__(self, app: Flask) -> None:
        test_client = app.test_client()
        # Every request comes through a proxy on loopback that names the client.
        test_client.environ_base["HTTP_X_FORWARDED_FOR"] = CLIENT_ADDRESS
        self.http = FlaskTransport(test_client)
        self.secrets = SecretCollector()

    def register(self) -> OAuthClient:
        oauth = OAuthClient(self.http)
        reply = oauth.register()
        assert reply.status == 201, reply.text
        self.secrets.add(oauth.client_secret, oauth.registration["registration_access_token"])
        return oauth

    def to_idp(self, oauth: OAuthClient, decision: str) -> tuple[Reply, str]:
        verifier, challenge = pkce_pair()
        state = "st-" + secrets.token_urlsafe(16)
        self.secrets.add(verifier, challenge, state)
        page = oauth.authorize(challenge, state=state)
        assert page.status == 200, page.text
        self.secrets.add(*hidden_fields(page.text).values())
        answer = oauth.consent(page, decision)
        assert answer.status in (302, 303), answer.text
        self.secrets.add_query(answer.location)
        return answer, verifier

    def login(self, oauth: OAuthClient) -> tuple[str, str]:
        to_idp, verifier = self.to_idp(oauth, "approve")
        to_callback = oauth.fake_sign_in(to_idp, "alice")
        assert to_callback.status == 303, to_callback.text
        self.secrets.add_query(to_callback.location)
        back = self.http.get(to_callback.location)
        assert back.status == 302, back.text
        self.secrets.add_query(back.location)
        return back.query()["code"], verifier

    def cancelled_sign_in(self, oauth: OAuthClient) -> None:
        to_idp, _ = self.to_idp(oauth, "approve")
        page = self.http.get(to_idp.location)
        form = {**hidden_fields(page.text), "action": "cancel"}
        to_callback = self.http.post(urlsplit(to_idp.location).path, data=form)
        assert to_callback.status == 303, to_callback.text
        self.secrets.add_query(to_callback.location)
        back = self.http.get(to_callback.location)
        assert back.status == 302 and back.query()["error"] == "access_denied", back.text


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert all(isinstance(event, dict) for event in events)
    return events


def test_a_full_flow_is_audited_without_a_secret(audited_app: Flask, audit_file: Path) -> None:
    flow = AuditedFlow(audited_app)
    http = flow.http

    # Registration, update and deletion through the configuration endpoint (RFC 7591, 7592).
    oauth = flow.register()
    configuration = {"Authorization": "Bearer " + oauth.registration["registration_access_token"]}
    updated = http.client.put(
        urlsplit(oauth.registration["registration_client_uri"]).path,
        json={"client_id": oauth.client_id, "client_secret": oauth.client_secret, "client_name": "Renamed",
              "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"},
        headers=configuration,
    )
    assert updated.status_code == 200, updated.get_data(as_text=True)
    doomed = flow.register()
    deleted = http.client.delete(
        urlsplit(doomed.registration["registration_client_uri"]).path,
        headers={"Authorization": "Bearer " + doomed.registration["registration_access_token"]},
    )
    assert deleted.status_code == 204

    # Consent denied; sign-in cancelled at the identity provider.
    denied, _ = flow.to_idp(oauth, "deny")
    assert parse_qs(urlsplit(denied.location).query)["error"] == ["access_denied"]
    flow.cancelled_sign_in(oauth)

    # Grant 1: code exchange, two refreshes, then the first refresh token again (reuse).
    code, verifier = flow.login(oauth)
    first = flow.secrets.add_tokens(oauth.exchange(code, verifier))
    second = flow.secrets.add_tokens(oauth.refresh(first["refresh_token"]))
    flow.secrets.add_tokens(oauth.refresh(second["refresh_token"]))
    reused = oauth.refresh(first["refresh_token"])
    assert reused.status == 400 and reused.json()["error"] == "invalid_grant"

    # Grant 2: its code redeemed twice.
    code, verifier = flow.login(oauth)
    flow.secrets.add_tokens(oauth.exchange(code, verifier))
    replayed = oauth.exchange(code, verifier)
    assert replayed.status == 400 and replayed.json()["error"] == "invalid_grant"

    # Grant 3: the client revokes its refresh token.
    code, verifier = flow.login(oauth)
    third = flow.secrets.add_tokens(oauth.exchange(code, verifier))
    assert oauth.revoke(third["refresh_token"]).status == 200

    # Rate limits: one per client (introspection), one per address (registration).
    assert oauth.http.post("/oauth/introspect", data={**oauth._auth(), "token": third["access_token"]}).status == 200
    assert oauth.http.post("/oauth/introspect", data={**oauth._auth(), "token": third["access_token"]}).status == 429
    assert flow.register()  # the third registration this minute
    assert OAuthClient(http).register().status == 429

    events = read_lines(audit_file)
    for event in events:
        assert set(REQUIRED_FIELDS) <= set(event), event
        assert event["time"].endswith("Z") and event["time"][:4].isdigit()
        assert event["client_address"] == CLIENT_ADDRESS
        assert isinstance(event["request_id"], str) and len(event["request_id"]) >= 16

    counts = Counter(event["event"] for event in events)
    assert counts == Counter({
        "client_registered": 3,
        "client_updated": 1,
        "client_deleted": 1,
        "consent_denied": 1,
        "consent_approved": 4,
        "upstream_sign_in_failed": 1,
        "upstream_sign_in_succeeded": 3,
        "grant_created": 3,
        "refresh_token_reuse": 1,
        "code_replay": 1,
        "grant_revoked": 3,
        "rate_limit_hit": 2,
    }), counts

    by_name = {event["event"]: event for event in events}
    assert by_name["client_deleted"]["client_id"] == doomed.client_id
    assert by_name["upstream_sign_in_failed"]["upstream_error"] == "access_denied"
    grants = [event["grant_id"] for event in events if event["event"] == "grant_created"]
    assert len(set(grants)) == 3
    revoked = {event["grant_id"]: event["reason"] for event in events if event["event"] == "grant_revoked"}
    assert revoked == {grants[0]: "refresh_token_reuse", grants[1]: "code_replay", grants[2]: "client_revocation"}
    # The subject is the grant's: the upstream's stable identifier (sub), never a name or address.
    container = audited_app.extensions["container"]
    for event in events:
        if event["grant_id"]:
            grant = container.grants().get_grant(event["grant_id"])
            assert event["subject"] == grant.subject
            assert event["subject"] not in {str(value) for value in grant.claims.values()}
    hits = sorted((event["limit"], event["client_id"]) for event in events if event["event"] == "rate_limit_hit")
    assert hits == [("introspect", None), ("register", None)]
    # The events of one request share its id; different requests have different ids.
    replay_ids = {event["request_id"] for event in events if event["event"] in ("code_replay",) or event.get("reason") == "code_replay"}
    assert len(replay_ids) == 1
    assert len({event["request_id"] for event in events if event["event"] == "client_registered"}) == 3

    # The upstream tokens the server holds for each grant (never seen by the client) too.
    for grant_id in grants:
        upstream = container.upstream_token_store().get_upstream_tokens(grant_id)
        if upstream is not None:
            flow.secrets.add(upstream.access_token, upstream.refresh_token, upstream.id_token)
    text = audit_file.read_text(encoding="utf-8")
    assert len(flow.secrets.values) > 40
    leaked = sorted(value for value in flow.secrets.values if value in text)
    assert leaked == []


def test_without_audit_log_file_the_events_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = build_app(tmp_path)
    try:
        flow = AuditedFlow(app)
        oauth = flow.register()
        captured = capsys.readouterr()
    finally:
        app.extensions["container"].storage_admin().close()
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert [(line["event"], line["client_id"], line["client_address"]) for line in lines] == [
        ("client_registered", oauth.client_id, CLIENT_ADDRESS)
    ]
    assert captured.out == ""
    assert oauth.client_secret and oauth.client_secret not in captured.err


# -- the adapter and its configuration ------------------------------------------------------------


def test_outside_a_request_the_http_facts_are_null_and_the_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"event":"earlier"}\n', encoding="utf-8")
    trail = JsonAuditLog(path=str(path), forwarded_allow_ips=("127.0.0.1",))
    trail.record(AuditEvent(event="grant_revoked", client_id="c1", subject="s1", grant_id="g1", reason="operator"))
    earlier, line = read_lines(path)
    assert earlier == {"event": "earlier"}
    assert {name: value for name, value in line.items() if name != "time"} == {
        "event": "grant_revoked", "client_id": "c1", "subject": "s1", "grant_id": "g1",
        "client_address": None, "request_id": None, "reason": "operator",
    }


def test_audit_lines_do_not_reach_the_root_handlers(tmp_path: Path) -> None:
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    handler = Collect()
    root.addHandler(handler)
    try:
        JsonAuditLog(path=str(tmp_path / "audit.log"), forwarded_allow_ips=()).record(AuditEvent(event="client_deleted"))
    finally:
        root.removeHandler(handler)
    assert [record for record in seen if record.name == AUDIT_LOGGER] == []
    assert [line["event"] for line in read_lines(tmp_path / "audit.log")] == ["client_deleted"]


def test_a_request_id_set_by_a_middleware_is_the_one_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    trail = JsonAuditLog(path=str(path), forwarded_allow_ips=("127.0.0.1",))
    app = Flask("audit-test")
    with app.test_request_context("/x", environ_base={"REMOTE_ADDR": "198.51.100.9"}):
        g.request_id = "from-the-middleware"
        trail.record(AuditEvent(event="consent_denied", client_id="c1"))
    with app.test_request_context("/x", environ_base={"REMOTE_ADDR": "2001:db8::1"}):
        trail.record(AuditEvent(event="consent_denied", client_id="c1"))
        generated = request_id()
    first, second = read_lines(path)
    assert (first["request_id"], first["client_address"]) == ("from-the-middleware", "198.51.100.9")
    # Generated once per request and kept; an IPv6 client as the rate limits count it (its /64).
    assert (second["request_id"], second["client_address"]) == (generated, "2001:db8::/64")


def test_audit_log_file_is_validated_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    settings = load_settings(environment_for(tmp_path / "data", AUDIT_LOG_FILE=str(path)), dotenv_path=None)
    assert settings.audit_log_file == str(path) and not path.exists()
    assert load_settings(environment_for(tmp_path / "data"), dotenv_path=None).audit_log_file is None
    for bad in (str(tmp_path), str(tmp_path / "missing" / "audit.log")):
        with pytest.raises(ConfigError, match="AUDIT_LOG_FILE"):
            load_settings(environment_for(tmp_path / "data", AUDIT_LOG_FILE=bad), dotenv_path=None)


def test_clients_add_records_a_client_registered_by_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_file = tmp_path / "audit.log"
    monkeypatch.delenv("STORAGE_URL", raising=False)
    for name, value in environment_for(tmp_path / "data", AUDIT_LOG_FILE=str(audit_file)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["clients", "add", "--name", "Ops", "--redirect-uri", "https://claude.ai/api/mcp/auth_callback", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    (line,) = read_lines(audit_file)
    assert (line["event"], line["client_id"], line["reason"]) == ("client_registered", created["client_id"], "operator")
    # Not an HTTP request: no address, no request id.
    assert (line["client_address"], line["request_id"]) == (None, None)
    assert created["client_secret"] not in audit_file.read_text(encoding="utf-8")


@pytest.mark.slow
def test_under_gunicorn_the_workers_write_to_the_file_not_the_server_log(tmp_path: Path) -> None:
    import requests

    from .servers import running_server

    audit_file = tmp_path / "audit.log"
    with running_server(tmp_path, workers=2, AUDIT_LOG_FILE=str(audit_file)) as server:
        registered = set()
        for _ in range(20):
            reply = requests.post(
                server.base_url + "/oauth/register",
                json={"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"},
                timeout=10,
            )
            assert reply.status_code == 201, reply.text
            registered.add(reply.json()["client_id"])
        log_text = server.log_text()
    lines = read_lines(audit_file)
    assert {line["client_id"] for line in lines} == registered and len(lines) == 20
    assert {(line["event"], line["client_address"]) for line in lines} == {("client_registered", "127.0.0.1")}
    # Routed to the file only: the server's own log does not carry them.
    assert '"event":"client_registered"' not in log_text
