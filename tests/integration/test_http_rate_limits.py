"""Rate limits over HTTP (Flask test client, SQLite counters, a fixed clock): each limit answers
429 at limit + 1 with Retry-After and the right body, keyed by what it should be keyed by.

The shared test environment runs with RATE_LIMITS=off (conftest.environment_for); every app here
turns them on explicitly.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest
from dependency_injector import providers
from flask import Flask
from flask.testing import FlaskClient

from mcp_oauth_bridge.adapters.http.ratelimit import ClientAddresses, refresh_limit_key
from mcp_oauth_bridge.domain.refresh_tokens import refresh_token_value
from mcp_oauth_bridge.domain.security import TokenHasher
from mcp_oauth_bridge.entrypoints.app import create_app
from mcp_oauth_bridge.entrypoints.cli import main as cli_main
from mcp_oauth_bridge.entrypoints.config import load_settings
from mcp_oauth_bridge.entrypoints.container import build_container
from tests.fakes import FixedClock

from .conftest import environment_for
from .oauth_flow import FlaskTransport, OAuthClient
from .redis_server import empty_redis, redis_url  # noqa: F401
from .servers import free_port

MINUTE = 60
REGISTRATION = {"redirect_uris": ["http://127.0.0.1:9999/callback"], "token_endpoint_auth_method": "none"}
AppFactory = Callable[..., Flask]


@pytest.fixture
def clock() -> FixedClock:
    # Real time, so that tokens and the fake IdP's ID tokens look current, but moved by hand.
    return FixedClock(int(time.time()))


@pytest.fixture
def make_app(tmp_path: Path, clock: FixedClock) -> Iterator[AppFactory]:
    built: list[Flask] = []

    def make(name: str = "app", **overrides: str) -> Flask:
        env = environment_for(tmp_path / name, **{"RATE_LIMITS": "on", **overrides})
        settings = load_settings(env, dotenv_path=None)
        container = build_container(settings)
        container.clock.override(providers.Object(clock))
        app = create_app(settings, container=container)
        built.append(app)
        return app

    yield make
    for app in built:
        app.extensions["container"].storage_admin().close()


def register(client: FlaskClient, address: str = "127.0.0.1", forwarded_for: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return client.post("/register", json=REGISTRATION, headers=headers, environ_base={"REMOTE_ADDR": address})


def statuses(replies: list[Any]) -> list[int]:
    return [reply.status_code for reply in replies]


def assert_json_429(reply: Any, retry_after: int) -> None:
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == str(retry_after)
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["Cache-Control"] == "no-store"
    body = reply.get_json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"]


def assert_page_429(reply: Any, retry_after: int) -> None:
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == str(retry_after)
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers["Cache-Control"] == "no-store"
    assert "Too many requests" in reply.get_data(as_text=True)


def counter_rows(app: Flask) -> int:
    connection = app.extensions["container"].storage.database().connection()
    count: int = connection.execute("SELECT COUNT(*) FROM rate_limit_counters").fetchone()[0]
    return count


# -- registration, per address ------------------------------------------------------------------


def test_registration_is_limited_per_address_with_retry_after_in_whole_seconds(make_app: AppFactory, clock: FixedClock) -> None:
    client = make_app(RATE_LIMIT_REGISTER="3/minute").test_client()
    first = [register(client, "203.0.113.7") for _ in range(3)]
    clock.advance(10)
    limited = register(client, "203.0.113.7")
    assert statuses(first) == [201, 201, 201]
    # The window opened at the first request: 50 of its 60 seconds are left.
    assert_json_429(limited, retry_after=50)
    # Another address has its own budget; /oauth/register shares the same one.
    assert register(client, "203.0.113.8").status_code == 201
    assert client.post("/oauth/register", json=REGISTRATION, environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 429


def test_counters_expire_with_their_window(make_app: AppFactory, clock: FixedClock) -> None:
    client = make_app(RATE_LIMIT_REGISTER="2/minute").test_client()
    assert statuses([register(client, "203.0.113.7") for _ in range(3)]) == [201, 201, 429]
    clock.advance(MINUTE - 1)
    assert_json_429(register(client, "203.0.113.7"), retry_after=1)
    clock.advance(1)
    assert statuses([register(client, "203.0.113.7") for _ in range(3)]) == [201, 201, 429]


def test_expired_counters_are_purged_opportunistically_and_by_the_cli(
    make_app: AppFactory, clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(RATE_LIMIT_REGISTER="5/minute")
    client = app.test_client()
    for number in range(1, 4):
        register(client, f"198.51.100.{number}")
    assert counter_rows(app) == 3
    clock.advance(MINUTE + 1)
    register(client, "198.51.100.9")
    # The three ended windows went with the next hit after the purge interval.
    assert counter_rows(app) == 1

    # And `mcp-oauth-bridge purge` deletes what has ended since.
    for name, value in environment_for(tmp_path / "app").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(time, "time", lambda: float(clock.now() + MINUTE + 1))
    assert cli_main(["purge"]) == 0
    assert "  rate limit counters: 1\n" in capsys.readouterr().out
    assert counter_rows(app) == 0


# -- addresses through proxies ------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT_REGISTER="2/minute").test_client()
    replies = [register(client, "192.0.2.50", forwarded_for=f"203.0.113.{n}") for n in range(3)]
    # Varying the header does not buy fresh budgets: all three count as 192.0.2.50.
    assert statuses(replies) == [201, 201, 429]


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT_REGISTER="2/minute", FORWARDED_ALLOW_IPS="127.0.0.1,10.0.0.0/8").test_client()
    # The client forged the leftmost entry; our two proxies appended the rest.
    chain = [register(client, "10.0.0.2", forwarded_for=f"198.51.100.{n}, 203.0.113.9, 10.0.0.1") for n in range(3)]
    assert statuses(chain) == [201, 201, 429]
    assert register(client, "10.0.0.2", forwarded_for="203.0.113.10, 10.0.0.1").status_code == 201


def test_ipv6_clients_share_a_budget_per_64(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT_REGISTER="2/minute").test_client()
    same_64 = [register(client, f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert statuses(same_64) == [201, 201, 429]
    assert register(client, "2001:db8:1:3::1").status_code == 201


@pytest.mark.parametrize(
    ("environ", "trusted", "expected"),
    [
        ({"REMOTE_ADDR": "198.51.100.4"}, ("127.0.0.1",), "198.51.100.4"),
        # An untrusted peer's header is ignored.
        ({"REMOTE_ADDR": "198.51.100.4", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}, ("127.0.0.1",), "198.51.100.4"),
        # A trusted peer: the rightmost hop it did not vouch for.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.1"}, ("127.0.0.1",), "203.0.113.1"),
        ({"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "1.1.1.1,203.0.113.1,10.2.2.2,10.3.3.3"}, ("10.0.0.0/8",), "203.0.113.1"),
        # Every hop trusted: the leftmost is where the request began.
        ({"REMOTE_ADDR": "10.1.1.1", "HTTP_X_FORWARDED_FOR": "10.9.9.9, 10.2.2.2"}, ("10.0.0.0/8",), "10.9.9.9"),
        ({"REMOTE_ADDR": "127.0.0.1"}, ("127.0.0.1",), "127.0.0.1"),
        # Ports some proxies append, IPv6 brackets.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.1:51234"}, ("127.0.0.1",), "203.0.113.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "[2001:db8::1]:443"}, ("127.0.0.1",), "2001:db8::/64"),
        # IPv6 by /64; IPv4-mapped as IPv4.
        ({"REMOTE_ADDR": "2001:db8:aa:bb:1:2:3:4"}, ("127.0.0.1",), "2001:db8:aa:bb::/64"),
        ({"REMOTE_ADDR": "::ffff:198.51.100.4"}, ("127.0.0.1",), "198.51.100.4"),
        # Not an address where a trusted proxy should have written one: the peer.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.1, unknown"}, ("127.0.0.1",), "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "<script>"}, ("127.0.0.1",), "127.0.0.1"),
        # "*" trusts every peer.
        ({"REMOTE_ADDR": "198.51.100.4", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}, ("*",), "203.0.113.1"),
        # No trusted proxy at all (FORWARDED_ALLOW_IPS empty).
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}, (), "127.0.0.1"),
    ],
)
def test_client_address(environ: Mapping[str, str], trusted: tuple[str, ...], expected: str) -> None:
    assert ClientAddresses(trusted).resolve(environ) == expected


# -- browser steps, per address -----------------------------------------------------------------


def test_each_browser_step_is_limited_per_address_with_an_error_page(make_app: AppFactory, clock: FixedClock) -> None:
    client = make_app(RATE_LIMIT_AUTHORIZE="2/minute").test_client()
    browser = {"REMOTE_ADDR": "203.0.113.7"}
    steps: dict[str, Callable[[], Any]] = {
        "authorize": lambda: client.get("/authorize?client_id=unknown", environ_base=browser),
        "consent": lambda: client.post("/oauth/consent", data={"pending_id": "x", "csrf_token": "y", "decision": "approve"}, environ_base=browser),
        "callback": lambda: client.get("/oauth/callback?state=unknown&code=c", environ_base=browser),
    }
    for name, step in steps.items():
        replies = [step() for _ in range(3)]
        # Each step counts on its own: the earlier steps' requests left this one's budget whole.
        assert statuses(replies[:2]) == [400, 400], name
        assert_page_429(replies[2], retry_after=MINUTE)
    assert client.get("/oauth/authorize?client_id=unknown", environ_base={"REMOTE_ADDR": "203.0.113.8"}).status_code == 400
    assert client.get("/oauth/azure_callback?state=x", environ_base=browser).status_code == 429


# -- token endpoint, revocation, introspection -------------------------------------------------


def signed_in(app: Flask, *, public: bool = False) -> tuple[OAuthClient, dict[str, Any]]:
    oauth = OAuthClient(FlaskTransport(app.test_client()))
    metadata = {"token_endpoint_auth_method": "none"} if public else {}
    assert oauth.register(**metadata).status == 201
    code, verifier = oauth.login()
    reply = oauth.exchange(code, verifier)
    assert reply.status == 200, reply.text
    tokens: dict[str, Any] = reply.json()
    return oauth, tokens


def test_refresh_is_limited_per_grant_not_per_client(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_REFRESH="2/minute")
    oauth, first_grant = signed_in(app, public=True)
    code, verifier = oauth.login()
    second_grant = oauth.exchange(code, verifier).json()

    token = first_grant["refresh_token"]
    for _ in range(2):
        reply = oauth.refresh(token)
        assert reply.status == 200, reply.text
        token = reply.json()["refresh_token"]
    # Each refresh presents a new generation: they all spend their grant's budget.
    limited = oauth.refresh(token)
    assert limited.status == 429
    assert limited.json()["error"] == "temporarily_unavailable"
    assert limited.headers["Retry-After"] == str(MINUTE)
    # The same client's other grant has a budget of its own.
    assert oauth.refresh(second_grant["refresh_token"]).status == 200


def test_a_forged_refresh_token_does_not_spend_the_grant_it_names(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_REFRESH="1/minute")
    oauth, tokens = signed_in(app, public=True)
    named_part = tokens["refresh_token"].rpartition(".")[0]
    for letter in "ABC":
        assert oauth.refresh(f"{named_part}.{letter * 22}").json()["error"] == "invalid_grant"
    assert oauth.refresh(tokens["refresh_token"]).status == 200


def test_refresh_limit_key_names_the_grant_of_a_genuine_token_only() -> None:
    hasher = TokenHasher(b"k" * 32)
    genuine = refresh_token_value(hasher, grant_id="mob_gr_abc", generation=3, secret="s" * 43)
    assert refresh_limit_key(genuine, hasher) == "grant:mob_gr_abc"
    forged = refresh_limit_key(genuine.rpartition(".")[0] + "." + "A" * 22, hasher)
    assert forged.startswith("rt:") and len(forged) == 35
    assert refresh_limit_key("x" * 5000, hasher) != refresh_limit_key("y" * 5000, hasher)


def test_code_exchange_is_limited_per_authenticated_client(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_CODE_EXCHANGE="2/minute")
    oauth, _ = signed_in(app)
    other, _ = signed_in(app)  # its exchange above is its first of two
    # Strangers presenting the client id with a wrong secret do not spend its budget.
    for _ in range(3):
        assert oauth.http.post("/oauth/token", data={"grant_type": "authorization_code", "client_id": oauth.client_id, "client_secret": "wrong", "code": "c"}).status == 401
    replies = [oauth.token(grant_type="authorization_code", code="not-a-code", code_verifier="v" * 43, redirect_uri=oauth.redirect_uri) for _ in range(2)]
    # signed_in() made the first exchange of the window: one left, then 429.
    assert [reply.status for reply in replies] == [400, 429]
    assert replies[1].json()["error"] == "temporarily_unavailable"
    assert int(replies[1].headers["Retry-After"]) == MINUTE
    assert other.token(grant_type="authorization_code", code="not-a-code", code_verifier="v" * 43, redirect_uri=other.redirect_uri).status == 400


def test_introspection_and_revocation_are_limited_per_client_each_on_its_own(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_INTROSPECT="3/minute", RATE_LIMIT_REVOKE="2/minute")
    oauth, tokens = signed_in(app)
    introspect = {"client_id": oauth.client_id, "client_secret": oauth.client_secret or "", "token": tokens["access_token"]}
    replies = [oauth.http.post("/oauth/introspect", data=introspect) for _ in range(4)]
    assert [reply.status for reply in replies] == [200, 200, 200, 429]
    assert replies[3].json()["error"] == "temporarily_unavailable"
    assert replies[3].headers["Cache-Control"] == "no-store"
    revocations = [oauth.revoke("not-a-token") for _ in range(3)]
    assert [reply.status for reply in revocations] == [200, 200, 429]
    # Another client's budget is its own.
    other, other_tokens = signed_in(app)
    assert other.introspect(other_tokens["access_token"])["active"] is True


def test_failed_client_authentications_lock_the_client_id_out_for_the_window(make_app: AppFactory, clock: FixedClock) -> None:
    app = make_app(RATE_LIMIT_CLIENT_AUTH_FAILURES="3/minute")
    oauth, tokens = signed_in(app)
    other, other_tokens = signed_in(app)
    wrong = {"client_id": oauth.client_id, "client_secret": "wrong", "token": tokens["access_token"]}
    # Failures count together at every endpoint that authenticates clients.
    failures = [
        oauth.http.post("/oauth/token", data={**wrong, "grant_type": "refresh_token", "refresh_token": "r"}),
        oauth.http.post("/oauth/revoke", data=wrong),
        oauth.http.post("/oauth/introspect", data=wrong),
    ]
    assert [reply.status for reply in failures] == [401, 401, 401]
    clock.advance(20)
    # Past the limit, even the right secret is refused: it is not even looked at.
    right = oauth.http.post("/oauth/introspect", data={"client_id": oauth.client_id, "client_secret": oauth.client_secret or "", "token": tokens["access_token"]})
    assert right.status == 429
    assert right.json()["error"] == "temporarily_unavailable"
    assert right.headers["Retry-After"] == "40"
    basic = base64.b64encode(f"{oauth.client_id}:{oauth.client_secret}".encode()).decode()
    assert oauth.http.post("/oauth/introspect", data={"token": tokens["access_token"]}, headers={"Authorization": f"Basic {basic}"}).status == 429
    assert other.introspect(other_tokens["access_token"])["active"] is True
    clock.advance(40)
    assert oauth.introspect(tokens["access_token"])["active"] is True


def test_bogus_secrets_cannot_lock_out_a_public_client(make_app: AppFactory) -> None:
    app = make_app(RATE_LIMIT_CLIENT_AUTH_FAILURES="2/minute")
    oauth, tokens = signed_in(app, public=True)
    attempts = [
        oauth.http.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": oauth.client_id, "client_secret": f"guess-{n}", "refresh_token": "r"})
        for n in range(4)
    ]
    # Past the limit, secrets presented for it are no longer looked at ...
    assert [reply.status for reply in attempts] == [401, 401, 429, 429]
    # ... but the client itself, which presents none, is served.
    assert oauth.refresh(tokens["refresh_token"]).status == 200


# -- switched off, per app, and the defaults ----------------------------------------------------


def test_rate_limits_off_disables_every_limit(make_app: AppFactory) -> None:
    app = make_app(
        RATE_LIMITS="off",
        RATE_LIMIT_REGISTER="1/minute",
        RATE_LIMIT_CLIENT_AUTH_FAILURES="1/minute",
        RATE_LIMIT_INTROSPECT="1/minute",
    )
    client = app.test_client()
    assert statuses([register(client) for _ in range(3)]) == [201, 201, 201]
    oauth, tokens = signed_in(app)
    for _ in range(2):
        assert oauth.http.post("/oauth/introspect", data={"client_id": oauth.client_id, "client_secret": "wrong", "token": "t"}).status == 401
    assert [oauth.introspect(tokens["access_token"])["active"] for _ in range(2)] == [True, True]
    assert counter_rows(app) == 0


def test_one_limit_can_be_switched_off_alone(make_app: AppFactory) -> None:
    client = make_app(RATE_LIMIT_REGISTER="off").test_client()
    assert statuses([register(client) for _ in range(40)]) == [201] * 40


def test_two_apps_in_one_process_have_their_own_limits(make_app: AppFactory) -> None:
    limited = make_app("limited", RATE_LIMIT_REGISTER="1/minute").test_client()
    unlimited = make_app("unlimited", RATE_LIMITS="off").test_client()
    other = make_app("other", RATE_LIMIT_REGISTER="3/minute").test_client()
    assert statuses([register(limited) for _ in range(2)]) == [201, 429]
    assert statuses([register(unlimited) for _ in range(4)]) == [201] * 4
    assert statuses([register(other) for _ in range(4)]) == [201, 201, 201, 429]


def test_flask_limiter_adds_no_hook_to_every_request(make_app: AppFactory) -> None:
    # Its hooks apply default limits (this app has none) and cost about an introspection's own
    # work on every request; the limits run in the wrapped views only.
    app = make_app()
    hooks = [
        *app.before_request_funcs.get(None, []),
        *app.after_request_funcs.get(None, []),
        *app.teardown_request_funcs.get(None, []),
    ]
    names = [getattr(getattr(hook, "func", hook), "__qualname__", "") for hook in hooks]
    assert names and not [name for name in names if name.startswith("Limiter.")]
    # ... while the wrapped views are limited all the same.
    client = make_app("limited", RATE_LIMIT_REGISTER="1/minute").test_client()
    assert statuses([register(client) for _ in range(2)]) == [201, 429]


def test_a_whole_sign_in_fits_the_default_limits(make_app: AppFactory) -> None:
    app = make_app()
    oauth, tokens = signed_in(app)
    refreshed = oauth.refresh(tokens["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    assert oauth.introspect(refreshed.json()["access_token"])["active"] is True
    assert oauth.revoke(refreshed.json()["refresh_token"]).status == 200


# -- Redis --------------------------------------------------------------------------------------


def test_redis_backend_counts_the_same_limits(make_app: AppFactory, empty_redis: str, clock: FixedClock) -> None:  # noqa: F811
    app = make_app(RATE_LIMIT_STORAGE_URL=empty_redis, RATE_LIMIT_REGISTER="2/minute", RATE_LIMIT_INTROSPECT="2/minute")
    client = app.test_client()
    replies = [register(client, "203.0.113.7") for _ in range(3)]
    assert statuses(replies) == [201, 201, 429]
    # Redis keeps whole seconds of TTL: 59 or 60 of the window's 60 are left.
    assert 59 <= int(replies[2].headers["Retry-After"]) <= MINUTE
    assert replies[2].get_json()["error"] == "temporarily_unavailable"
    oauth, tokens = signed_in(app)
    introspect = {"client_id": oauth.client_id, "client_secret": oauth.client_secret or "", "token": tokens["access_token"]}
    assert [oauth.http.post("/oauth/introspect", data=introspect).status for _ in range(3)] == [200, 200, 429]
    # Nothing went to the database.
    assert counter_rows(app) == 0


def test_unreachable_counters_leave_requests_unlimited_and_are_logged(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    app = make_app(RATE_LIMIT_STORAGE_URL=closed, RATE_LIMIT_REGISTER="1/minute", RATE_LIMIT_INTROSPECT="1/minute")
    client = app.test_client()
    assert statuses([register(client) for _ in range(3)]) == [201, 201, 201]
    oauth, tokens = signed_in(app)
    assert [oauth.introspect(tokens["access_token"])["active"] for _ in range(2)] == [True, True]
    logged = [record for record in caplog.records if record.levelname == "ERROR"]
    assert any("Failed to rate limit" in record.getMessage() for record in logged)
    assert any("rate-limit counters unavailable" in record.getMessage() for record in logged)
