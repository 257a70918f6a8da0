"""The whole application under the default serving configuration (gunicorn.conf.py: the
buffering worker, 2 workers): slow clients and a stalled upstream API do not starve it and the
default deadlines hold meanwhile (issue 8), a one-time code stays single-use with many threads
in each worker, and chunked and 100-continue token requests work end to end."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest
import requests

from .entra_standin import EntraStandIn, entra_standin  # noqa: F401  (fixture)
from .oauth_flow import REDIRECT_URI, HttpTransport, OAuthClient
from .servers import RunningServer, running_server
from .slow_clients import RawClient
from .starvation import ScenarioResult, gunicorn_command, run_scenario
from .test_serving import run_concurrently, stalled_body, stalled_head

pytestmark = [pytest.mark.slow, pytest.mark.serial]

TOOL_CALLS = 20
TRICKLERS = 100  # of each kind: heads and bodies
PROBE_TIMEOUT = 5.0


def test_probes_keep_their_answers_while_slow_clients_and_a_stalled_upstream_hold_the_server(
    tmp_path: Path, entra_standin: EntraStandIn
) -> None:
    # The production defaults, rate limits included (the test servers turn them off otherwise).
    env = {**entra_standin.server_environment(), "LOG_LEVEL": "INFO", "RATE_LIMITS": "on"}
    with running_server(tmp_path, command=gunicorn_command([]), **env) as server:
        results: list[ScenarioResult] = []

        def scenario() -> None:
            results.append(run_scenario(
                server, entra_standin, heads=TRICKLERS, bodies=TRICKLERS, tool_calls=TOOL_CALLS,
                stall=20.0, window=12.0, probe_timeout=PROBE_TIMEOUT,
            ))

        # Meanwhile, the default deadlines under this load: a head stalled half-way is answered
        # 408 at about 10 s from its first byte, a body stalled half-way at about 30 s.
        port = int(server.base_url.rsplit(":", 1)[1])
        run_concurrently([scenario, stalled_head(port, 9, 20), stalled_body(port, 29, 40)])
    result = results[0]
    summary = result.summary()
    # The load was there for the whole window: every tool call waited on Graph (holding a
    # server thread), none had come back, and 200 tricklers stayed connected.
    assert result.stalled_at_start == TOOL_CALLS, summary
    assert result.tool_calls_done_at_end == 0, summary
    assert result.tricklers_open_at_end >= 2 * TRICKLERS - 10, summary
    # Each probe got its normal answer within the bound (None: no answer within 5 s).
    for kind, at_least in (("metadata", 10), ("refresh", 4)):
        probes = [probe for probe in result.probes if probe.kind == kind]
        assert len(probes) >= at_least, summary
        assert {probe.status for probe in probes} == {200}, summary
        assert max(probe.seconds for probe in probes) < PROBE_TIMEOUT, summary
    # The default header deadline held under this load: head tricklers got 408 at about 10 s.
    head_lifetimes = result.trickles.lifetimes["head"]
    assert head_lifetimes and all(9 <= seconds <= 20 for seconds in head_lifetimes), summary
    assert set(result.trickles.statuses) == {"HTTP/1.1 408 Request Timeout"}, summary
    assert "Request timeout from ip=127.0.0.1: headers not complete within 10s" in server.log_text()
    # The tool calls were answered in the end (Graph's timeout is a tool error, not a 5xx).
    assert {call.status for call in result.tool_calls} == {200}, summary


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("app"), command=gunicorn_command([])) as running:
        yield running


def signed_in(server: RunningServer) -> tuple[OAuthClient, str, str]:
    """A registered client and a code for it: (client, code, verifier)."""
    oauth = OAuthClient(HttpTransport(server.base_url))
    assert oauth.register(client_name="Serving").status == 201
    code, verifier = oauth.login(username="dana")
    return oauth, code, verifier


def test_one_code_redeemed_by_16_concurrent_requests_has_exactly_one_winner(server: RunningServer) -> None:
    oauth, code, verifier = signed_in(server)
    contenders = 16
    barrier = threading.Barrier(contenders)
    replies: list[requests.Response] = []
    lock = threading.Lock()

    def redeem() -> None:
        form = {
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
            "client_id": oauth.client_id, "client_secret": oauth.client_secret or "",
        }
        barrier.wait(timeout=30)
        reply = requests.post(server.base_url + "/oauth/token", data=form, timeout=30)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=redeem) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] + [400] * (contenders - 1), [reply.text for reply in replies]
    assert {reply.json()["error"] for reply in replies if reply.status_code == 400} == {"invalid_grant"}


def test_a_chunked_token_request_is_served(server: RunningServer) -> None:
    oauth, code, verifier = signed_in(server)
    form = (
        f"grant_type=authorization_code&code={code}&redirect_uri={REDIRECT_URI}&code_verifier={verifier}"
        f"&client_id={oauth.client_id}&client_secret={oauth.client_secret}"
    ).encode()
    # A generator body makes requests send Transfer-Encoding: chunked, a piece per chunk.
    pieces = (form[index:index + 40] for index in range(0, len(form), 40))
    reply = requests.post(
        server.base_url + "/oauth/token", data=pieces, timeout=30,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.request.headers.get("Transfer-Encoding") == "chunked"
    assert reply.status_code == 200, reply.text
    tokens = reply.json()
    refreshed = oauth.refresh(tokens["refresh_token"], resource=server.base_url + "/mcp")
    assert refreshed.status == 200, refreshed.text


def test_a_token_request_with_expect_100_continue_is_served(server: RunningServer) -> None:
    oauth, code, verifier = signed_in(server)
    form = (
        f"grant_type=authorization_code&code={code}&redirect_uri={REDIRECT_URI}&code_verifier={verifier}"
        f"&client_id={oauth.client_id}&client_secret={oauth.client_secret}"
    ).encode()
    with RawClient(int(server.base_url.rsplit(":", 1)[1])) as client:
        client.send(
            b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(form)
        )
        assert client.response().status == 100
        client.send(form)
        final = client.response()
        assert final.status == 200, final.body
        assert b'"access_token"' in final.body


def test_a_body_over_a_mebibyte_but_under_the_cap_is_the_applications_to_refuse(server: RunningServer) -> None:
    # Up to the worker's cap (1 MiB + 64 KiB) the application reads the body and answers with
    # its own JSON error; past the cap the worker answers 413 without reading (test_serving.py).
    reply = requests.post(
        server.base_url + "/oauth/register", data=b"{" + b" " * (1024 * 1024) + b"}", timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code in (400, 413)
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json()["error"]
